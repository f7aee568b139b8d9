# Copied into $PEER_ROOT/run/fedmsg.d by fedhub's benches/run.sh (latency scenario).
# The consumer runs only when FEDHUB_LATENCY_OUT is set when the hub starts, so other
# uses of the same install are unaffected.
import os
config = {
    "fedhub_bench_latency.enabled": bool(os.environ.get("FEDHUB_LATENCY_OUT")),
    "fedhub_bench_latency.out": os.environ.get("FEDHUB_LATENCY_OUT", ""),
    "fedhub_bench_latency.skip_messages": int(os.environ.get("FEDHUB_LATENCY_SKIP") or 0),
    "fedhub_bench_latency.record_messages": int(os.environ.get("FEDHUB_LATENCY_RECORD") or 0),
    "fedhub_bench_latency.series": os.environ.get("FEDHUB_LATENCY_SERIES", ""),
}
