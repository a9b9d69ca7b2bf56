"""Kafka plumbing for the benchmarks: topics, bulk produce, and reading a topic back.

Progress is watched through high watermarks, not by consuming while a run is going: on a
two-core machine a reader decoding every record would take CPU from the worker it measures.
Records are read (once) after the run, for their timestamps and values.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


@dataclass(frozen=True, slots=True)
class Record:
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes


def create_topic(bootstrap: str, name: str, partitions: int, *,
                 config: dict[str, str] | None = None) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions,
                                            replication_factor=1, config=config or {})])
    for future in futures.values():
        future.result(30)


def produce_all(
    bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes]],
    *, compression: str = "lz4",
) -> int:
    """Produce every (key, value) with acks=all and wait for all acks; return the count."""
    errors: list[str] = []

    def on_delivery(error: object, _message: object) -> None:
        if error is not None:
            errors.append(str(error))

    producer = Producer({
        "bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 20,
        "compression.type": compression, "enable.idempotence": True,
        "queue.buffering.max.messages": 500_000,
    })
    count = 0
    for key, value in records:
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        count += 1
        if count % 1000 == 0:
            producer.poll(0)
    remaining = producer.flush(60)
    if remaining or errors:
        raise RuntimeError(f"producing to {topic}: {remaining} unacknowledged, "
                           f"errors: {errors[:3]}")
    return count


class Watermarks:
    """Sum of a topic's high watermarks: how many records it holds (no transactions here)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._consumer = Consumer({"bootstrap.servers": bootstrap,
                                   "group.id": f"bench-watch-{uuid.uuid4().hex[:8]}",
                                   "enable.auto.commit": False})
        self._topic = topic
        metadata = self._consumer.list_topics(topic, timeout=10)
        self.partitions = sorted(metadata.topics[topic].partitions)

    def total(self) -> int:
        total = 0
        for partition in self.partitions:
            _low, high = self._consumer.get_watermark_offsets(
                TopicPartition(self._topic, partition), timeout=5, cached=False)
            total += high
        return total

    def wait_for(self, count: int, timeout_s: float, *, every_s: float = 0.2,
                 on_progress: Callable[[int], None] | None = None) -> int:
        """Poll until the topic holds `count` records or `timeout_s` passes; return the total."""
        deadline = time.monotonic() + timeout_s
        last_report = 0.0
        total = self.total()
        while total < count and time.monotonic() < deadline:
            time.sleep(every_s)
            total = self.total()
            if on_progress is not None and time.monotonic() - last_report >= 5:
                last_report = time.monotonic()
                on_progress(total)
        return total

    def close(self) -> None:
        self._consumer.close()


def count(bootstrap: str, topic: str) -> int:
    watch = Watermarks(bootstrap, topic)
    try:
        return watch.total()
    finally:
        watch.close()


def read_all(bootstrap: str, topic: str, *, timeout_s: float = 120.0) -> list[Record]:
    """Every record the topic holds now, from offset 0 up to each partition's high watermark."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"bench-read-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "fetch.max.bytes": 64 * 1024 * 1024,
    })
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = sorted(metadata.topics[topic].partitions)
        ends = {}
        for partition in partitions:
            _low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                        timeout=10, cached=False)
            ends[partition] = high
        pending = {p for p, high in ends.items() if high > 0}
        consumer.assign([TopicPartition(topic, p, 0) for p in pending])
        records: list[Record] = []
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            for message in consumer.consume(10_000, 0.5):
                partition = message.partition()
                if message.error():
                    if message.error().code() == -191:  # _PARTITION_EOF
                        if message.offset() >= ends[partition]:
                            pending.discard(partition)
                        continue
                    raise KafkaException(message.error())
                if message.offset() < ends[partition]:
                    records.append(Record(partition, message.offset(), message.timestamp()[1],
                                          message.key(), message.value() or b""))
                if message.offset() >= ends[partition] - 1:
                    pending.discard(partition)
        if pending:
            raise TimeoutError(f"reading {topic}: partitions {sorted(pending)} not read "
                               f"to their end in {timeout_s}s")
        return records
    finally:
        consumer.close()
