"""End-to-end latency in the Python fedmsg-hub, for fedhub's benchmarks.

The publisher (``fedhub-bench pub --stamp``) puts ``sent_ns`` (wall clock at
send, nanoseconds since the epoch) into every message's ``msg``. This consumer
reads the wall clock as the first thing in ``consume`` and records
``now - sent_ns``; it ignores the first ``skip_messages`` (warm-up), records the
next ``record_messages``, then writes the percentiles as one JSON line to
``out`` (the same fields as ``fedhub-bench latency-hub``), and, with ``series``,
count and p50/p99/max per 100 ms of consume time as CSV. When the hub stops
first, ``stop`` writes what was recorded, marked ``"complete": false``.

Config keys (fedmsg config dict; benches/python/fedmsg.d/fedhub_bench_latency.py
sets them from the environment):
  fedhub_bench_latency.enabled          -- config_key
  fedhub_bench_latency.out              -- the JSON file to write
  fedhub_bench_latency.skip_messages    -- warm-up messages ignored
  fedhub_bench_latency.record_messages  -- messages recorded after the warm-up
  fedhub_bench_latency.series           -- the CSV file to write ('' = none)
"""
import json
import math
import os
import time

from fedmsg.consumers import FedmsgConsumer


def summarize_ns(values):
    """Nearest-rank percentiles of nanosecond values, in milliseconds."""
    n = len(values)
    if n == 0:
        return {"count": 0}
    values = sorted(values)

    def ms(ns):
        return round(ns / 1e6, 4)

    def at(q):
        return ms(values[max(1, min(n, int(math.ceil(q * n)))) - 1])

    return {
        "count": n,
        "min": ms(values[0]),
        "p50": at(0.50),
        "p90": at(0.90),
        "p99": at(0.99),
        "p999": at(0.999),
        "max": ms(values[-1]),
        "mean": round(sum(values) / n / 1e6, 4),
    }


def series_csv(at_ns, e2e_ns, window_ms=100):
    """Count and p50/p99/max (ms) per window of consume time, from the first message."""
    out = ["t_s,count,p50_ms,p99_ms,max_ms"]
    if at_ns:
        width = window_ms * 1000000
        windows = {}
        for at, e2e in zip(at_ns, e2e_ns):
            windows.setdefault((at - at_ns[0]) // width, []).append(e2e)
        for w in sorted(windows):
            s = summarize_ns(windows[w])
            out.append("%.3f,%d,%s,%s,%s" % (w * width / 1e9, s["count"], s["p50"], s["p99"], s["max"]))
    return "\n".join(out) + "\n"


class LatencyConsumer(FedmsgConsumer):
    """Records, per message, the time from the publisher's send to the start of consume."""

    topic = '*'
    config_key = 'fedhub_bench_latency.enabled'

    def __init__(self, hub):
        config = hub.config
        self.out = config.get('fedhub_bench_latency.out') or ''
        self.skip = int(config.get('fedhub_bench_latency.skip_messages') or 0)
        self.record = int(config.get('fedhub_bench_latency.record_messages') or 0)
        self.series = config.get('fedhub_bench_latency.series') or ''
        self.e2e_ns = []
        self.at_ns = []
        self.seen = 0
        self.skipped = 0
        self.missing_stamp = 0
        self.first_ns = 0
        self.last_ns = 0
        self.written = False
        super(LatencyConsumer, self).__init__(hub)

    def consume(self, msg):
        now = time.time_ns()
        self.seen += 1
        if self.written:
            return
        if self.seen <= self.skip:
            self.skipped += 1
            return
        try:
            sent = msg['body']['msg']['sent_ns']
        except (KeyError, TypeError):
            self.missing_stamp += 1
            return
        self.e2e_ns.append(now - sent)
        self.at_ns.append(now)
        if not self.first_ns:
            self.first_ns = now
        self.last_ns = now
        if len(self.e2e_ns) >= self.record:
            self._write(True)

    def stop(self):
        self._write(False)
        super(LatencyConsumer, self).stop()

    def _write(self, complete):
        if self.written or not self.out:
            return
        self.written = True
        if self.series:
            with open(self.series, 'w') as f:
                f.write(series_csv(self.at_ns, self.e2e_ns))
        recorded = len(self.e2e_ns)
        span_s = (self.last_ns - self.first_ns) / 1e9
        doc = {
            "tool": "latency-consumer",
            "hub": "python",
            "complete": complete,
            "ended_by": "recorded" if complete else "stop",
            "seen": self.seen,
            "skipped": self.skipped,
            "recorded": recorded,
            "missing_stamp": self.missing_stamp,
            "e2e_ms": summarize_ns(self.e2e_ns),
            "first_consume": round(self.first_ns / 1e9, 6),
            "last_consume": round(self.last_ns / 1e9, 6),
            "rate": round((recorded - 1) / span_s, 1) if recorded > 1 and span_s > 0 else 0.0,
            "pid": os.getpid(),
        }
        tmp = self.out + '.tmp'
        with open(tmp, 'w') as f:
            f.write(json.dumps(doc, separators=(',', ':')) + '\n')
        os.replace(tmp, self.out)
