"""Keyed records from outside the worker: a producer that partitions like the worker, and a
reader of compacted topics.

Partitioning: the worker (Faust on aiokafka) places a key with murmur2, like Kafka's Java
client. librdkafka's default is `consistent_random` (CRC32), which puts the same key on a
different partition. A table is only co-partitioned with a topic if both were written with the
same hash, so every producer here asks librdkafka for `murmur2_random` — identical to Java's
and aiokafka's partitioner for non-null keys (librdkafka CONFIGURATION.md, `partitioner`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from aiokafka.partitioner import murmur2
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)

from streams.errors import TidingsError
from streams.publisher import PublishError, producer_config
from streams.settings import Settings

__all__ = ["KeyedProducer", "PublishError", "partition_for", "read_latest", "read_records"]


def partition_for(key: bytes, partitions: int) -> int:
    """The partition the worker's producer puts `key` on (Kafka's murmur2, positive)."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


class KeyedProducer:
    """Sends keyed records and waits for every ack in `flush`."""

    def __init__(self, settings: Settings) -> None:
        self._producer = Producer(producer_config(settings))
        self._errors: list[str] = []

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._errors.append(f"{message.key()!r}: {error.str()}")

    def send(self, topic: str, key: bytes, value: bytes | None,
             headers: list[tuple[str, str | bytes | None]] | None = None) -> None:
        self._producer.produce(topic, value=value, key=key, headers=headers,
                               on_delivery=self._on_delivery)
        self._producer.poll(0)

    def flush(self, timeout_s: float = 30.0) -> None:
        remaining = self._producer.flush(timeout_s)
        errors, self._errors = self._errors, []
        if remaining:
            errors.append(f"{remaining} record(s) still unacknowledged after {timeout_s}s")
        if errors:
            raise PublishError("; ".join(errors))


def read_records(
    settings: Settings,
    topic: str,
    *,
    partitions: Iterable[int] | None = None,
    accept: Callable[[bytes], bool] = lambda key: True,
    timeout_s: float = 30.0,
    only_key: bytes | None = None,
) -> list[tuple[bytes, bytes | None]]:
    """Every (key, value) of the chosen partitions (all by default) whose key is accepted, in
    offset order per partition, from the start to the end they had when the call began.

    For the CLI and tools: O(records in those partitions). `only_key` reads just the
    partition that key is on (by the topic's own partition count), and only its records.
    """
    consumer = Consumer({
        "bootstrap.servers": settings.kafka_bootstrap,
        "group.id": "tidings-read-records",  # never committed; assign() needs a group id
        "enable.auto.commit": False,
        "log_level": 4,
    })
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if metadata is None or metadata.error is not None:
            raise TidingsError(f"topic {topic} does not exist (run `tidings topics create`)")
        wanted = sorted(metadata.partitions) if partitions is None else sorted(partitions)
        if only_key is not None:
            wanted = [partition_for(only_key, len(metadata.partitions))]
            accept = only_key.__eq__
        ends: dict[int, int] = {}
        for p in wanted:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p),
                                                       timeout=timeout_s)
            if high > low:
                ends[p] = high
        records: list[tuple[bytes, bytes | None]] = []
        if not ends:
            return records
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        deadline = time.monotonic() + timeout_s
        while ends and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                raise TidingsError(f"reading {topic}: {error.str()}")
            key = message.key() or b""
            if accept(key):
                records.append((key, message.value()))
            partition, offset = message.partition(), message.offset()
            if partition in ends and offset is not None and offset + 1 >= ends[partition]:
                del ends[partition]
        if ends:
            raise TidingsError(f"reading {topic}: not at the end after {timeout_s}s")
        return records
    finally:
        consumer.close()


def read_latest(
    settings: Settings,
    topic: str,
    *,
    partitions: Iterable[int] | None = None,
    accept: Callable[[bytes], bool] = lambda key: True,
    timeout_s: float = 30.0,
) -> dict[bytes, bytes]:
    """The latest value of every accepted key of a compacted topic (a tombstone removes it)."""
    latest: dict[bytes, bytes] = {}
    for key, value in read_records(settings, topic, partitions=partitions, accept=accept,
                                   timeout_s=timeout_s):
        if value is None:
            latest.pop(key, None)
        else:
            latest[key] = value
    return latest
