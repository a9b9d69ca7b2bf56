"""CPU per Kafka send with and without the aiokafka instrumentation (README, Tracing and logs).

    TIDINGS_KAFKA_BOOTSTRAP=127.0.0.1:9092 .venv/bin/python tests/bench/tracing_sends.py

Enqueues N sends on an AIOKafkaProducer inside a stage span, three times: plain,
instrumented with every trace dropped (sample ratio 0), and instrumented with every trace
kept (its spans go to an exporter that discards them: the figure is the span work in the
worker, not the export). Prints µs of CPU per send.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time
import uuid

from aiokafka import AIOKafkaProducer
from confluent_kafka.admin import AdminClient, NewTopic
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from streams import tracing


class _Discard(SpanExporter):
    def export(self, spans: object) -> SpanExportResult:
        return SpanExportResult.SUCCESS


async def _cpu_per_send(bootstrap: str, topic: str, count: int) -> float:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"warm-up")
        started = time.process_time()
        with tracing.child_span("rate_limit"):
            futures = [await producer.send(topic, b"x" * 400, key=f"acme/u{i}".encode())
                       for i in range(count)]
        spent = time.process_time() - started
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return spent / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sends", type=int, default=5000)
    count = parser.parse_args().sends
    logging.basicConfig(level=logging.ERROR)  # not the new topic's metadata warnings
    bootstrap = os.environ.get("TIDINGS_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    topic = f"bench-tracing-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=8, replication_factor=1)])[topic].result(30)
    try:
        print(f"plain                    {asyncio.run(_cpu_per_send(bootstrap, topic, count)):6.1f}"
              " µs CPU per send")
        for label, ratio in (("instrumented, dropped", 0.0), ("instrumented, kept", 1.0)):
            provider = TracerProvider(sampler=tracing.StageRootSampler(ratio))
            provider.add_span_processor(BatchSpanProcessor(_Discard()))
            tracing.enable(provider)
            figure = asyncio.run(_cpu_per_send(bootstrap, topic, count))
            tracing.disable()
            provider.shutdown()
            print(f"{label:24} {figure:6.1f} µs CPU per send")
    finally:
        admin.delete_topics([topic])[topic].result(30)


if __name__ == "__main__":
    main()
