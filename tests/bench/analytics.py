"""Benchmark of the analytics stage and the runaway guard (`make bench-analytics`).

1. The pure logic on the hot paths, in-process: the guard's decision per request (intake
   calls it for every accepted request), what a status adds to its window, and closing a
   tenant's window (once per window per tenant).
2. The analytics stage in a worker of its own (TIDINGS_STAGES='["analytics"]') against the
   broker: N DeliveryStatus records are written to the status topic first, then the worker
   is started, and the time from its first committed offset to all N counted is measured
   (re-key hop, windowed table and detectors included), with the worker's peak RSS.

Starts nothing but the worker: the broker is TIDINGS_KAFKA_BOOTSTRAP (default
127.0.0.1:9092).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
import timeit
import uuid
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

import processes  # noqa: E402

from agents.guard import GuardConfig, GuardState  # noqa: E402
from agents.tenant_series import SeriesConfig, TenantSeries  # noqa: E402
from streams import window_stats as ws  # noqa: E402
from streams.serde import serde  # noqa: E402

STATUSES = (("accepted", None, None, None), ("delivered", "webhook", 200, 35),
            ("delivered", "webhook", 200, 120), ("retrying", "webhook", 503, None),
            ("delivered", "sms", 201, 900))


def pure_logic() -> None:
    config = GuardConfig(window_ms=10_000, partitions=8)
    state = GuardState.new(config)
    clock = iter(range(0, 10**12, 7))
    n = 200_000
    seconds = timeit.timeit(lambda: state.on_request(next(clock)), number=n)
    print(f"guard decision per request:        {n / seconds:12,.0f} /s "
          f"({seconds / n * 1e6:.2f} µs)")

    status = {"status": "delivered", "channel": "webhook", "latency_ms": 42,
              "reason": None, "status_code": 200}
    window = ws.empty()
    seconds = timeit.timeit(lambda: ws.merge(window, ws.contribution(status)), number=n)
    print(f"status → window value (add+merge): {n / seconds:12,.0f} /s "
          f"({seconds / n * 1e6:.2f} µs)")

    rows = {(ws.row_key("t", ch), 0): ws.merge(ws.empty(), ws.contribution(
        {"status": "retrying", "channel": "webhook", "status_code": 503, "reason": ""}))
        for ch in ("*", "webhook", "sms")}
    series = TenantSeries("t", SeriesConfig(window_ms=60_000))
    series.saw("webhook")
    series.saw("sms")
    starts = iter(range(60_000, 10**12, 60_000))
    m = 20_000
    seconds = timeit.timeit(
        lambda: series.close_until(next(starts), lambda row, start: rows.get((row, 0))),
        number=m)
    print(f"closing one tenant's window:       {m / seconds:12,.0f} /s "
          f"({seconds / m * 1e6:.1f} µs)")


def stage_throughput(bootstrap: str, count: int, tenants: int, timeout_s: float) -> None:
    from confluent_kafka import Consumer, Producer, TopicPartition

    from streams.requests import now_ms
    from streams.settings import load_settings
    from streams.topics import create_topics

    prefix = f"bench-an-{uuid.uuid4().hex[:8]}"
    workdir = Path(tempfile.mkdtemp(prefix="tidings-bench-analytics-"))
    env = processes.worker_env(bootstrap, prefix, workdir / "data", stages=["analytics"],
                               partitions=8, TIDINGS_ANALYTICS_WINDOW_S="1")
    os.environ.update({k: v for k, v in env.items() if k.startswith("TIDINGS_")})
    settings = load_settings()
    create_topics(settings)

    encode = serde("DeliveryStatus").encode
    rng = random.Random(1)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20,
                         "compression.type": "lz4"})
    start = now_ms() - count  # a thousand statuses a second of event time, ending now
    for i in range(count):
        name, channel, code, latency = STATUSES[i % len(STATUSES)]
        tenant = f"tenant-{rng.randrange(tenants)}"
        record = {"tenant_id": tenant, "notification_id": f"ntf_{i}", "delivery_id": None,
                  "channel": channel, "status": name, "attempt": 1, "reason": None,
                  "status_code": code, "occurred_at": start + i, "latency_ms": latency,
                  "details": {}}
        producer.produce(settings.topic("status"), key=f"ntf_{i}".encode(),
                         value=encode(record))
        if i % 10_000 == 0:
            producer.poll(0)
    producer.flush(60)
    print(f"{count:,} statuses of {tenants} tenants on {settings.topic('status')}")

    worker = processes.start_worker("analytics", env, workdir)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": settings.app_id,
                         "enable.auto.commit": False})
    partitions = [TopicPartition(settings.topic("analytics"), p) for p in range(8)]
    peak_rss, first_at, done_at = 0, None, None
    deadline = time.monotonic() + timeout_s
    try:
        process = psutil.Process(worker.pid)
        while time.monotonic() < deadline and worker.alive():
            committed = sum(max(tp.offset, 0) for tp in consumer.committed(partitions, 10))
            peak_rss = max(peak_rss, process.memory_info().rss)
            if committed and first_at is None:
                first_at, first_count = time.monotonic(), committed
            if committed >= count:
                done_at = time.monotonic()
                break
            time.sleep(0.2)
    finally:
        consumer.close()
        worker.stop()
    if done_at is None or first_at is None:
        print(f"the stage did not count them all in {timeout_s:.0f}s; log: {worker.log_path}")
        print(worker.log_tail())
        raise SystemExit(1)
    rate = (count - first_count) / max(done_at - first_at, 1e-9)
    print(f"analytics stage, one worker:       {rate:12,.0f} statuses/s "
          f"(re-key + windowed table + detectors), peak RSS {peak_rss / 2**20:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--statuses", type=int, default=20_000)
    parser.add_argument("--tenants", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    pure_logic()
    stage_throughput(os.environ.get("TIDINGS_KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
                     args.statuses, args.tenants, args.timeout)


if __name__ == "__main__":
    main()
