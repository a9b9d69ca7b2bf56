"""Dead letters: find them, read them, and send them back to the stage that failed.

A DeadLetter (schemas/dead_letter.avsc) keeps the stage, the error class, the original
topic/partition/offset and the original key and bytes. A letter's id is where it sits on
the dead-letter topic, `<partition>:<offset>`, which is stable for as long as it is kept.

Redrive sends the original key and bytes, unchanged, to the original topic — the input of
the stage that gave up — and to the original partition, for the reason replays do
(streams/replay.py: a channel message must meet the ledger that knows its delivery id).
What happens then is the stage's decision, as the first time:

- a delivery that exhausted its retries is tried again; its attempt count is the one it
  died with, so it gets one attempt and, failing, a new letter — unless `--reset-attempts`
  starts its count again (the one change redrive makes to the bytes, and only when asked);
- a delivery that was delivered meanwhile (redriven twice, say) meets the ledger and is
  reported `duplicate`, not sent;
- a delivery to an address a provider called dead stays suppressed;
- a request that failed validation fails again unless the rule that refused it changed.

Each redriven record carries the header `tidings-redrive: <letter id>`.
"""

from __future__ import annotations

import base64
import collections
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from streams.bounds import Bound, PartitionRange
from streams.errors import SerializationError, TidingsError
from streams.ranges import partitions_of, range_consumer, read_ranges, resolve_ranges
from streams.serde import serde
from streams.settings import Settings

REDRIVE_HEADER = "tidings-redrive"


class DeadLetterError(TidingsError):
    """A letter id that cannot be read, or a redrive the broker did not acknowledge."""


@dataclass(frozen=True, slots=True)
class LetterFilter:
    """Which letters to show or redrive; every field given must match."""

    stage: str | None = None
    error_class: str | None = None
    tenant: str | None = None
    since_ms: int | None = None
    """failed_at at or after this (epoch ms)."""
    until_ms: int | None = None
    """failed_at before this (epoch ms)."""

    def matches(self, letter: Mapping[str, Any]) -> bool:
        failed_at = int(letter["failed_at"])
        return (
            (self.stage is None or letter["stage"] == self.stage)
            and (self.error_class is None or letter["error_class"] == self.error_class)
            and (self.tenant is None or letter.get("tenant_id") == self.tenant)
            and (self.since_ms is None or failed_at >= self.since_ms)
            and (self.until_ms is None or failed_at < self.until_ms)
        )


@dataclass(frozen=True, slots=True)
class Letter:
    partition: int
    offset: int
    record: dict[str, Any]

    @property
    def id(self) -> str:
        return f"{self.partition}:{self.offset}"


def parse_letter_id(text: str) -> tuple[int, int]:
    partition, sep, offset = text.partition(":")
    if not sep or not partition.isdigit() or not offset.isdigit():
        raise DeadLetterError(f"{text!r} is not a dead letter id; ids look like 3:1042 "
                              "(partition:offset, as `tidings dlq list` prints them)")
    return int(partition), int(offset)


def original_schema(topic: str, prefix: str) -> str | None:
    """The record type a stage reads from `topic`, or None for a topic we do not know."""
    if topic in (f"{prefix}.requests", f"{prefix}.dispatch"):
        return "NotificationRequest"
    if topic.startswith((f"{prefix}.channel.", f"{prefix}.retry.")):
        return "ChannelMessage"
    return None


def decode_original(letter: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """The original bytes, decoded where they can be: `{"schema", "record"}`, or
    `{"undecodable", "bytes_hex"}` naming why not and showing the first bytes."""
    raw = bytes(letter["original_bytes"])
    expected = original_schema(letter["original_topic"], prefix)
    candidates = [expected] if expected else ["NotificationRequest", "ChannelMessage"]
    problems = []
    for name in candidates:
        try:
            return {"schema": name, "record": serde(name).decode(raw)}
        except SerializationError as exc:
            problems.append(f"{name}: {exc}")
    return {"undecodable": "; ".join(problems), "bytes_hex": raw[:256].hex(),
            "length": len(raw)}


def printable(letter: Letter, prefix: str, *, with_original: bool) -> dict[str, Any]:
    """A letter as JSON-ready data: bytes as base64, times as ISO 8601 as well."""
    record = dict(letter.record)
    key = record.get("original_key")
    record["original_key"] = _text_or_base64(key) if key is not None else None
    record["original_bytes"] = base64.b64encode(bytes(record["original_bytes"])).decode()
    record["failed_at_iso"] = iso(int(record["failed_at"]))
    out: dict[str, Any] = {"id": letter.id, **record}
    if with_original:
        out["original"] = decode_original(letter.record, prefix)
    return out


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


def _text_or_base64(raw: bytes) -> str:
    try:
        return bytes(raw).decode()
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(bytes(raw)).decode()


def redrive_value(letter: Mapping[str, Any], prefix: str, *, reset_attempts: bool = False
                  ) -> bytes:
    """The bytes a redrive sends: the original ones; with `reset_attempts`, a channel
    message's attempt count and due time start again, so it gets every retry tier anew."""
    raw = bytes(letter["original_bytes"])
    if not reset_attempts:
        return raw
    if original_schema(letter["original_topic"], prefix) != "ChannelMessage":
        return raw  # only deliveries count attempts
    codec = serde("ChannelMessage")
    try:
        message = codec.decode(raw)
    except SerializationError as exc:
        raise DeadLetterError(f"cannot reset the attempts of an undecodable message: {exc}"
                              ) from exc
    message.update(attempt=0, not_before=0)
    return codec.encode(message)


# -- Kafka -------------------------------------------------------------------------------


def read_letters(settings: Settings, letter_filter: LetterFilter,
                 ids: Sequence[str] = ()) -> list[Letter]:
    """The letters matching `letter_filter`; only those named when `ids` are given.

    Without ids the topic is read from the first record written at or after `since` (a
    letter's record is written after its failed_at, so none is missed) to the end.
    """
    topic = settings.topic("deadletter")
    codec = serde("DeadLetter")
    consumer = range_consumer(settings.kafka_bootstrap)
    try:
        partitions = partitions_of(consumer, topic)
        if ids:
            wanted = [parse_letter_id(i) for i in ids]
            missing = [f"{p}:{o}" for p, o in wanted if p not in partitions]
            if missing:
                raise DeadLetterError(f"no dead letter {', '.join(missing)}: {topic} has "
                                      f"partitions 0-{max(partitions)}")
            ranges = [PartitionRange(p, o, o + 1) for p, o in sorted(set(wanted))]
        else:
            start = (Bound("time", letter_filter.since_ms) if letter_filter.since_ms is not None
                     else Bound("earliest"))
            ranges = resolve_ranges(consumer, topic, partitions, start, Bound("latest"))
        letters = []
        for message in read_ranges(consumer, topic, ranges):
            try:
                record = codec.decode(message.value)
            except SerializationError:
                continue  # not a DeadLetter: nothing to show or redrive
            if letter_filter.matches(record):
                letters.append(Letter(message.partition, message.offset, record))
    finally:
        consumer.close()
    if ids:
        found = {letter.id for letter in letters}
        absent = [i for i in ids if i not in found]
        if absent:
            raise DeadLetterError(f"no dead letter {', '.join(absent)} on {topic} "
                                  "(expired, or filtered out)")
    return letters


@dataclass
class RedriveReport:
    sent: collections.Counter[str] = field(default_factory=collections.Counter)
    """Letters sent, by the topic they went back to."""
    skipped: dict[str, str] = field(default_factory=dict)
    """Letter id → why it was not sent."""


def redrive(settings: Settings, letters: Iterable[Letter], *, dry_run: bool = False,
            reset_attempts: bool = False) -> RedriveReport:
    report = RedriveReport()
    failures: list[str] = []
    consumer = range_consumer(settings.kafka_bootstrap)
    producer = None if dry_run else Producer({
        "bootstrap.servers": settings.kafka_bootstrap, "enable.idempotence": True,
        "acks": "all", "log_level": 4,
    })

    def delivered(error: KafkaError | None, message: Message) -> None:
        if error is not None:
            failures.append(f"{message.topic()}: {error.str()}")

    known: dict[str, list[int]] = {}
    try:
        for letter in letters:
            topic = letter.record["original_topic"]
            if topic not in known:
                try:
                    known[topic] = partitions_of(consumer, topic)
                except TidingsError as exc:
                    known[topic] = []
                    report.skipped[letter.id] = str(exc)
            if not known[topic]:
                report.skipped.setdefault(letter.id, f"unknown topic {topic!r}")
                continue
            try:
                value = redrive_value(letter.record, settings.topic_prefix,
                                      reset_attempts=reset_attempts)
            except DeadLetterError as exc:
                report.skipped[letter.id] = str(exc)
                continue
            report.sent[topic] += 1
            if producer is None:
                continue
            partition = letter.record["original_partition"]
            extra = {"partition": partition} if partition in known[topic] else {}
            producer.produce(
                topic, value=value,
                key=letter.record.get("original_key"),
                headers=[(REDRIVE_HEADER, letter.id.encode())], on_delivery=delivered, **extra,
            )
            producer.poll(0)
        if producer is not None and producer.flush(60):
            failures.append("some records unacknowledged after 60s")
    finally:
        consumer.close()
    if failures:
        raise DeadLetterError(f"redrive: {len(failures)} send(s) failed: "
                              + "; ".join(failures[:5]))
    return report
