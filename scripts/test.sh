#!/usr/bin/env bash
# Runs every check and test of fedhub, installing what they need when it is missing:
# Debian packages (as root), the pinned Python fedmsg tools in a venv under target/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# command or file that proves a package is there -> Debian package
declare -A needs=(
  [g++]=g++
  [python3]=python3
  [collectd]=collectd-core
  [/usr/sbin/nagios4]=nagios4-core
  [/usr/lib/nagios/plugins/check_dummy]=monitoring-plugins-basic
  [promtool]=prometheus
  [curl]=curl
  [openssl]=openssl
  ['/usr/lib/postgresql/*/bin/initdb']=postgresql
  [/usr/bin/chromium]=chromium
)
missing=()
for probe in "${!needs[@]}"; do
  if [[ $probe == *'*'* ]]; then compgen -G "$probe" >/dev/null || missing+=("${needs[$probe]}")
  elif [[ $probe == /* ]]; then [[ -e $probe ]] || missing+=("${needs[$probe]}")
  else command -v "$probe" >/dev/null || missing+=("${needs[$probe]}"); fi
done
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
if ((${#missing[@]})); then
  echo "[test] installing ${missing[*]}" >&2
  # Packaged daemons (prometheus, collectd, postgresql) must not start on install: the tests run their own.
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [[ ! -e $policy ]]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; created_policy=1; fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  ((created_policy)) && rm -f "$policy"
fi

bash scripts/python-env.sh >/dev/null

echo "[test] cargo fmt --check" >&2
cargo fmt --all -- --check
echo "[test] cargo clippy" >&2
cargo clippy --workspace --all-targets -- -D warnings
echo "[test] cargo build" >&2
cargo build --workspace --all-targets
echo "[test] cargo test" >&2
cargo test --workspace --no-fail-fast
