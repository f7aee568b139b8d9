#!/usr/bin/env bash
# benches/run.sh -- fedhub's benchmarks, side by side with the physical limit (a bare ZeroMQ
# SUB) and the real Python fedmsg-hub, in ONE run. Prints a table and a JSON summary.
#
#   1. Throughput with a no-op consumer, 100k burst and a big burst (BENCH_BIG, default 1M):
#      bare SUB (count only), bare SUB + serde_json::Value, bare SUB + fedhub's envelope decode,
#      fedhub (release, NullConsumer, loopback tcp; rate from /state handled_total polled every
#      20 ms, first change to reaching N) and the Python hub (100k only; shared/peer kit).
#      Every receiver is fed by the same Rust publisher (pre-encoded corpus from
#      fedhub::demo::Generator, SNDHWM 0, XPUB waiting for the subscription); its send rate is
#      printed beside the consumed rate.
#   2. Loss on the 100k bursts with default settings (sent - handled).
#   3. RSS: idle, peak during a 100k backlog behind a slow consumer (NullConsumer sleep_ms
#      BENCH_RSS_SLEEP_MS, default 0.05), and after the backlog drained (/proc every 100 ms).
#   4. Reported backlog vs true backlog (sent - handled at the same instant) under a 1 ms/message
#      consumer (fedhub x REPS, Python hub once); and once with the no-op consumer and the big
#      burst, where messages can wait inside libzmq.
#   5. Monitoring cost: throughput of the big burst with the monitoring socket (1 s)
#      read by a SUB and /metrics + /state scraped every second, against the same hub without.
#   6. /state and /metrics latency (p50/p99) while the hub absorbs a 100k burst (no-op and slow
#      consumer), and on the idle hub.
#   7. End-to-end latency, paced (scenario `latency`): the Rust publisher sends at a fixed rate
#      (open loop, sleep then spin to each due time) and stamps every body's msg with sent_ns
#      (wall clock, ns) right before sending; the consumer records now - sent_ns first thing in
#      consume: p50/p99/max. fedhub (`fedhub-bench latency-hub`: the library of this tree, one
#      LatencyConsumer) at 5k and 50k msg/s, the Python hub (benches/python's LatencyConsumer,
#      installed into the kit's venv) at 5k msg/s. The first BENCH_LAT_WARMUP_S of every run are
#      discarded, then BENCH_LAT_SECS are recorded.
# Repetitions are interleaved (rep 1 of every receiver, then rep 2, ...), so slow phases of the
# shared machine hit all receivers alike. A background sampler records what else was running.
#
# Environment:
#   BENCH_QUICK=1          one repetition of everything (about 2 minutes)
#   BENCH_REPS=N           repetitions (default 3; 1 with BENCH_QUICK)
#   BENCH_BIG=N            big burst for the Rust receivers (default 1000000)
#   BENCH_PEER=0           skip the Python hub
#   BENCH_RSS_SLEEP_MS=X   slow consumer's sleep per message in scenario 3 (default 0.05)
#   BENCH_BACKLOG_N=N      burst for scenario 4 (default 5000)
#   BENCH_OUT=DIR          run directory (default target/fedhub-bench/<time>)
#   BENCH_NO_BUILD=1       do not run cargo build
#   BENCH_FEDHUB=PATH      the fedhub binary to measure (default target/release/fedhub)
#   BENCH_FEDHUB_BASE=PATH a second fedhub binary (an older build, say) measured in the same
#                          run as receiver fedhub-base, interleaved with fedhub in scenario 1:
#                          the report gives fedhub/fedhub-base for throughput and CPU per message
#   BENCH_DATA_NICE=N      [hub] data_threads_nice for every fedhub started (default: the hub's)
#   BENCH_SCENARIOS=LIST   which of tput,rss,backlog,monitoring,latency to run (default all)
#   BENCH_MON_REPS=N       repetitions of each variant in scenario 5 (default 5; 2 with BENCH_QUICK)
#   BENCH_PROBE_MS=X       time between probe rounds in scenario 6, ms (default 2)
#   BENCH_RECEIVERS=LIST   which of bare,parse,envelope,fedhub,python scenario 1 runs (default all)
#   BENCH_LAT_RATES=LIST   scenario 7: rates (msg/s) fedhub is measured at (default 5000,50000)
#   BENCH_LAT_PY_RATES=LIST  scenario 7: those of them the Python hub is measured at too (default 5000;
#                          empty: none)
#   BENCH_LAT_SECS=S       scenario 7: seconds recorded per run, after the warm-up (default 5)
#   BENCH_LAT_WARMUP_S=S   scenario 7: seconds of messages discarded first (default 1)
#   BENCH_LAT_SPIN_US=US   scenario 7: the publisher sleeps until this long before each due time,
#                          then spins (default 100)
#   PEER_ROOT              the Python kit's install dir (default /tmp/fedmsg-peer)
#   PEER_KIT               the kit (default ../shared/peer next to the repository)
# Every process this script starts is stopped by its PID on exit (also on Ctrl-C).
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
QUICK=${BENCH_QUICK:-0}
if [ "$QUICK" = 1 ]; then REPS=${BENCH_REPS:-1}; else REPS=${BENCH_REPS:-3}; fi
SMALL=100000
BIG=${BENCH_BIG:-1000000}
PEER=${BENCH_PEER:-1}
RSS_SLEEP_MS=${BENCH_RSS_SLEEP_MS:-0.05}
BACKLOG_N=${BENCH_BACKLOG_N:-5000}
if [ "$QUICK" = 1 ]; then MON_REPS=${BENCH_MON_REPS:-2}; else MON_REPS=${BENCH_MON_REPS:-5}; fi
PROBE_MS=${BENCH_PROBE_MS:-2}
OUT=${BENCH_OUT:-$ROOT/target/fedhub-bench/$(date +%Y%m%d-%H%M%S)}
KIT=${PEER_KIT:-$(cd "$ROOT/.." && pwd)/shared/peer}
export PEER_ROOT=${PEER_ROOT:-/tmp/fedmsg-peer}
FEDHUB=${BENCH_FEDHUB:-$ROOT/target/release/fedhub}
FEDHUB_BASE=${BENCH_FEDHUB_BASE:-}
SCENARIOS=",${BENCH_SCENARIOS:-tput,rss,backlog,monitoring,latency},"
RECEIVERS=",${BENCH_RECEIVERS:-bare,parse,envelope,fedhub,python},"
LAT_RATES=${BENCH_LAT_RATES:-5000,50000}
LAT_PY_RATES=",${BENCH_LAT_PY_RATES-5000},"
LAT_SECS=${BENCH_LAT_SECS:-5}
LAT_WARMUP_S=${BENCH_LAT_WARMUP_S:-1}
LAT_SPIN_US=${BENCH_LAT_SPIN_US:-100}
want() { [[ "$1" == *",$2,"* ]]; }
[ "$PEER" = 1 ] && ! want "$RECEIVERS" python && ! want "$SCENARIOS" backlog \
  && { ! want "$SCENARIOS" latency || [ "$LAT_PY_RATES" = ",," ]; } && PEER=0
BENCH=$ROOT/target/release/fedhub-bench
T_START=$(date +%s)
export RUST_LIB_BACKTRACE=0   # the tools' errors are one line; no backtraces

mkdir -p "$OUT" || exit 1
OUT=$(cd "$OUT" && pwd)   # absolute: the Python hub's scripts run from elsewhere
FEDHUB=$(cd "$(dirname "$FEDHUB")" && pwd)/$(basename "$FEDHUB")
if [ -n "$FEDHUB_BASE" ]; then
  FEDHUB_BASE=$(cd "$(dirname "$FEDHUB_BASE")" && pwd)/$(basename "$FEDHUB_BASE")
  [ -x "$FEDHUB_BASE" ] || { echo "BENCH_FEDHUB_BASE=$FEDHUB_BASE is not an executable" >&2; exit 2; }
fi
say() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ---- process bookkeeping: everything started here is stopped by PID ----
PIDS=()        # plain processes (tools, fedhub)
PY_HUBS=()     # Python hubs (stopped with the kit's stop-hub.sh)
SYSMON=""
forget() { local p=$1 i; for i in "${!PIDS[@]}"; do [ "${PIDS[$i]}" = "$p" ] && unset 'PIDS[i]'; done; }
stop_pid() {  # PID [grace seconds]: SIGINT, then SIGKILL
  local p=$1 grace=${2:-15} i
  kill -0 "$p" 2>/dev/null || { wait "$p" 2>/dev/null; forget "$p"; return 0; }
  kill -INT "$p" 2>/dev/null
  for ((i = 0; i < grace * 10; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$p" 2>/dev/null; then say "pid $p did not stop on SIGINT, killing"; kill -KILL "$p" 2>/dev/null; fi
  wait "$p" 2>/dev/null
  forget "$p"
}
cleanup() {
  local p
  for p in "${PIDS[@]}"; do stop_pid "$p" 5; done
  PIDS=()
  for p in "${PY_HUBS[@]}"; do bash "$KIT/stop-hub.sh" "$p" 2>/dev/null; done
  PY_HUBS=()
  if [ -n "$SYSMON" ]; then kill "$SYSMON" 2>/dev/null; wait "$SYSMON" 2>/dev/null; SYSMON=""; fi
}
trap 'say "interrupted: stopping everything this run started"; cleanup; exit 130' INT TERM
trap cleanup EXIT

# ---- phases, for the "what else was running" table ----
PHASE="" PHASE_T0=""
phase() {
  [ -n "$PHASE" ] && printf '%s\t%s\t%s\n' "$PHASE" "$PHASE_T0" "$(date +%s.%N)" >> "$OUT/phases.tsv"
  PHASE=${1:-} PHASE_T0=$(date +%s.%N)
  [ -n "$PHASE" ] && say "== $PHASE"
}

free_ports() { "$BENCH" free-port --count "$1" | xargs; }

# ---- build ----
if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
  say "cargo build --release -p fedhub-cli -p fedhub-bench"
  (cd "$ROOT" && cargo build --release -p fedhub-cli -p fedhub-bench) >&2 || { say "build failed"; exit 1; }
fi
[ -x "$FEDHUB" ] && [ -x "$BENCH" ] || { say "missing $FEDHUB or $BENCH"; exit 1; }

# ---- the record: machine, load, what else runs ----
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (dirty)')"
  echo "kernel: $(uname -r); cpus: $(nproc); mem: $(free -m | awk '/Mem:/{print $2" MB"}')"
  echo "rustc: $(rustc --version 2>/dev/null)"
  echo "fedhub binary: $FEDHUB ($(stat -c %y "$FEDHUB" 2>/dev/null | cut -d. -f1))"
  echo "loadavg at start: $(cat /proc/loadavg)"
  echo "busiest processes at start:"
  ps -eo pid,pcpu,etimes,comm --sort=-pcpu | head -8
} > "$OUT/env.txt"
"$BENCH" sysmon --root $$ --marker "$PEER_ROOT" --out "$OUT/sysmon.csv" 2>/dev/null & SYSMON=$!

cat > "$OUT/meta.json" <<EOF
{"reps": $REPS, "quick": $([ "$QUICK" = 1 ] && echo true || echo false), "small": $SMALL, "big": $BIG,
 "rss_sleep_ms": $RSS_SLEEP_MS, "backlog_n": $BACKLOG_N, "peer": $([ "$PEER" = 1 ] && echo true || echo false),
 "lat_secs": $LAT_SECS, "lat_warmup_s": $LAT_WARMUP_S, "lat_spin_us": $LAT_SPIN_US,
 "nproc": $(nproc), "loadavg_start": "$(cut -d' ' -f1-3 /proc/loadavg)"}
EOF

# ---- corpus: encoded once (a few seconds per million), reused by every publisher run ----
CORPUS=$ROOT/target/fedhub-bench/corpus-$BIG.bin
mkdir -p "$(dirname "$CORPUS")" || exit 1
if [ ! -s "$CORPUS" ] || [ "$BENCH" -nt "$CORPUS" ]; then
  say "generating a corpus of $BIG messages -> $CORPUS"
  # Written aside and renamed: a concurrent run reading the old file never sees half a file.
  "$BENCH" corpus --count "$BIG" --out "$CORPUS.tmp.$$" >&2 && mv -f "$CORPUS.tmp.$$" "$CORPUS" || exit 1
fi

# A 100k corpus for the latency runs, so the publisher's start-up (loading the file) is short.
CORPUS_SMALL=$ROOT/target/fedhub-bench/corpus-$SMALL.bin
if { want "$SCENARIOS" monitoring || want "$SCENARIOS" latency; } && { [ ! -s "$CORPUS_SMALL" ] || [ "$BENCH" -nt "$CORPUS_SMALL" ]; }; then
  "$BENCH" corpus --count "$SMALL" --out "$CORPUS_SMALL.tmp.$$" >&2 && mv -f "$CORPUS_SMALL.tmp.$$" "$CORPUS_SMALL" || exit 1
fi

# ---- the Python hub's install (fast when already there) ----
if [ "$PEER" = 1 ]; then
  if [ ! -x "$KIT/run-hub.sh" ]; then say "no Python kit at $KIT (set PEER_KIT or BENCH_PEER=0)"; exit 1; fi
  say "setting up the Python hub in $PEER_ROOT"
  bash "$KIT/setup.sh" "$PEER_ROOT" > "$OUT/peer-setup.log" 2>&1 || { say "peer setup failed (see $OUT/peer-setup.log)"; exit 1; }
fi

# ---- scenario 7's Python consumer, installed into the kit's venv (skipped when unchanged) ----
# benches/python/fedhub_bench_latency (a moksha.consumer entry point) and its config file in
# $PEER_ROOT/run/fedmsg.d, which enables it only when FEDHUB_LATENCY_OUT is set at hub start.
install_py_latency() {
  local src=$HERE/python vpy=$PEER_ROOT/venv/bin/python stamp=$PEER_ROOT/venv/.fedhub-bench-latency-stamp hash
  cmp -s "$src/fedmsg.d/fedhub_bench_latency.py" "$PEER_ROOT/run/fedmsg.d/fedhub_bench_latency.py" \
    || cp "$src/fedmsg.d/fedhub_bench_latency.py" "$PEER_ROOT/run/fedmsg.d/" || return 1
  hash=$( { cat "$src/fedhub_bench_latency/setup.py" "$src/fedhub_bench_latency/fedhub_bench_latency/"*.py;
            "$vpy" -V 2>&1; } | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" = "$hash" ] && "$vpy" -W ignore -c 'import fedhub_bench_latency' 2>/dev/null; then
    echo "fedhub_bench_latency up to date"; return 0
  fi
  # Built from a copy, so no build/ or egg-info lands in the repository.
  rm -rf "$PEER_ROOT/src/fedhub-bench-latency"
  cp -r "$src/fedhub_bench_latency" "$PEER_ROOT/src/fedhub-bench-latency" || return 1
  PIP_DISABLE_PIP_VERSION_CHECK=1 "$vpy" -m pip install -q --no-deps --no-build-isolation --force-reinstall \
    "$PEER_ROOT/src/fedhub-bench-latency" || return 1
  "$vpy" -W ignore -c 'import fedhub_bench_latency' && echo "$hash" > "$stamp"
}
if [ "$PEER" = 1 ] && want "$SCENARIOS" latency && [ "$LAT_PY_RATES" != ",," ]; then
  say "installing the Python latency consumer into $PEER_ROOT/venv"
  install_py_latency >> "$OUT/peer-setup.log" 2>&1 || { say "installing it failed (see $OUT/peer-setup.log)"; exit 1; }
fi

# ---- fedhub ----
HUB_PID="" HUB_HTTP="" HUB_IN=""
HUB_MON=""
start_fedhub() {  # NAME SLEEP_MS [monitoring: 1 = socket on, every 1 s] [BINARY]
  local name=$1 sleep_ms=$2 monitoring=${3:-0} binary=${4:-$FEDHUB} in_port http_port mon_port
  read -r in_port http_port mon_port <<< "$(free_ports 3)"
  HUB_IN="tcp://127.0.0.1:$in_port" HUB_HTTP="127.0.0.1:$http_port" HUB_MON=""
  [ "$monitoring" = 1 ] && HUB_MON="tcp://127.0.0.1:$mon_port"
  cat > "$OUT/$name.toml" <<EOF
[hub]
status_log_interval_secs = 0
$([ -n "${BENCH_DATA_NICE:-}" ] && echo "data_threads_nice = $BENCH_DATA_NICE")
[bus]
inbound = "$HUB_IN"
[http]
listen = "$HUB_HTTP"
$([ -n "$HUB_MON" ] && printf '[monitoring]\nsocket = "%s"\ninterval_secs = 1\n' "$HUB_MON")
[consumers.NullConsumer]
enabled = true
sleep_ms = $sleep_ms
EOF
  "$binary" run -c "$OUT/$name.toml" 2> "$OUT/$name.hub.log" & HUB_PID=$!
  PIDS+=("$HUB_PID")
  if ! "$BENCH" wait-http --url "$HUB_HTTP" --timeout-s 30; then
    say "fedhub did not come up (see $OUT/$name.hub.log)"; stop_pid "$HUB_PID"; HUB_PID=""; return 1
  fi
}
stop_fedhub() { [ -n "$HUB_PID" ] && stop_pid "$HUB_PID" 20; HUB_PID=""; }

publish() { publish_corpus "$CORPUS" "$@"; }
publish_corpus() {  # CORPUS FILE N ARGS... (publisher in the foreground, killable by the trap)
  local corpus=$1 file=$2 n=$3; shift 3
  "$BENCH" pub --corpus "$corpus" --count "$n" --out "$file" "$@" > /dev/null 2> "${file%.json}.err" & local p=$!
  PIDS+=("$p"); wait "$p"; local rc=$?; forget "$p"; return $rc
}

run_bare() {  # MODE N REP
  local mode=$1 n=$2 rep=$3 port variant
  case $mode in count) variant=bare;; parse) variant=parse;; envelope) variant=envelope;; esac
  local stem="$OUT/tput__${variant}__${n}__${rep}"
  port=$(free_ports 1)
  "$BENCH" sub --bind "tcp://127.0.0.1:$port" --count "$n" --mode "$mode" --out "$stem.recv.json" > /dev/null 2> "$stem.err" & local s=$!
  PIDS+=("$s")
  publish "$stem.pub.json" "$n" --pub-connect "tcp://127.0.0.1:$port" --wait-sub 1
  wait "$s"; forget "$s"
  say "  $variant n=$n rep=$rep: $(summary_line "$stem")"
}

run_fedhub() {  # N REP [VARIANT BINARY]: VARIANT fedhub (default) or fedhub-base
  local n=$1 rep=$2 variant=${3:-fedhub} binary=${4:-$FEDHUB}
  local stem="$OUT/tput__${variant}__${n}__${rep}"
  start_fedhub "tput-$variant-$n-$rep" 0 0 "$binary" || return 1
  sleep 1   # idle: the watcher's first RSS sample is the idle figure
  "$BENCH" watch --url "$HUB_HTTP" --pid "$HUB_PID" --until "$n" --poll-ms 20 --rss-ms 100 --after-s 1 \
    --series "$stem.series.csv" --out "$stem.recv.json" > /dev/null 2> "$stem.err" & local w=$!
  PIDS+=("$w")
  publish "$stem.pub.json" "$n" --pub-connect "$HUB_IN" --wait-sub 1
  wait "$w"; forget "$w"
  stop_fedhub
  say "  $variant n=$n rep=$rep: $(summary_line "$stem")"
}

PY_PID=""
start_python() {  # NAME SLEEP_S -> PY_PID, PY_PUB, PY_STATS
  local name=$1 sleep_s=$2 pub_port mon_port
  read -r pub_port mon_port <<< "$(free_ports 2)"
  PY_PUB="tcp://127.0.0.1:$pub_port" PY_STATS="$OUT/$name.stats.json"
  PY_PID=$(PEER_PUB_ENDPOINT="$PY_PUB" PEER_MON_ENDPOINT="tcp://127.0.0.1:$mon_port" PEER_RELAY_OUTBOUND='' \
    PEER_STATS="$PY_STATS" PEER_SLEEP="$sleep_s" PEER_HUB_LOG="$OUT/$name.hub.log" PEER_MON_INTERVAL=1 \
    bash "$KIT/run-hub.sh" 2> "$OUT/$name.run-hub.err")
  if [ -z "$PY_PID" ]; then say "the Python hub did not start (see $OUT/$name.run-hub.err)"; return 1; fi
  PY_HUBS+=("$PY_PID")
}
stop_python() {
  [ -n "$PY_PID" ] || return 0
  bash "$KIT/stop-hub.sh" "$PY_PID" 2>> "$OUT/stop-hub.log"
  local i; for i in "${!PY_HUBS[@]}"; do [ "${PY_HUBS[$i]}" = "$PY_PID" ] && unset 'PY_HUBS[i]'; done
  PY_PID=""
}

run_python() {  # N REP
  local n=$1 rep=$2 stem="$OUT/tput__python__${1}__${2}"
  start_python "tput-python-$n-$rep" 0 || return 1
  sleep 1
  "$BENCH" watch --peer-stats "$PY_STATS" --pid "$PY_PID" --until "$n" --poll-ms 100 --rss-ms 100 --after-s 0.5 \
    --stall-s 6 --series "$stem.series.csv" --out "$stem.recv.json" > /dev/null 2> "$stem.err" & local w=$!
  PIDS+=("$w")
  publish "$stem.pub.json" "$n" --pub-bind "$PY_PUB" --wait-sub 1
  wait "$w"; forget "$w"
  stop_python
  say "  python n=$n rep=$rep: $(summary_line "$stem")"
}

summary_line() {  # STEM: "pub R msg/s, consumed R msg/s, got N"
  local p r
  p=$(grep -o '"rate":[0-9.]*' "$1.pub.json" 2>/dev/null | head -1 | cut -d: -f2)
  r=$(grep -o '"rate":[0-9.]*' "$1.recv.json" 2>/dev/null | head -1 | cut -d: -f2)
  local got; got=$(grep -o '"\(handled\|received\)":[0-9]*' "$1.recv.json" 2>/dev/null | head -1 | cut -d: -f2)
  echo "publisher ${p:-?} msg/s, consumed ${r:-?} msg/s, got ${got:-?}"
}

# ---- 1 + 2: throughput and loss ----
throughput() {  # N REP: every selected receiver once
  want "$RECEIVERS" bare && run_bare count "$1" "$2"
  want "$RECEIVERS" parse && run_bare parse "$1" "$2"
  want "$RECEIVERS" envelope && run_bare envelope "$1" "$2"
  want "$RECEIVERS" fedhub && run_fedhub "$1" "$2"
  [ -n "$FEDHUB_BASE" ] && run_fedhub "$1" "$2" fedhub-base "$FEDHUB_BASE"
  if [ "$1" = "$SMALL" ] && [ "$PEER" = 1 ] && want "$RECEIVERS" python; then run_python "$1" "$2"; fi
  return 0
}
if want "$SCENARIOS" tput; then
  phase "throughput-100k"
  for ((rep = 1; rep <= REPS; rep++)); do throughput "$SMALL" "$rep"; done
  phase "throughput-${BIG}"
  for ((rep = 1; rep <= REPS; rep++)); do throughput "$BIG" "$rep"; done
fi

# ---- 3: memory behind a slow consumer ----
want "$SCENARIOS" rss && phase "rss-slow-consumer"
for ((rep = 1; rep <= REPS; rep++)); do
  want "$SCENARIOS" rss || break
  stem="$OUT/rss__fedhub__${SMALL}__${rep}"
  start_fedhub "rss-$rep" "$RSS_SLEEP_MS" || continue
  sleep 1
  "$BENCH" watch --url "$HUB_HTTP" --pid "$HUB_PID" --until "$SMALL" --poll-ms 100 --rss-ms 100 --after-s 3 \
    --stall-s 10 --series "$stem.series.csv" --out "$stem.recv.json" > /dev/null 2> "$stem.err" & w=$!
  PIDS+=("$w")
  publish "$stem.pub.json" "$SMALL" --pub-connect "$HUB_IN" --wait-sub 1
  wait "$w"; forget "$w"
  stop_fedhub
  say "  rss rep=$rep: $(grep -o '"rss_[a-z_]*kb":[0-9]*' "$stem.recv.json" | tr '\n' ' ')"
done

# ---- 4: reported vs true backlog ----
want "$SCENARIOS" backlog && phase "backlog-1ms"
for ((rep = 1; rep <= REPS; rep++)); do
  want "$SCENARIOS" backlog || break
  stem="$OUT/backlog__fedhub__${BACKLOG_N}__${rep}"
  start_fedhub "backlog-$rep" 1 || continue
  sleep 0.5
  "$BENCH" backlog --url "$HUB_HTTP" --corpus "$CORPUS" --count "$BACKLOG_N" --pub-connect "$HUB_IN" \
    --poll-ms 50 --series "$stem.series.csv" --out "$stem.recv.json" > /dev/null 2> "$stem.err" & b=$!
  PIDS+=("$b"); wait "$b"; forget "$b"
  stop_fedhub
  say "  backlog fedhub rep=$rep: $(grep -o '"max_abs_diff[a-z_]*":[0-9]*' "$stem.recv.json" | tr '\n' ' ')"
done
if [ "$PEER" = 1 ] && want "$SCENARIOS" backlog; then
  stem="$OUT/backlog__python__${BACKLOG_N}__1"
  if start_python "backlog-python" 0.001; then
    sleep 1
    "$BENCH" backlog --peer-stats "$PY_STATS" --corpus "$CORPUS" --count "$BACKLOG_N" --pub-bind "$PY_PUB" \
      --poll-ms 100 --series "$stem.series.csv" --out "$stem.recv.json" > /dev/null 2> "$stem.err" & b=$!
    PIDS+=("$b"); wait "$b"; forget "$b"
    stop_python
    say "  backlog python: $(grep -o '"max_abs_diff[a-z_]*":[0-9]*' "$stem.recv.json" | tr '\n' ' ')"
  fi
fi
want "$SCENARIOS" backlog && phase "backlog-noop-${BIG}"
stem="$OUT/backlog__fedhub-noop__${BIG}__1"
if want "$SCENARIOS" backlog && start_fedhub "backlog-noop" 0; then
  sleep 0.5
  "$BENCH" backlog --url "$HUB_HTTP" --corpus "$CORPUS" --count "$BIG" --pub-connect "$HUB_IN" \
    --poll-ms 50 --series "$stem.series.csv" --out "$stem.recv.json" > /dev/null 2> "$stem.err" & b=$!
  PIDS+=("$b"); wait "$b"; forget "$b"
  stop_fedhub
  say "  backlog fedhub no-op: $(grep -o '"max_abs_diff[a-z_]*":[0-9]*' "$stem.recv.json" | tr '\n' ' ')"
fi
# ---- 5 + 6: what monitoring costs ----
# 5. Throughput of the BIG burst with the monitoring socket on (every 1 s, read by a SUB) and
#    /metrics + /state scraped every second, against the same hub without either; the two
#    variants alternate (which one goes first flips every repetition). Both are followed by the
#    same watcher polling /state every 100 ms; the rate is the watcher's rate_inside (exact
#    counts and times of the samples strictly inside the burst).
# 6. Latency of /state and /metrics (GET every PROBE_MS, new connection each, as a scraper) while
#    the hub absorbs a 100k burst: no-op consumer, and a slow consumer (backlog up to 100k);
#    also 1 s of the idle hub before each burst for comparison.
run_mon_tput() {  # VARIANT(plain|monitored) REP
  local variant=$1 rep=$2 stem="$OUT/mon__${1}__${BIG}__${2}" s=""
  start_fedhub "mon-$variant-$rep" 0 "$([ "$variant" = monitored ] && echo 1 || echo 0)" || return 1
  sleep 1
  "$BENCH" watch --url "$HUB_HTTP" --pid "$HUB_PID" --until "$BIG" --poll-ms 100 --rss-ms 100 --after-s 0 \
    --series "$stem.series.csv" --out "$stem.recv.json" > /dev/null 2> "$stem.err" & local w=$!
  PIDS+=("$w")
  if [ "$variant" = monitored ]; then
    "$BENCH" scrape --url "$HUB_HTTP" --paths /metrics,/state --interval-ms 1000 --monitor "$HUB_MON" \
      --out "$stem.scrape.json" > /dev/null 2> "$stem.scrape.err" & s=$!
    PIDS+=("$s")
  fi
  publish "$stem.pub.json" "$BIG" --pub-connect "$HUB_IN" --wait-sub 1
  wait "$w"; forget "$w"
  [ -n "$s" ] && stop_pid "$s" 5
  stop_fedhub
  say "  $variant rep=$rep: $(grep -o '"rate_inside":[0-9.]*' "$stem.recv.json") $([ -n "$s" ] && grep -o '"monitor_documents":[0-9]*' "$stem.scrape.json")"
}
run_latency() {  # VARIANT(noop|slow) REP
  local variant=$1 rep=$2 sleep_ms=0 s
  [ "$variant" = slow ] && sleep_ms=$RSS_SLEEP_MS
  local stem="$OUT/lat__${variant}-burst__${SMALL}__${rep}" idle="$OUT/lat__${variant}-idle__${SMALL}__${rep}"
  start_fedhub "lat-$variant-$rep" "$sleep_ms" 1 || return 1
  sleep 1
  "$BENCH" scrape --url "$HUB_HTTP" --paths /state,/metrics --interval-ms "$PROBE_MS" --max-s 1 --series "$idle.scrape.csv" \
    --out "$idle.scrape.json" > /dev/null 2> "$idle.scrape.err"
  "$BENCH" watch --url "$HUB_HTTP" --pid "$HUB_PID" --until "$SMALL" --poll-ms 100 --rss-ms 100 --after-s 0 \
    --stall-s 10 --series "$stem.series.csv" --out "$stem.recv.json" > /dev/null 2> "$stem.err" & local w=$!
  PIDS+=("$w")
  "$BENCH" scrape --url "$HUB_HTTP" --paths /state,/metrics --interval-ms "$PROBE_MS" --monitor "$HUB_MON" \
    --series "$stem.scrape.csv" --out "$stem.scrape.json" > /dev/null 2> "$stem.scrape.err" & s=$!
  PIDS+=("$s")
  publish_corpus "$CORPUS_SMALL" "$stem.pub.json" "$SMALL" --pub-connect "$HUB_IN" --wait-sub 1
  wait "$w"; forget "$w"
  stop_pid "$s" 5
  stop_fedhub
  say "  latency $variant rep=$rep: $(grep -o '"p99_ms":[0-9.]*' "$stem.scrape.json" | tr '\n' ' ')"
}
if want "$SCENARIOS" monitoring; then
  phase "monitoring-throughput-${BIG}"
  for ((rep = 1; rep <= MON_REPS; rep++)); do
    if ((rep % 2)); then run_mon_tput plain "$rep"; run_mon_tput monitored "$rep"
    else run_mon_tput monitored "$rep"; run_mon_tput plain "$rep"; fi
  done
  phase "probe-latency-${SMALL}"
  for ((rep = 1; rep <= REPS; rep++)); do run_latency noop "$rep"; run_latency slow "$rep"; done
fi
# ---- 7: end-to-end latency, paced ----
# The publisher sends RATE msg/s (open loop: sleep, then spin to each due time) and stamps each
# body's msg with sent_ns right before sending; the hub's consumer records now - sent_ns first
# thing in consume, ignores the first LAT_WARMUP_S worth of messages and records LAT_SECS worth.
lat_count() {  # RATE SECONDS: messages in that long at that rate (at least 1)
  awk -v r="$1" -v s="$2" 'BEGIN { n = int(r * s + 0.5); print (n < 1 ? 1 : n) }'
}
await_pid() {  # PID SECONDS: wait for PID to exit by itself; 1 if it is still running
  local p=$1 i
  for ((i = 0; i < $2 * 10; i++)); do
    kill -0 "$p" 2>/dev/null || { wait "$p" 2>/dev/null; forget "$p"; return 0; }
    sleep 0.1
  done
  return 1
}
lat_publish() {  # STEM RATE TOTAL ARGS...: the paced, stamping publisher
  local stem=$1 rate=$2 total=$3; shift 3
  publish_corpus "$CORPUS_SMALL" "$stem.pub.json" "$total" --wait-sub 1 --rate "$rate" --stamp \
    --spin-us "$LAT_SPIN_US" "$@"
}
json_num() { grep -o "\"$1\": *[0-9.e-]*" | head -1 | cut -d: -f2 | tr -d ' '; }  # KEY < JSON
lat_line() {  # STEM: "p50 X p99 Y max Z ms (N recorded), publisher late p99 U us"
  local e; e=$(grep -o '"e2e_ms": *{[^}]*}' "$1.recv.json" 2>/dev/null)
  printf 'p50 %s p99 %s max %s ms (%s recorded), publisher late p99 %s us' \
    "$(json_num p50 <<< "$e")" "$(json_num p99 <<< "$e")" "$(json_num max <<< "$e")" "$(json_num count <<< "$e")" \
    "$(json_num late_us_p99 < "$1.pub.json" 2>/dev/null)"
}
run_e2e_fedhub() {  # RATE REP
  local rate=$1 rep=$2 stem="$OUT/latency__fedhub__${1}__${2}" name="latency-fedhub-$1-$2"
  local skip record in_port http_port h
  skip=$(lat_count "$rate" "$LAT_WARMUP_S"); record=$(lat_count "$rate" "$LAT_SECS")
  read -r in_port http_port <<< "$(free_ports 2)"
  cat > "$OUT/$name.toml" <<EOF
[hub]
status_log_interval_secs = 0
$([ -n "${BENCH_DATA_NICE:-}" ] && echo "data_threads_nice = $BENCH_DATA_NICE")
[bus]
inbound = "tcp://127.0.0.1:$in_port"
[http]
listen = "127.0.0.1:$http_port"
[consumers.LatencyConsumer]
enabled = true
skip_messages = $skip
record_messages = $record
EOF
  "$BENCH" latency-hub -c "$OUT/$name.toml" --max-s "$(awk -v a="$LAT_WARMUP_S" -v b="$LAT_SECS" 'BEGIN { print a + b + 120 }')" \
    --series "$stem.series.csv" --out "$stem.recv.json" > /dev/null 2> "$OUT/$name.hub.log" & h=$!
  PIDS+=("$h")
  if ! "$BENCH" wait-http --url "127.0.0.1:$http_port" --timeout-s 30; then
    say "the latency hub did not come up (see $OUT/$name.hub.log)"; stop_pid "$h"; return 1
  fi
  sleep 0.5
  lat_publish "$stem" "$rate" $((skip + record)) --pub-connect "tcp://127.0.0.1:$in_port"
  # It stops by itself once it recorded every message; else SIGINT makes it print what it has.
  await_pid "$h" 30 || { say "  the latency hub still runs 30 s after the last send: stopping it"; stop_pid "$h" 20; }
  say "  latency fedhub $rate/s rep=$rep: $(lat_line "$stem")"
}
run_e2e_python() {  # RATE REP
  local rate=$1 rep=$2 stem="$OUT/latency__python__${1}__${2}" name="latency-python-$1-$2"
  local skip record pub_port mon_port i
  skip=$(lat_count "$rate" "$LAT_WARMUP_S"); record=$(lat_count "$rate" "$LAT_SECS")
  read -r pub_port mon_port <<< "$(free_ports 2)"
  rm -f "$stem.recv.json"
  # The real fedmsg-hub (monitoring every 5 s, its default), the kit's consumer off, ours on.
  PY_PID=$(FEDHUB_LATENCY_OUT="$stem.recv.json" FEDHUB_LATENCY_SKIP=$skip FEDHUB_LATENCY_RECORD=$record \
    FEDHUB_LATENCY_SERIES="$stem.series.csv" \
    PEER_CONSUMER=0 PEER_PUB_ENDPOINT="tcp://127.0.0.1:$pub_port" PEER_MON_ENDPOINT="tcp://127.0.0.1:$mon_port" \
    PEER_RELAY_OUTBOUND='' PEER_HUB_LOG="$OUT/$name.hub.log" bash "$KIT/run-hub.sh" 2> "$OUT/$name.run-hub.err")
  if [ -z "$PY_PID" ]; then say "the Python hub did not start (see $OUT/$name.run-hub.err)"; return 1; fi
  PY_HUBS+=("$PY_PID")
  sleep 1
  lat_publish "$stem" "$rate" $((skip + record)) --pub-bind "tcp://127.0.0.1:$pub_port"
  # Its consumer writes the figures once it recorded every message; stopping writes what it has.
  for ((i = 0; i < 300; i++)); do [ -s "$stem.recv.json" ] && break; sleep 0.1; done
  stop_python
  say "  latency python $rate/s rep=$rep: $(lat_line "$stem")"
}
if want "$SCENARIOS" latency; then
  phase "latency-e2e"
  for ((rep = 1; rep <= REPS; rep++)); do
    for rate in ${LAT_RATES//,/ }; do
      run_e2e_fedhub "$rate" "$rep"
      if [ "$PEER" = 1 ] && want "$LAT_PY_RATES" "$rate"; then run_e2e_python "$rate" "$rep"; fi
    done
  done
fi
phase ""

# ---- report ----
{
  echo "loadavg at end: $(cat /proc/loadavg)"
  echo "busiest processes at end:"
  ps -eo pid,pcpu,etimes,comm --sort=-pcpu | head -8
} >> "$OUT/env.txt"
kill "$SYSMON" 2>/dev/null; wait "$SYSMON" 2>/dev/null; SYSMON=""
{
  echo "fedhub benchmarks -- $OUT ($(( $(date +%s) - T_START )) s)"
  cat "$OUT/env.txt"
  "$BENCH" report "$OUT" --json-out "$OUT/summary.json"
} | tee "$OUT/report.txt"
say "done in $(( $(date +%s) - T_START )) s; files in $OUT"
