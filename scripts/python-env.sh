#!/usr/bin/env bash
# Creates (or confirms) the Python venv with the real fedmsg tools that fedhub's
# interoperability tests run: fedmsg 1.1.7 (fedmsg-logger, fedmsg-tail, fedmsg-check),
# moksha.hub 1.5.17 and moksha-monitor-exporter, pinned by scripts/python/constraints.txt;
# and aiosmtpd, the SMTP server that receives the notification e-mails in the delivery tests.
# Also fedbadges 1.0.2 with its imports for Python 2.7 (PY27_PKGS below) in
# $ENV_DIR/fedbadges-py27, run by bin/fedbadges-py27, when a Python 2.7 is found ($PYTHON2,
# python2.7 on PATH, or pyenv's): consumers/badges/tests/upstream.rs compares its decisions
# with fedhub's, and fails naming this script when it is missing.
#
# The venv lives at $FEDHUB_PYTHON_ENV, default target/python-env. A second run with unchanged
# pins only re-checks the imports (about a second). Prints the venv path on stdout.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
ENV_DIR=${FEDHUB_PYTHON_ENV:-$ROOT/target/python-env}
PY=${PYTHON:-python3}
VPY=$ENV_DIR/bin/python
REQ=$ROOT/scripts/python/requirements.txt
CONS=$ROOT/scripts/python/constraints.txt
# Installed after the fedmsg stack, within the same constraints.
EXTRA=(aiosmtpd==1.4.6)
log() { echo "[python-env] $*" >&2; }

command -v "$PY" >/dev/null || { log "no $PY on PATH: install python3 (3.11 on Debian 12)"; exit 1; }

if ! { [ -x "$VPY" ] && "$VPY" -m pip --version >/dev/null 2>&1; }; then
  rm -rf "$ENV_DIR"
  mkdir -p "$(dirname "$ENV_DIR")"
  if ! "$PY" -m venv "$ENV_DIR" >/dev/null 2>&1; then
    rm -rf "$ENV_DIR"
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      log "python3 -m venv failed (Debian ships venv separately); installing python3-venv"
      apt-get update -qq >&2
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >&2
      "$PY" -m venv "$ENV_DIR"
    else
      log "python3 -m venv failed: run 'apt-get install python3-venv' as root, then retry"
      exit 1
    fi
  fi
  log "created $ENV_DIR ($("$VPY" -V 2>&1))"
fi

CHECK='import fedmsg, fedmsg.crypto.x509_ng as x, moksha.hub, zmq, pkg_resources
import moksha_monitor_exporter.moksha_monitor_exporter
import aiosmtpd.controller, aiosmtpd.handlers
assert x._cryptography, "fedmsg x509 crypto failed to import"'
STAMP=$ENV_DIR/.fedhub-stamp
HASH=$(cat "$REQ" "$CONS" <("$VPY" -V 2>&1) <(printf '%s\n' "${EXTRA[@]}") | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$HASH" ] && "$VPY" -W ignore -c "$CHECK" 2>/dev/null; then
  log "up to date: $ENV_DIR"
else
  rm -f "$STAMP"
  export PIP_DISABLE_PIP_VERSION_CHECK=1
  log "installing the pinned fedmsg stack (a minute or two on a fresh machine)"
  # setuptools and wheel first: moksha needs pkg_resources at run time, and
  # moksha-monitor-exporter's sdist builds without isolation against them.
  "$VPY" -m pip install -q -c "$CONS" 'setuptools<81' wheel >&2
  "$VPY" -m pip install -q --no-build-isolation -c "$CONS" -r "$REQ" >&2
  "$VPY" -m pip install -q -c "$CONS" "${EXTRA[@]}" >&2
  "$VPY" -W ignore -c "$CHECK" >&2
  echo "$HASH" >"$STAMP"
  log "ready: $ENV_DIR"
fi
# fedbadges 1.0.2 (the last fedmsg-era release: the rule format fedhub reads) is Python 2 code;
# these are it and its imports, and theirs, as pip 19 resolved them under 2.7.18, installed
# with --no-deps. fedmsg_meta_fedora_infrastructure (nick2fas/email2fas, and msg2usernames for
# rules without a recipient) is left out: it needs gssapi, which needs the Kerberos headers.
PY27_PKGS=(
  fedbadges==1.0.2
  fedmsg==1.1.2
  datanommer.models==0.9.1
  python-fedora==1.1.1
  transaction==2.4.0
  PyYAML==5.4.1
  Mako==1.1.6
  MarkupSafe==1.1.1
  alembic==1.6.5
  arrow==0.17.0
  backports.functools-lru-cache==1.6.6
  beautifulsoup4==4.9.3
  certifi==2021.10.8
  chardet==4.0.0
  configparser==4.0.2
  contextlib2==0.6.0.post1
  idna==2.10
  importlib-metadata==2.1.3
  kitchen==1.2.6
  lockfile==0.12.2
  munch==2.5.0
  openidc-client==0.6.0
  pathlib2==2.3.7.post1
  python-dateutil==3.0.0
  python-editor==1.0.4
  pyzmq==19.0.2
  requests==2.27.1
  scandir==1.10.0
  six==1.17.0
  soupsieve==1.9.6
  SQLAlchemy==1.4.54
  typing==3.10.0.0
  urllib3==1.26.20
  zipp==1.2.0
  zope.interface==5.5.2
)
PY27_DIR=$ENV_DIR/fedbadges-py27
PY27_RUN=$ENV_DIR/bin/fedbadges-py27
find_python2() {
  local c
  for c in "${PYTHON2:-}" python2.7 "$(pyenv root 2>/dev/null)"/versions/2.7*/bin/python2.7; do
    [ -n "$c" ] || continue
    if "$c" -c 'import sys, ssl; assert sys.version_info[:2] == (2, 7)' >/dev/null 2>&1; then
      command -v "$c" || echo "$c"
      return 0
    fi
  done
  return 1
}
if PY2=$(find_python2); then
  PY27_HASH=$(cat <(printf '%s\n' "${PY27_PKGS[@]}") <("$PY2" -V 2>&1) | sha256sum | cut -d' ' -f1)
  PY27_CHECK='import site, os; site.addsitedir(os.environ["FEDBADGES_PY27_SITE"]); import fedbadges.rules, yaml'
  # fedmsg.config reads a config at import: the check gets one of its own.
  py27_check() {
    mkdir -p "$PY27_DIR/.check/fedmsg.d"
    echo "config = dict(endpoints={}, sign_messages=False, validate_signatures=False)" \
      >"$PY27_DIR/.check/fedmsg.d/base.py"
    (cd "$PY27_DIR/.check" && HOME=$PY27_DIR/.check FEDBADGES_PY27_SITE=$PY27_DIR \
      "$PY2" -W ignore -c "$PY27_CHECK" "$@")
  }
  if [ -f "$PY27_DIR/.fedhub-stamp" ] && [ "$(cat "$PY27_DIR/.fedhub-stamp")" = "$PY27_HASH" ] &&
    py27_check >/dev/null 2>&1; then
    log "up to date: $PY27_DIR"
  else
    log "installing fedbadges 1.0.2 for Python 2.7 ($PY2) into $PY27_DIR"
    rm -rf "$PY27_DIR"
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$PY2" -m pip install -q --no-deps --target "$PY27_DIR" \
      "${PY27_PKGS[@]}" >&2
    py27_check >&2
    echo "$PY27_HASH" >"$PY27_DIR/.fedhub-stamp"
  fi
  printf '#!/usr/bin/env bash\n# Python 2.7 with fedbadges 1.0.2 and its imports (made by scripts/python-env.sh).\nexport FEDBADGES_PY27_SITE=%s\nexec %s "$@"\n' \
    "$PY27_DIR" "$PY2" >"$PY27_RUN"
  chmod +x "$PY27_RUN"
else
  log "no Python 2.7 found (set PYTHON2, or: pyenv install 2.7.18): fedbadges 1.0.2 not installed;"
  log "consumers/badges/tests/upstream.rs needs it and fails without it"
fi
echo "$ENV_DIR"
