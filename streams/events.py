"""Domain events: what services publish so that rules can turn them into notifications.

    with EventPublisher(load_settings()) as events:
        event_id = events.publish({"tenant_id": "acme", "event_type": "order.shipped",
                                   "subject_id": "order-17", "payload": {"total": "42.00"}})

An event is checked and encoded before anything is sent: a bad one raises `ValidationError`
naming the field, and nothing reaches Kafka. Events are keyed `tenant/subject_id`, so one
subject's events stay in order while a tenant's events spread over every partition.

The payload is a flat map of strings (the schema's `map<string,string>`), not a JSON string:
it is the same shape as NotificationRequest.data, so it becomes the notification's data (the
template context) unchanged, Avro checks it, and no stage parses JSON. Numbers and booleans
given here are accepted as text; CEL conditions convert (`int(payload.total) > 100`).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any

from streams.errors import ValidationError
from streams.keyed import KeyedProducer
from streams.requests import now_ms
from streams.serde import serde
from streams.settings import Settings
from streams.tracing import publish_span

__all__ = ["EventPublisher", "event_key", "normalize_event"]

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@\-]{0,127}$")
_EVENT_TYPE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")
_FIELDS = {"event_id", "tenant_id", "event_type", "subject_id", "occurred_at", "payload",
           "metadata"}
MAX_PAYLOAD_KEYS = 256
MAX_VALUE_CHARS = 16 * 1024


def _flat_strings(value: Any, field: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValidationError(f"{field} must be an object of strings", field=field)
    if len(value) > MAX_PAYLOAD_KEYS:
        raise ValidationError(f"{field} has more than {MAX_PAYLOAD_KEYS} keys", field=field)
    out = {}
    for key, item in value.items():
        if not isinstance(key, str) or not key:
            raise ValidationError(f"{field} keys must be non-empty strings", field=field)
        if isinstance(item, bool):
            item = "true" if item else "false"
        elif isinstance(item, int | float):
            item = str(item)
        elif not isinstance(item, str):
            raise ValidationError(
                f"{field}.{key} must be a string, number or boolean (the payload is flat: "
                f"map<string,string>); got {type(item).__name__}",
                field=f"{field}.{key}",
            )
        if len(item) > MAX_VALUE_CHARS:
            raise ValidationError(f"{field}.{key} is longer than {MAX_VALUE_CHARS} chars",
                                  field=f"{field}.{key}")
        out[key] = item
    return out


def normalize_event(raw: Mapping[str, Any], *, now: int | None = None) -> dict[str, Any]:
    """Fill defaults (a fresh event_id, occurred_at = now) and check every field."""
    if not isinstance(raw, Mapping):
        raise ValidationError("a domain event must be a JSON object")
    unknown = sorted(set(raw) - _FIELDS)
    if unknown:
        raise ValidationError(f"unknown fields {unknown}", field=unknown[0])
    event = {
        "event_id": raw.get("event_id") or f"evt_{uuid.uuid4().hex}",
        "tenant_id": raw.get("tenant_id"),
        "event_type": raw.get("event_type"),
        "subject_id": raw.get("subject_id"),
        "occurred_at": raw.get("occurred_at") if raw.get("occurred_at") is not None
        else (now if now is not None else now_ms()),
        "payload": _flat_strings(raw.get("payload"), "payload"),
        "metadata": _flat_strings(raw.get("metadata"), "metadata"),
    }
    for field in ("event_id", "tenant_id", "subject_id"):
        value = event[field]
        if not isinstance(value, str) or not _ID.match(value):
            raise ValidationError(
                f"{field} must be 1-128 characters of letters, digits and ._:@- "
                f"(got {value!r:.60})", field=field)
    event_type = event["event_type"]
    if not isinstance(event_type, str) or len(event_type) > 128 or not _EVENT_TYPE.match(
            event_type):
        raise ValidationError(
            f"event_type must be dotted lower-case words like order.shipped (got "
            f"{event_type!r:.60})", field="event_type")
    occurred = event["occurred_at"]
    if isinstance(occurred, bool) or not isinstance(occurred, int) or occurred < 0:
        raise ValidationError("occurred_at must be epoch milliseconds", field="occurred_at")
    return event


def event_key(event: Mapping[str, Any]) -> bytes:
    return f"{event['tenant_id']}/{event['subject_id']}".encode()


class EventPublisher:
    """Idempotent producer (acks=all) of DomainEvents to `<prefix>.events`."""

    def __init__(self, settings: Settings) -> None:
        self._topic = settings.topic("events")
        self._serde = serde("DomainEvent")
        self._producer = KeyedProducer(settings)

    def send(self, event: Mapping[str, Any]) -> str:
        """Check, encode and enqueue one event; `flush` waits for the broker's ack."""
        record = normalize_event(event)
        # The trace of every notification a rule makes of this event starts here; its
        # context rides in the record's headers to the rules stage and on.
        with publish_span(record) as trace_headers:
            self._producer.send(self._topic, event_key(record), self._serde.encode(record),
                                headers=list(trace_headers))
        return str(record["event_id"])

    def flush(self, timeout_s: float = 30.0) -> None:
        self._producer.flush(timeout_s)

    def publish(self, event: Mapping[str, Any]) -> str:
        """Send one event; return its id once the broker acknowledged it."""
        event_id = self.send(event)
        self.flush()
        return event_id

    def publish_many(self, events: Iterable[Mapping[str, Any]]) -> list[str]:
        """Check every event first (nothing is sent if one is bad), then send all."""
        records = [normalize_event(e) for e in events]
        ids = [self.send(r) for r in records]
        self.flush()
        return ids

    def __enter__(self) -> EventPublisher:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.flush()
