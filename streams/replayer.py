"""The I/O of `tidings replay`: read a range, plan each record (streams/replay.py), send.

Sends go through an idempotent producer (acks=all) to the partition each record was read
from, paced by `--rate`; a dry run reads and plans the same records and sends nothing.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, Message, Producer

from streams.bounds import Bound, PartitionRange
from streams.errors import TidingsError
from streams.ranges import (
    Record,
    partitions_of,
    range_consumer,
    read_ranges,
    resolve_ranges,
)
from streams.replay import (
    REPLAY_HEADER,
    Pacer,
    Planned,
    ReplayError,
    kind_of_topic,
    new_replay_id,
    plan_record,
)
from streams.serde import serde
from streams.settings import Settings


class ReplaySendError(TidingsError):
    """The broker did not acknowledge some replayed records."""


@dataclass
class ReplayReport:
    replay_id: str
    topic: str
    ranges: list[PartitionRange]
    read: collections.Counter[int] = field(default_factory=collections.Counter)
    sent: collections.Counter[int] = field(default_factory=collections.Counter)
    skipped: collections.Counter[str] = field(default_factory=collections.Counter)


@dataclass(frozen=True)
class ReplayRequest:
    topic: str
    start: Bound
    end: Bound
    tenant: str | None = None
    partitions: tuple[int, ...] = ()
    resend: bool = False
    dry_run: bool = False
    rate: float | None = None
    replay_id: str = field(default_factory=new_replay_id)


def replay(settings: Settings, ask: ReplayRequest,
           on_record: Callable[[Record, Planned], None] | None = None) -> ReplayReport:
    kind = kind_of_topic(ask.topic, settings.topic_prefix)
    pacer = Pacer(ask.rate)
    replay_id = ask.replay_id
    generation = replay_id if ask.resend else None
    codec = serde("NotificationRequest" if kind == "request" else "ChannelMessage")
    consumer = range_consumer(settings.kafka_bootstrap)
    producer = None if ask.dry_run else _producer(settings)
    failures: list[str] = []
    try:
        known = partitions_of(consumer, ask.topic)
        unknown = sorted(set(ask.partitions) - set(known))
        if unknown:
            raise ReplayError(f"{ask.topic} has no partition {unknown} "
                                  f"(it has {len(known)})")
        ranges = resolve_ranges(consumer, ask.topic, ask.partitions or known, ask.start,
                                ask.end)
        report = ReplayReport(replay_id, ask.topic, ranges)
        headers_added: list[tuple[str, str | bytes | None]] = [
            (REPLAY_HEADER, replay_id.encode())
        ]
        seen: set[str] = set()
        for message in read_ranges(consumer, ask.topic, ranges):
            partition = message.partition
            report.read[partition] += 1
            planned = plan_record(kind, message.value, decode=codec.decode,
                                  encode=codec.encode, tenant=ask.tenant, generation=generation,
                                  seen=seen)
            if on_record is not None:
                on_record(message, planned)
            if planned.value is None:
                report.skipped[planned.skipped or "skipped"] += 1
                continue
            report.sent[partition] += 1
            if producer is None:
                continue
            wait = pacer.delay(time.monotonic())
            if wait:
                time.sleep(wait)  # a CLI process, not an agent: nothing else waits on it
            _produce(producer, failures, topic=ask.topic, partition=partition,
                     key=message.key, value=planned.value,
                     headers=[*message.headers, *headers_added])
        if producer is not None:
            remaining = producer.flush(60)
            if remaining:
                failures.append(f"{remaining} record(s) unacknowledged after 60s")
    finally:
        consumer.close()
    if failures:
        raise ReplaySendError(f"replay {replay_id}: {len(failures)} send(s) failed: "
                              + "; ".join(failures[:5]))
    return report


def _producer(settings: Settings) -> Producer:
    return Producer({
        "bootstrap.servers": settings.kafka_bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
        "log_level": 4,
    })


def _produce(producer: Producer, failures: list[str], *, topic: str, partition: int,
             key: bytes | None, value: bytes,
             headers: list[tuple[str, str | bytes | None]]) -> None:
    def delivered(error: KafkaError | None, message: Message) -> None:
        if error is not None:
            failures.append(f"{topic}[{partition}]: {error.str()}")

    while True:
        try:
            producer.produce(topic, value=value, key=key, partition=partition, headers=headers,
                             on_delivery=delivered)
            break
        except BufferError:
            # The local queue is full: let the broker's acks drain it, then try again.
            producer.poll(0.5)
    producer.poll(0)
