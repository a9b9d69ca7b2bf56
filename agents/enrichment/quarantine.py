"""The quarantine topic: notifications held back because their spam score is over the
tenant's threshold, and the operator's `list` and `release`.

A quarantined notification is its single-recipient NotificationRequest, unchanged but for
metadata naming the score and the reasons, keyed `tenant/notification/user` on the
compacted `<prefix>.quarantine` topic. Release re-publishes it to the dispatch topic (so it
skips intake's dedup, which has already seen it) with metadata `tidings.spam_released` =
"true", which lets it past the spam check, and then writes a tombstone for its key, so the
compacted topic forgets it and `list` no longer shows it. Release publishes before it
deletes: a crash between the two leaves the notification listed (release it again; the
delivered ledger stops a second send), never lost.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from agents.route import recipient_key
from streams.errors import TidingsError
from streams.records import status_record
from streams.requests import now_ms
from streams.serde import serde
from streams.settings import Settings

SCORE = "tidings.spam_score"
REASONS = "tidings.spam_reasons"
QUARANTINED_AT = "tidings.quarantined_at"
RELEASED = "tidings.spam_released"


class QuarantineError(TidingsError):
    """Reading or writing the quarantine topic failed."""


def quarantine_key(request: Mapping[str, Any]) -> bytes:
    user = request["recipients"][0]["user_id"]
    return f"{request['tenant_id']}/{request['notification_id']}/{user}".encode()


def quarantined(request: Mapping[str, Any], score: float, reasons: Iterable[str]
                ) -> dict[str, Any]:
    """The record for the quarantine topic: the request with the verdict in its metadata."""
    held = dict(request)
    held["metadata"] = {
        **(request.get("metadata") or {}),
        SCORE: f"{score:.3f}",
        REASONS: "; ".join(reasons),
        QUARANTINED_AT: str(now_ms()),
    }
    return held


def released(request: Mapping[str, Any]) -> dict[str, Any]:
    """The request as release re-publishes it: marked to pass the spam check."""
    out = dict(request)
    out["metadata"] = {**(request.get("metadata") or {}), RELEASED: "true"}
    return out


def is_released(request: Mapping[str, Any]) -> bool:
    return (request.get("metadata") or {}).get(RELEASED) == "true"


@dataclass(frozen=True, slots=True)
class Held:
    key: bytes
    request: dict[str, Any]

    @property
    def notification_id(self) -> str:
        return str(self.request["notification_id"])

    def summary(self) -> dict[str, Any]:
        metadata = self.request.get("metadata") or {}
        return {
            "notification_id": self.notification_id,
            "tenant_id": self.request["tenant_id"],
            "user_id": self.request["recipients"][0]["user_id"],
            "spam_score": float(metadata.get(SCORE, "nan")),
            "reasons": [r for r in metadata.get(REASONS, "").split("; ") if r],
            "title": self.request.get("title"),
            "quarantined_at": int(metadata.get(QUARANTINED_AT, "0")),
        }


def list_held(settings: Settings, timeout_s: float = 30.0) -> list[Held]:
    """Every notification on the quarantine topic that was not released, oldest first."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    topic = settings.topic("quarantine")
    decode = serde("NotificationRequest").decode
    consumer = Consumer({
        "bootstrap.servers": settings.kafka_bootstrap,
        "group.id": f"tidings-quarantine-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "log_level": 4,
    })
    latest: dict[bytes, dict[str, Any] | None] = {}
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if metadata is None or metadata.error is not None:
            raise QuarantineError(f"topic {topic} does not exist (run `tidings topics create`)")
        remaining: dict[int, int] = {}
        assignment = []
        for partition in metadata.partitions:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=timeout_s)
            if high > low:
                remaining[partition] = high
                assignment.append(TopicPartition(topic, partition, low))
        consumer.assign(assignment)
        deadline = now_ms() + int(timeout_s * 1000)
        while remaining and now_ms() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            value, partition = message.value(), message.partition() or 0
            latest[message.key() or b""] = decode(value) if value else None
            if (message.offset() or 0) + 1 >= remaining.get(partition, 0):
                remaining.pop(partition, None)
        if remaining:
            raise QuarantineError(f"timed out reading {topic}")
    except KafkaException as exc:
        raise QuarantineError(f"reading {topic}: {exc}") from exc
    finally:
        consumer.close()
    held = [Held(key, request) for key, request in latest.items() if request is not None]
    return sorted(held, key=lambda h: h.summary()["quarantined_at"])


def release(settings: Settings, held: Iterable[Held], timeout_s: float = 30.0) -> int:
    """Re-publish each to the dispatch topic, record `released`, then tombstone it."""
    from confluent_kafka import KafkaException, Producer

    requests, statuses = serde("NotificationRequest"), serde("DeliveryStatus")
    producer = Producer({
        "bootstrap.servers": settings.kafka_bootstrap, "acks": "all",
        "enable.idempotence": True, "log_level": 4,
        # The worker (aiokafka) places keys with Java's murmur2 partitioner; librdkafka's
        # default is CRC32. The tombstone must land on its record's partition, and the
        # re-published request where the dispatch stage's own writes for that key go.
        "partitioner": "murmur2_random",
    })
    errors: list[str] = []

    def on_delivery(error: Any, _message: Any) -> None:
        if error is not None:
            errors.append(str(error))

    count = 0
    try:
        for item in held:
            request = released(item.request)
            user = request["recipients"][0]["user_id"]
            producer.produce(settings.topic("dispatch"), requests.encode(request),
                             recipient_key(request["tenant_id"], user), on_delivery=on_delivery)
            status = status_record(request, "released", reason="released from quarantine")
            producer.produce(settings.topic("status"), statuses.encode(status),
                             request["notification_id"].encode(), on_delivery=on_delivery)
            if producer.flush(timeout_s) or errors:
                raise QuarantineError(f"releasing {item.notification_id}: "
                                      f"{errors or 'not acknowledged in time'}")
            producer.produce(settings.topic("quarantine"), None, item.key,
                             on_delivery=on_delivery)
            count += 1
        if producer.flush(timeout_s) or errors:
            raise QuarantineError(f"removing released notifications from the quarantine: "
                                  f"{errors or 'not acknowledged in time'}")
    except KafkaException as exc:
        raise QuarantineError(f"releasing: {exc}") from exc
    return count
