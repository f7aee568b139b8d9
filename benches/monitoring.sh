#!/usr/bin/env bash
# benches/monitoring.sh -- what monitoring costs fedhub, in ONE run. Prints a table and a JSON
# summary.
#
#   A. Throughput of a burst (MON_N, default the 1M corpus) through a release hub with a no-op
#      consumer, two arms:
#        monitored: [monitoring] socket = "tcp://127.0.0.1:PORT", interval_secs = 1, a SUB reading
#                   that socket, and GET /metrics + GET /state every second (fedhub-bench
#                   probe-latency --every-ms 1000);
#        plain:     no monitoring socket, no scraping.
#      Both arms are followed by the same watcher (GET /state every 20 ms, as benches/run.sh); the
#      rate is from the first change of handled_total to reaching N. Repetitions are interleaved
#      and the order flips every repetition (M,P, P,M, M,P, ...), so slow phases of the shared
#      machine hit both arms alike. Reported: mean, sd, min, max of each arm, the ratio of the
#      means, each pair's ratio and a 95 % interval of their mean. Target: monitored >= 98 % of
#      plain ("met" only when the whole interval is at or above 0.98).
#   B. Latency of GET /state and GET /metrics (a new connection per request, as a scraper) every
#      MON_PROBE_MS while the monitored hub absorbs a 100k burst; a request counts as "during the
#      burst" when it overlaps the window from the last /state that showed the starting count to
#      the first that showed all 100k handled. Percentiles over all repetitions pooled.
#      Target: p99 <= 5 ms.
#
# Environment:
#   MON_REPS=N          repetitions of each throughput arm (default 10)
#   MON_N=N             throughput burst (default 1000000)
#   MON_LAT_REPS=N      latency repetitions (default 5)
#   MON_LAT_N=N         latency burst (default 100000)
#   MON_PROBE_MS=X      time between probe rounds in B, ms (default 2)
#   MON_OUT=DIR         run directory (default target/fedhub-bench/monitoring-<time>)
#   MON_NO_BUILD=1      do not run cargo build
#   MON_FEDHUB=PATH     the fedhub binary (default target/release/fedhub)
# Every process this script starts is stopped by its PID on exit (also on Ctrl-C).
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
REPS=${MON_REPS:-10}
N=${MON_N:-1000000}
LAT_REPS=${MON_LAT_REPS:-5}
LAT_N=${MON_LAT_N:-100000}
PROBE_MS=${MON_PROBE_MS:-2}
OUT=${MON_OUT:-$ROOT/target/fedhub-bench/monitoring-$(date +%Y%m%d-%H%M%S)}
FEDHUB=${MON_FEDHUB:-$ROOT/target/release/fedhub}
BENCH=$ROOT/target/release/fedhub-bench
T_START=$(date +%s)
export RUST_LIB_BACKTRACE=0

mkdir -p "$OUT" || exit 1
say() { printf '[monitoring %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ---- process bookkeeping: everything started here is stopped by PID ----
PIDS=()
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
cleanup() { local p; for p in "${PIDS[@]}"; do stop_pid "$p" 5; done; PIDS=(); }
trap 'say "interrupted: stopping everything this run started"; cleanup; exit 130' INT TERM
trap cleanup EXIT

free_ports() { "$BENCH" free-port --count "$1" | xargs; }

# ---- build ----
if [ "${MON_NO_BUILD:-0}" != 1 ]; then
  say "cargo build --release -p fedhub-cli -p fedhub-bench"
  (cd "$ROOT" && cargo build --release -p fedhub-cli -p fedhub-bench) >&2 || { say "build failed"; exit 1; }
fi
[ -x "$FEDHUB" ] && [ -x "$BENCH" ] || { say "missing $FEDHUB or $BENCH"; exit 1; }

LOAD_START=$(cat /proc/loadavg)
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (dirty)')"
  echo "kernel: $(uname -r); cpus: $(nproc); mem: $(free -m | awk '/Mem:/{print $2" MB"}')"
  echo "fedhub binary: $FEDHUB ($(stat -c %y "$FEDHUB" 2>/dev/null | cut -d. -f1))"
  echo "throughput: $REPS x 2 arms x $N messages; latency: $LAT_REPS x $LAT_N messages, probes every $PROBE_MS ms"
  echo "loadavg at start: $LOAD_START"
  echo "busiest processes at start:"
  ps -eo pid,pcpu,etimes,comm --sort=-pcpu | head -6
} > "$OUT/env.txt"

# ---- corpus: the one benches/run.sh uses, generated only when missing ----
CORPUS_N=$(( N > LAT_N ? N : LAT_N ))
CORPUS=$ROOT/target/fedhub-bench/corpus-$CORPUS_N.bin
if [ ! -s "$CORPUS" ]; then
  say "generating a corpus of $CORPUS_N messages -> $CORPUS"
  mkdir -p "$(dirname "$CORPUS")" && "$BENCH" corpus --count "$CORPUS_N" --out "$CORPUS" >&2 || exit 1
fi

# ---- fedhub ----
HUB_PID="" HUB_HTTP="" HUB_IN="" HUB_MON=""
start_fedhub() {  # NAME MONITORING(0|1)
  local name=$1 monitoring=$2 in_port http_port mon_port
  read -r in_port http_port mon_port <<< "$(free_ports 3)"
  HUB_IN="tcp://127.0.0.1:$in_port" HUB_HTTP="127.0.0.1:$http_port" HUB_MON=""
  [ "$monitoring" = 1 ] && HUB_MON="tcp://127.0.0.1:$mon_port"
  {
    printf '[hub]\nstatus_log_interval_secs = 0\n[bus]\ninbound = "%s"\n[http]\nlisten = "%s"\n' "$HUB_IN" "$HUB_HTTP"
    [ -n "$HUB_MON" ] && printf '[monitoring]\nsocket = "%s"\ninterval_secs = 1\n' "$HUB_MON"
    printf '[consumers.NullConsumer]\nenabled = true\nsleep_ms = 0\n'
  } > "$OUT/$name.toml"
  "$FEDHUB" run -c "$OUT/$name.toml" 2> "$OUT/$name.hub.log" & HUB_PID=$!
  PIDS+=("$HUB_PID")
  if ! "$BENCH" wait-http --url "$HUB_HTTP" --timeout-s 30; then
    say "fedhub did not come up (see $OUT/$name.hub.log)"; stop_pid "$HUB_PID"; HUB_PID=""; return 1
  fi
}
stop_fedhub() { [ -n "$HUB_PID" ] && stop_pid "$HUB_PID" 20; HUB_PID=""; }

publish() {  # FILE N ARGS...
  local file=$1 n=$2; shift 2
  "$BENCH" pub --corpus "$CORPUS" --count "$n" --out "$file" "$@" > /dev/null 2> "${file%.json}.err" & local p=$!
  PIDS+=("$p"); wait "$p"; local rc=$?; forget "$p"; return $rc
}

field() { grep -o "\"$2\":[0-9.]*" "$1" 2>/dev/null | head -1 | cut -d: -f2; }

# ---- A: throughput, monitored vs plain ----
run_tput() {  # ARM(monitored|plain) REP
  local arm=$1 rep=$2 stem="$OUT/tput__${1}__$(printf %02d "$2")" s=""
  start_fedhub "tput-$arm-$rep" "$([ "$arm" = monitored ] && echo 1 || echo 0)" || return 1
  sleep 1
  "$BENCH" watch --url "$HUB_HTTP" --pid "$HUB_PID" --until "$N" --poll-ms 20 --rss-ms 100 --after-s 0 \
    --series "$stem.series.csv" --out "$stem.recv.json" > /dev/null 2> "$stem.err" & local w=$!
  PIDS+=("$w")
  if [ "$arm" = monitored ]; then
    rm -f "$stem.stop"
    "$BENCH" probe-latency --url "$HUB_HTTP" --path /metrics --path /state --every-ms 1000 \
      --monitor "$HUB_MON" --stop-file "$stem.stop" --out "$stem.scrape.json" > /dev/null 2> "$stem.scrape.err" & s=$!
    PIDS+=("$s")
  fi
  publish "$stem.pub.json" "$N" --pub-connect "$HUB_IN" --wait-sub 1
  wait "$w"; forget "$w"
  if [ -n "$s" ]; then touch "$stem.stop"; wait "$s"; forget "$s"; fi
  stop_fedhub
  say "  $arm rep=$rep: consumed $(field "$stem.recv.json" rate) msg/s (publisher $(field "$stem.pub.json" rate) msg/s)$([ -n "$s" ] && echo ", scrape requests $(field "$stem.scrape.json" requests), monitoring documents $(field "$stem.scrape.json" monitoring_documents)")"
}
say "== A: throughput, $REPS x monitored/plain, $N messages each"
for ((rep = 1; rep <= REPS; rep++)); do
  if ((rep % 2)); then run_tput monitored "$rep"; run_tput plain "$rep"
  else run_tput plain "$rep"; run_tput monitored "$rep"; fi
done

# ---- B: probe latency during a burst ----
say "== B: /state and /metrics latency, $LAT_REPS x $LAT_N burst, probes every $PROBE_MS ms"
for ((rep = 1; rep <= LAT_REPS; rep++)); do
  stem="$OUT/lat__$(printf %02d "$rep")"
  start_fedhub "lat-$rep" 1 || continue
  sleep 1
  "$BENCH" probe-latency --url "$HUB_HTTP" --path /state --path /metrics --every-ms "$PROBE_MS" \
    --monitor "$HUB_MON" --until-handled "$LAT_N" --after-s 0.2 --max-s 120 \
    --series "$stem.scrape.csv" --out "$stem.scrape.json" > /dev/null 2> "$stem.scrape.err" & s=$!
  PIDS+=("$s")
  sleep 0.2
  publish "$stem.pub.json" "$LAT_N" --pub-connect "$HUB_IN" --wait-sub 1
  wait "$s"; forget "$s"
  stop_fedhub
  say "  latency rep=$rep: burst $(grep -o '"burst_window":{[^}]*}' "$stem.scrape.json" | grep -o '"seconds":[0-9.]*' | cut -d: -f2) s, p99 ms (/metrics, /state): $(grep -o '"burst_ms":{[^}]*}' "$stem.scrape.json" | grep -o '"p99":[0-9.]*' | cut -d: -f2 | xargs)"
done

# ---- report ----
LOAD_END=$(cat /proc/loadavg)
{
  echo "loadavg at end: $LOAD_END"
  echo "busiest processes at end:"
  ps -eo pid,pcpu,etimes,comm --sort=-pcpu | head -6
} >> "$OUT/env.txt"
{
  echo "fedhub monitoring benchmark -- $OUT ($(( $(date +%s) - T_START )) s)"
  cat "$OUT/env.txt"
  echo
  "$BENCH" monitoring-report "$OUT" --json-out "$OUT/summary.json"
  printf '{"loadavg_start": "%s", "loadavg_end": "%s"}\n' "$LOAD_START" "$LOAD_END"
} | tee "$OUT/report.txt"
say "done in $(( $(date +%s) - T_START )) s; files in $OUT"
