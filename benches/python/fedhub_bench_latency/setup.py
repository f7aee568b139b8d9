"""The Python hub's side of fedhub's end-to-end latency benchmark (benches/run.sh latency)."""
from setuptools import setup

setup(
    name="fedhub-bench-latency",
    version="0.1",
    description="A FedmsgConsumer recording the time from a message's sent_ns stamp to consume()",
    packages=["fedhub_bench_latency"],
    entry_points={
        "moksha.consumer": [
            "fedhub_bench_latency = fedhub_bench_latency:LatencyConsumer",
        ],
    },
)
