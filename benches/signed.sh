#!/usr/bin/env bash
# Validated signed messages per second through the whole hub to a no-op consumer, side by side
# with the Python hub validating the same signed corpus, in one run:
#
#   fedhub-signed     [security] validate_signatures on (validation_threads = 0: one per core),
#                     the signed corpus
#   fedhub-signed-1t  the same with validation_threads = 1 (what the parallel checks buy)
#   fedhub-plain      validation off, the same messages unsigned (must not regress)
#   python            the real fedmsg-hub (shared/peer kit, PEER_SIGN=1: it validates), the
#                     signed corpus
#
# Each fedhub figure is the consumed rate of a burst of SIGNED_N messages (default 200000) and
# the hub's CPU time per message (every thread, from /proc); the validation cost per message is
# the CPU per message of fedhub-signed minus that of fedhub-plain. The Python hub gets
# SIGNED_PY_N messages (default 20000; it validates a few thousand a second). The corpus is
# SIGNED_UNIQUE (default 20000) messages signed once by the kit's peerpub-vm key (RSA-2048, the
# kit's CA and empty CRL), cycled by the publisher. SIGNED_REPS (default 3) repetitions,
# interleaved; medians are quoted. Prints figures; asserts nothing.
#
#   cargo build --release -p fedhub-cli -p fedhub-bench && bash benches/signed.sh
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BENCH=$ROOT/target/release/fedhub-bench
FEDHUB=${BENCH_FEDHUB:-$ROOT/target/release/fedhub}
KIT=${PEER_KIT:-$(cd "$ROOT/.." && pwd)/shared/peer}
export PEER_ROOT=${PEER_ROOT:-/tmp/fedmsg-peer}
N=${SIGNED_N:-200000}
PY_N=${SIGNED_PY_N:-20000}
UNIQUE=${SIGNED_UNIQUE:-20000}
REPS=${SIGNED_REPS:-3}
PEER=${BENCH_PEER:-1}
OUT=${BENCH_OUT:-$ROOT/target/fedhub-bench/signed-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd) || exit 1

say() { printf '[signed %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -INT "$p" 2>/dev/null; done
  [ -n "${PY_PID:-}" ] && bash "$KIT/stop-hub.sh" "$PY_PID" 2>/dev/null
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for tool in "$BENCH" "$FEDHUB"; do
  [ -x "$tool" ] || { say "$tool is missing: cargo build --release -p fedhub-cli -p fedhub-bench"; exit 1; }
done
PKI=$KIT/pki
[ -s "$PKI/peerpub-vm.key" ] || { say "no kit PKI in $PKI (set PEER_KIT)"; exit 1; }

SIGNED=$OUT/corpus-signed-$UNIQUE.bin
PLAIN=$OUT/corpus-plain-$UNIQUE.bin
say "signing a corpus of $UNIQUE messages (peerpub-vm, RSA-2048)"
"$BENCH" corpus --count "$UNIQUE" --out "$SIGNED" --sign-key "$PKI/peerpub-vm.key" \
  --sign-cert "$PKI/peerpub-vm.crt" > "$OUT/corpus-signed.json" || exit 1
"$BENCH" corpus --count "$UNIQUE" --out "$PLAIN" > "$OUT/corpus-plain.json" || exit 1
cat "$OUT/corpus-signed.json" "$OUT/corpus-plain.json" >&2

if [ "$PEER" = 1 ]; then
  say "setting up the Python hub in $PEER_ROOT"
  bash "$KIT/setup.sh" "$PEER_ROOT" > "$OUT/peer-setup.log" 2>&1 || { say "peer setup failed (see $OUT/peer-setup.log)"; exit 1; }
fi
{ echo "commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)"; echo "nproc $(nproc)";
  echo "loadavg $(cut -d' ' -f1-3 /proc/loadavg)"; ps -eo pcpu,comm --sort=-pcpu | head -8; } > "$OUT/env.txt"

json_num() { grep -o "\"$1\": *[0-9.e+-]*" "$2" 2>/dev/null | head -1 | cut -d: -f2 | tr -d ' '; }

run_fedhub() {  # VARIANT REP: VARIANT fedhub-signed | fedhub-signed-1t | fedhub-plain
  local variant=$1 rep=$2 corpus=$SIGNED security threads=0
  case $variant in
    fedhub-plain) corpus=$PLAIN security=false ;;
    fedhub-signed) security=true ;;
    fedhub-signed-1t) security=true threads=1 ;;
  esac
  local stem="$OUT/${variant}__${rep}" in_port http_port
  read -r in_port http_port <<< "$("$BENCH" free-port --count 2 | xargs)"
  cat > "$stem.toml" <<EOF
[hub]
status_log_interval_secs = 0
[bus]
inbound = "tcp://127.0.0.1:$in_port"
[http]
listen = "127.0.0.1:$http_port"
[security]
validate_signatures = $security
ca_cert_location = "$PKI/ca.crt"
crl_location = "$PKI/crl.pem"
validation_threads = $threads
[consumers.NullConsumer]
enabled = true
EOF
  "$FEDHUB" run -c "$stem.toml" 2> "$stem.hub.log" & local hub=$!
  PIDS+=("$hub")
  if ! "$BENCH" wait-http --url "127.0.0.1:$http_port" --timeout-s 30; then
    say "fedhub did not come up (see $stem.hub.log)"; kill -INT "$hub"; return 1
  fi
  sleep 1
  "$BENCH" watch --url "127.0.0.1:$http_port" --pid "$hub" --until "$N" --poll-ms 20 --rss-ms 100 \
    --after-s 1 --out "$stem.recv.json" > /dev/null 2> "$stem.err" & local w=$!
  "$BENCH" pub --corpus "$corpus" --count "$N" --pub-connect "tcp://127.0.0.1:$in_port" --wait-sub 1 \
    --out "$stem.pub.json" > /dev/null 2>> "$stem.err"
  wait "$w"
  local state; state=$(curl -s "http://127.0.0.1:$http_port/state")
  echo "$state" > "$stem.state.json"
  kill -INT "$hub"; wait "$hub" 2>/dev/null
  local rate cpu rejected
  rate=$(json_num rate "$stem.recv.json"); cpu=$(json_num cpu_s "$stem.recv.json")
  rejected=$(grep -o '"rejected_total":[0-9]*' "$stem.state.json" | head -1 | cut -d: -f2)
  echo "$variant $rep $rate $cpu $N ${rejected:-0}" >> "$OUT/results.txt"
  say "  $variant rep=$rep: consumed ${rate:-?} msg/s, cpu ${cpu:-?} s for $N, rejected ${rejected:-?}, publisher $(json_num rate "$stem.pub.json") msg/s"
}

run_python() {  # REP
  local rep=$1 stem="$OUT/python__$1" pub_port mon_port
  read -r pub_port mon_port <<< "$("$BENCH" free-port --count 2 | xargs)"
  PY_PID=$(PEER_SIGN=1 PEER_PUB_ENDPOINT="tcp://127.0.0.1:$pub_port" PEER_MON_ENDPOINT="tcp://127.0.0.1:$mon_port" \
    PEER_RELAY_OUTBOUND='' PEER_STATS="$stem.stats.json" PEER_SLEEP=0 PEER_HUB_LOG="$stem.hub.log" \
    PEER_MON_INTERVAL=1 bash "$KIT/run-hub.sh" 2> "$stem.run-hub.err")
  [ -n "$PY_PID" ] || { say "the Python hub did not start (see $stem.run-hub.err)"; return 1; }
  sleep 1
  "$BENCH" watch --peer-stats "$stem.stats.json" --pid "$PY_PID" --until "$PY_N" --poll-ms 100 --rss-ms 100 \
    --after-s 0.5 --stall-s 10 --out "$stem.recv.json" > /dev/null 2> "$stem.err" & local w=$!
  "$BENCH" pub --corpus "$SIGNED" --count "$PY_N" --pub-bind "tcp://127.0.0.1:$pub_port" --wait-sub 1 \
    --out "$stem.pub.json" > /dev/null 2>> "$stem.err"
  wait "$w"
  bash "$KIT/stop-hub.sh" "$PY_PID" 2>> "$OUT/stop-hub.log"; PY_PID=""
  local rate cpu
  rate=$(json_num rate "$stem.recv.json"); cpu=$(json_num cpu_s "$stem.recv.json")
  echo "python $rep $rate $cpu $PY_N 0" >> "$OUT/results.txt"
  say "  python rep=$rep: consumed ${rate:-?} msg/s, cpu ${cpu:-?} s for $PY_N (validating)"
}

: > "$OUT/results.txt"
for ((rep = 1; rep <= REPS; rep++)); do
  run_fedhub fedhub-signed "$rep"
  run_fedhub fedhub-signed-1t "$rep"
  run_fedhub fedhub-plain "$rep"
  [ "$PEER" = 1 ] && run_python "$rep"
done

python3 - "$OUT/results.txt" > "$OUT/report.txt" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    parts = line.split()
    if len(parts) != 6 or parts[2] == "":
        continue
    variant, rep, rate, cpu, n, rejected = parts
    try:
        rows.setdefault(variant, []).append((float(rate), float(cpu) / float(n) * 1e6, int(rejected)))
    except ValueError:
        pass
med = lambda xs: statistics.median(xs) if xs else float("nan")
print(f"{'receiver':<18}{'median msg/s':>14}{'CPU us/msg':>12}  runs (msg/s)")
for variant in ["fedhub-signed", "fedhub-signed-1t", "fedhub-plain", "python"]:
    if variant in rows:
        r = rows[variant]
        print(f"{variant:<18}{med([x[0] for x in r]):>14.0f}{med([x[1] for x in r]):>12.1f}  "
              + " ".join(f"{x[0]:.0f}" for x in r)
              + ("" if all(x[2] == 0 for x in r) else "  REJECTED: " + " ".join(str(x[2]) for x in r)))
def ratio(a, b):
    if a in rows and b in rows:
        return med([x[0] for x in rows[a]]) / med([x[0] for x in rows[b]])
    return float("nan")
if "fedhub-signed" in rows and "fedhub-plain" in rows:
    cost = med([x[1] for x in rows["fedhub-signed"]]) - med([x[1] for x in rows["fedhub-plain"]])
    print(f"validation cost: {cost:.1f} CPU us per message (signed minus plain)")
print(f"fedhub-signed / python: {ratio('fedhub-signed', 'python'):.1f}x (target >= 30x, >= 30000 msg/s)")
print(f"fedhub-signed / fedhub-signed-1t: {ratio('fedhub-signed', 'fedhub-signed-1t'):.2f}")
print(f"fedhub-signed / fedhub-plain: {ratio('fedhub-signed', 'fedhub-plain'):.2f}")
PY
cat "$OUT/report.txt"
say "results in $OUT"
