#!/usr/bin/env bash
# Creates (or confirms) the Python venv with the real fedmsg tools that fedhub's
# interoperability tests run: fedmsg 1.1.7 (fedmsg-logger, fedmsg-tail, fedmsg-check),
# moksha.hub 1.5.17 and moksha-monitor-exporter, pinned by scripts/python/constraints.txt;
# and aiosmtpd, the SMTP server that receives the notification e-mails in the delivery tests.
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
echo "$ENV_DIR"
