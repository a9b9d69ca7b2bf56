"""Read a topic from given offsets up to its end as it is now: for commands that look back
at what happened (`tidings hold`, `tidings insights`), outside the worker."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Iterator
from typing import Any

from streams.errors import TidingsError
from streams.settings import Settings


class TopicReadError(TidingsError):
    """A topic could not be read to its end."""


def _consumer(settings: Settings) -> Any:
    from confluent_kafka import Consumer

    return Consumer({
        "bootstrap.servers": settings.kafka_bootstrap,
        "group.id": f"tidings-reader-{secrets.token_hex(4)}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "log_level": 4,
    })


def offsets_at(settings: Settings, topic: str, partitions: Iterable[int], at_ms: int,
               timeout_s: float = 30.0) -> dict[int, int]:
    """The first offset of each partition whose record timestamp is at or after `at_ms`."""
    from confluent_kafka import KafkaException, TopicPartition

    consumer = _consumer(settings)
    try:
        found = consumer.offsets_for_times(
            [TopicPartition(topic, p, max(0, at_ms)) for p in partitions], timeout=timeout_s)
    except KafkaException as exc:
        raise TopicReadError(f"looking up offsets of {topic}: {exc}") from exc
    finally:
        consumer.close()
    # -1: no record that recent; start at the end (nothing to read).
    return {tp.partition: tp.offset if tp.offset >= 0 else 2**62 for tp in found}


def watermarks(consumer: Any, partition: Any, timeout_s: float) -> tuple[int, int]:
    """A partition's low and high watermarks, waiting out a leader that is not ready yet.

    Right after a topic is created its broker may answer NOT_LEADER_OR_FOLLOWER for a moment,
    even though the metadata already names it the leader; that error is retriable.
    """
    from confluent_kafka import KafkaError, KafkaException

    not_ready = {KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
                 KafkaError.UNKNOWN_TOPIC_OR_PART}
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            low, high = consumer.get_watermark_offsets(partition, timeout=timeout_s)
            return int(low), int(high)
        except KafkaException as exc:
            error = exc.args[0]
            if (error.code() not in not_ready and not error.retriable()) \
                    or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def read_to_end(settings: Settings, topic: str, starts: dict[int, int],
                timeout_s: float = 30.0) -> Iterator[Any]:
    """Every record of `topic` from the given offset of each partition up to its end now."""
    from confluent_kafka import KafkaException, TopicPartition

    consumer = _consumer(settings)
    try:
        ends = {}
        for partition, start in starts.items():
            low, high = watermarks(consumer, TopicPartition(topic, partition), timeout_s)
            if high > max(start, low):
                ends[partition] = high
        if not ends:
            return
        consumer.assign([TopicPartition(topic, p, max(starts[p], 0)) for p in ends])
        done: set[int] = set()
        deadline = time.monotonic() + timeout_s
        while len(done) < len(ends):
            # consume() waits for the whole batch or the timeout: short polls, one deadline.
            batch = consumer.consume(num_messages=500, timeout=0.2)
            if batch:
                deadline = time.monotonic() + timeout_s
            elif time.monotonic() > deadline:
                raise TopicReadError(f"reading {topic}: no records within {timeout_s}s")
            for message in batch:
                if message.error():
                    raise TopicReadError(f"reading {topic}: {message.error().str()}")
                partition, offset = message.partition(), message.offset()
                if partition in done or offset >= ends[partition]:
                    continue
                if offset >= ends[partition] - 1:
                    done.add(partition)
                yield message
    except KafkaException as exc:
        raise TopicReadError(f"reading {topic}: {exc}") from exc
    finally:
        consumer.close()
