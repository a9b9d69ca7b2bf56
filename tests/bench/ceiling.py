"""The raw ceilings the pipeline is compared with, on the same broker.

- Kafka's own producer benchmark (`org.apache.kafka.tools.ProducerPerformance`): how fast
  the broker takes 500-byte records from the Java client. Nothing in Python comes close; it
  says how much of a run's time is the broker's.
- A plain aiokafka consume → produce loop: a consumer group on an 8-partition topic
  pre-filled with N 500-byte records, each produced to a second topic, batches via
  `getmany`, acks=all. No Faust, no state, no decoding: what one Python process on the same
  client library can move, so `pipeline ÷ loop` is the cost of everything Tidings and Faust
  add.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import shutil
import subprocess
import time
from typing import Any

import kafka_io
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

RECORD_SIZE = 500
_SUMMARY = re.compile(
    r"(?P<records>\d+) records sent, (?P<rate>[\d.]+) records/sec \((?P<mb>[\d.]+) MB/sec\), "
    r"(?P<avg>[\d.]+) ms avg latency, (?P<max>[\d.]+) ms max latency"
    r"(?:, (?P<p50>\d+) ms 50th, (?P<p95>\d+) ms 95th, (?P<p99>\d+) ms 99th, "
    r"(?P<p999>\d+) ms 99.9th)?"
)


def producer_performance(bootstrap: str, libs: str, records: int, prefix: str) -> dict[str, Any]:
    """Run Kafka's ProducerPerformance against an 8-partition topic; parse its summary."""
    java = shutil.which("java")
    if java is None:
        raise RuntimeError("java not found on PATH")
    topic = f"{prefix}.ceiling.producer-perf"
    kafka_io.create_topic(bootstrap, topic, 8)
    command = [
        java, "-Xmx512m", "-cp", f"{libs}/*", "org.apache.kafka.tools.ProducerPerformance",
        "--topic", topic, "--num-records", str(records), "--record-size", str(RECORD_SIZE),
        "--throughput", "-1",
        "--producer-props", f"bootstrap.servers={bootstrap}", "acks=all", "linger.ms=5",
        "compression.type=lz4",
    ]
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"ProducerPerformance exited {result.returncode}: "
                           f"{result.stderr[-2000:]}")
    matches = list(_SUMMARY.finditer(result.stdout))
    if not matches:
        raise RuntimeError(f"no summary in ProducerPerformance output: {result.stdout[-2000:]}")
    summary = matches[-1]
    return {
        "records": int(summary["records"]),
        "records_per_s": float(summary["rate"]),
        "mb_per_s": float(summary["mb"]),
        "avg_latency_ms": float(summary["avg"]),
        "max_latency_ms": float(summary["max"]),
        "p99_latency_ms": float(summary["p99"]) if summary["p99"] else None,
        "wall_s": round(time.monotonic() - started, 2),
    }


def aiokafka_loop(bootstrap: str, records: int, prefix: str) -> dict[str, Any]:
    source, sink = f"{prefix}.ceiling.loop-in", f"{prefix}.ceiling.loop-out"
    kafka_io.create_topic(bootstrap, source, 8)
    kafka_io.create_topic(bootstrap, sink, 8)
    rng = random.Random(3)
    # Text-like values (so lz4 has what it has on real records), distinct per record.
    alphabet = b"abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    base = bytes(rng.choice(alphabet) for _ in range(RECORD_SIZE * 4))
    filled = kafka_io.produce_all(bootstrap, source, (
        (f"tenant-{i % 200:04d}/user-{i % 5000:06d}".encode(),
         base[(i * 7) % (RECORD_SIZE * 3):][:RECORD_SIZE - 8] + i.to_bytes(8, "big"))
        for i in range(records)
    ))
    return asyncio.run(_loop(bootstrap, source, sink, filled, f"{prefix}.ceiling-loop"))


async def _loop(bootstrap: str, source: str, sink: str, records: int,
                group: str) -> dict[str, Any]:
    consumer = AIOKafkaConsumer(
        source, bootstrap_servers=bootstrap, group_id=group,
        auto_offset_reset="earliest", enable_auto_commit=True, auto_commit_interval_ms=1000,
    )
    # The producer settings Faust gets from streams/app.py: acks=all, linger 5 ms.
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await consumer.start()
    await producer.start()
    moved = 0
    first: float | None = None
    cpu_start = os.times()
    try:
        deadline = time.monotonic() + 300
        while moved < records and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for messages in batches.values():
                if first is None:
                    first = time.monotonic()
                for message in messages:
                    await producer.send(sink, message.value, key=message.key)
                    moved += 1
        await producer.flush()
        elapsed = time.monotonic() - (first or time.monotonic())
        cpu_end = os.times()
    finally:
        await producer.stop()
        await consumer.stop()
    cpu = (cpu_end.user - cpu_start.user) + (cpu_end.system - cpu_start.system)
    return {
        "records": moved,
        "msgs_per_s": moved / elapsed if elapsed > 0 else None,
        "elapsed_s": round(elapsed, 3),
        "cores": round(cpu / elapsed, 2) if elapsed > 0 else None,
        "group": group,
    }
