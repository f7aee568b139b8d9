#!/usr/bin/env bash
# Runs every check and test of fedhub, installing what they need when it is missing:
# Debian packages (as root), the pinned Python fedmsg tools in a venv under target/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

missing=()
command -v g++ >/dev/null || missing+=(g++)
command -v python3 >/dev/null || missing+=(python3)
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
if ((${#missing[@]})); then
  echo "[test] installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
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
