"""Reading a range of a topic, partition by partition, without joining a consumer group.

Used by `tidings replay` (re-publish a range) and `tidings dlq` (read the dead letters).
The consumer is assigned its partitions (no subscribe, no commit), so nothing it does shows
up in any group's offsets or lag.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from streams.bounds import Bound, PartitionRange, partition_range
from streams.errors import TidingsError

# How long the broker may stay silent while a range is still being read.
_STALL_S = 30.0


class RangeError(TidingsError):
    """The topic does not exist, or the broker did not answer while a range was read."""


@dataclass(frozen=True, slots=True)
class Record:
    """One record read from a range."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


def range_consumer(bootstrap: str) -> Consumer:
    return Consumer({
        "bootstrap.servers": bootstrap,
        # Required by librdkafka, never joined: partitions are assigned, offsets not committed.
        "group.id": f"tidings-range-{secrets.token_hex(4)}",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "log_level": 4,
    })


def partitions_of(consumer: Consumer, topic: str, timeout_s: float = 10.0) -> list[int]:
    """The partition ids of `topic`; `RangeError` when the broker does not know it."""
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s)
    except KafkaException as exc:
        raise RangeError(f"cannot read the metadata of {topic}: {exc.args[0]}") from exc
    described = metadata.topics.get(topic)
    if described is None or described.error is not None or not described.partitions:
        raise RangeError(f"unknown topic {topic!r}")
    return sorted(described.partitions)


def resolve_ranges(consumer: Consumer, topic: str, partitions: Sequence[int], start: Bound,
                   end: Bound, timeout_s: float = 10.0) -> list[PartitionRange]:
    """Each partition's offsets for `start` and `end`: watermarks, and ListOffsets by time."""
    try:
        watermarks = {p: consumer.get_watermark_offsets(TopicPartition(topic, p),
                                                        timeout=timeout_s)
                      for p in partitions}
        by_time = {}
        for name, bound in (("start", start), ("end", end)):
            if bound.kind == "time":
                asked = [TopicPartition(topic, p, bound.value) for p in partitions]
                found = consumer.offsets_for_times(asked, timeout=timeout_s)
                by_time[name] = {tp.partition: tp.offset for tp in found}
    except KafkaException as exc:
        raise RangeError(f"cannot read the offsets of {topic}: {exc.args[0]}") from exc
    ranges = []
    for p in partitions:
        low, high = watermarks[p]
        ranges.append(partition_range(
            p, start, end, low=low, high=high,
            start_for_time=by_time.get("start", {}).get(p),
            end_for_time=by_time.get("end", {}).get(p),
        ))
    return ranges


def read_ranges(consumer: Consumer, topic: str, ranges: Sequence[PartitionRange]
                ) -> Iterator[Record]:
    """Every record of every range, each partition in offset order.

    A partition is done when a record at or past its end arrives, or when the consumer
    reaches the end of the log (the end was resolved at or below the high watermark, so
    nothing in the range is still to come: compaction or transaction markers left a gap).
    """
    pending = {r.partition: r for r in ranges if r.count}
    if not pending:
        return
    consumer.assign([TopicPartition(topic, r.partition, r.start) for r in pending.values()])
    last_progress = time.monotonic()

    def finish(partition: int) -> None:
        del pending[partition]
        consumer.pause([TopicPartition(topic, partition)])

    try:
        while pending:
            batch: list[Any] = consumer.consume(500, timeout=1.0)
            if not batch and time.monotonic() - last_progress > _STALL_S:
                raise RangeError(f"no records from {topic} for {_STALL_S:.0f}s; still to read: "
                                 f"partitions {sorted(pending)}")
            for message in batch:
                last_progress = time.monotonic()
                partition = int(message.partition() or 0)
                wanted = pending.get(partition)
                if wanted is None:
                    continue
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        finish(partition)
                        continue
                    raise RangeError(f"reading {topic}[{partition}]: {error.str()}")
                offset = int(message.offset() or 0)
                if offset >= wanted.end:
                    finish(partition)
                    continue
                yield Record(partition, offset, message.key(), message.value() or b"",
                             [(k, v or b"") for k, v in message.headers() or []])
                if offset + 1 >= wanted.end:
                    finish(partition)
    finally:
        consumer.unassign()
