"""What the metrics cost per record on the hot path (no broker):

    .venv/bin/python tests/bench/metrics_overhead.py

Times `Observer.status` (counted by every `Pipeline.emit_status`) and the stage timer of
`Pipeline.guard`, with prometheus-client's default registry as the worker uses it.
"""

from __future__ import annotations

import time
import timeit

from agents.observe import Observer
from streams.metrics.instruments import STAGE_DURATION
from streams.settings import Settings

RUNS = 200_000


def per_call_us(function: object) -> float:
    return timeit.timeit(function, number=RUNS) / RUNS * 1e6  # type: ignore[arg-type]


def main() -> None:
    observer = Observer(Settings())
    delivered = {"tenant_id": "acme", "channel": "webhook", "status": "delivered",
                 "latency_ms": 42}
    accepted = {"tenant_id": "acme", "channel": None, "status": "accepted"}

    def stage_timer() -> None:
        started = time.perf_counter()
        STAGE_DURATION.labels("validate").observe(time.perf_counter() - started)

    rows = {
        "status (accepted)": lambda: observer.status(accepted, {}),
        "status (delivered + latency)": lambda: observer.status(delivered, {}),
        "stage timer": stage_timer,
    }
    for name, function in rows.items():
        print(f"{name:30} {per_call_us(function):.2f} µs")


if __name__ == "__main__":
    main()
