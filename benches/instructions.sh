#!/usr/bin/env bash
# benches/instructions.sh -- CPU instructions per message through the whole hub, counted by
# valgrind's callgrind: a figure that does not depend on what else the machine is doing, for
# comparing two fedhub binaries on a shared machine where timings are noisy.
#
#   bash benches/instructions.sh [BINARY...]     (default: target/release/fedhub)
#
# For each binary: a hub (NullConsumer, loopback tcp, no monitoring socket) under callgrind is
# fed N pre-encoded messages (INSTR_N, default 20000) by fedhub-bench pub, and stopped once
# /state counts them handled; the same is done with N/4 messages. Instructions per message =
# (Ir with N - Ir with N/4) / (3N/4), over every thread of the hub: startup, shutdown and the
# waits cancel out. Prints one line per binary.
# Needs valgrind and a release build of fedhub-bench.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
N=${INSTR_N:-20000}
BENCH=$ROOT/target/release/fedhub-bench
OUT=$(mktemp -d /tmp/fedhub-instructions.XXXXXX)
trap 'rm -rf "$OUT"' EXIT
command -v valgrind >/dev/null || { echo "valgrind is missing: apt-get install valgrind" >&2; exit 2; }
[ -x "$BENCH" ] || { echo "$BENCH is missing: cargo build --release -p fedhub-bench" >&2; exit 2; }
[ $# -gt 0 ] || set -- "$ROOT/target/release/fedhub"
"$BENCH" corpus --count "$N" --out "$OUT/corpus" > /dev/null

# RUN BINARY COUNT -> prints the instructions callgrind collected
run() {
  local binary=$1 count=$2 in_port http_port pid
  read -r in_port http_port <<< "$("$BENCH" free-port --count 2 | xargs)"
  cat > "$OUT/hub.toml" <<EOF
[hub]
status_log_interval_secs = 0
[bus]
inbound = "tcp://127.0.0.1:$in_port"
[http]
listen = "127.0.0.1:$http_port"
[consumers.NullConsumer]
enabled = true
EOF
  valgrind --tool=callgrind --callgrind-out-file="$OUT/cg.%p" \
    "$binary" run -c "$OUT/hub.toml" 2> "$OUT/valgrind.log" & pid=$!
  "$BENCH" wait-http --url "127.0.0.1:$http_port" --timeout-s 120 > /dev/null || { kill "$pid"; return 1; }
  if [ "$count" -gt 0 ]; then
    "$BENCH" pub --corpus "$OUT/corpus" --count "$count" --pub-connect "tcp://127.0.0.1:$in_port" \
      --wait-sub 1 > /dev/null 2>&1
    until curl -s "http://127.0.0.1:$http_port/state" | grep -q "\"handled_total\":$count[,}]"; do
      sleep 0.5
    done
  fi
  # Until it exits: a signal that arrives while it is still starting may be missed.
  while kill -INT "$pid" 2>/dev/null; do sleep 2; done
  wait "$pid"
  grep -o 'Collected : [0-9]*' "$OUT/valgrind.log" | awk '{print $3}'
  rm -f "$OUT"/cg.*
}

LOW=$((N / 4))
for binary in "$@"; do
  low=$(run "$binary" "$LOW") && high=$(run "$binary" "$N") || { echo "$binary: the run failed" >&2; continue; }
  awk -v b="$binary" -v n="$N" -v m="$LOW" -v l="$low" -v h="$high" \
    'BEGIN { printf "%s: %.0f instructions per message (%.4g with %d messages, %.4g with %d)\n", b, (h - l) / (n - m), h, n, l, m }'
done
