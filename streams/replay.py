"""Replay: re-publish a range of a topic for reprocessing — the decisions, without Kafka.

`tidings replay` reads a range (streams/bounds.py, streams/ranges.py) and sends each record
back to the same topic and partition (streams/replayer.py). What happens downstream:

- **Requests** (`<prefix>.requests`, `.dispatch`) go through intake again. The dedup window
  does not drop them: a request read again carries the notification id its idempotency key
  was first seen with, and `DedupWindow.is_duplicate` only drops a *different* id under the
  same key — so a replay reproduces the original decision (a request that was a duplicate
  is a duplicate again) and does not move the window (`DedupWindow.remember` keeps the
  first sighting's time). Routing gives each delivery its stable id, and the delivered
  ledger answers `duplicate` ("already delivered") for every one already sent: only what was
  never delivered (dropped by a bug since fixed, say) goes out.
- **Channel messages** (`<prefix>.channel.<name>`) carry their delivery id and meet the
  ledger directly.
- **`--resend`** sends again what was delivered. The replay id becomes a *generation*: in a
  request it is written to `metadata["tidings.resend"]`, and routing folds it into every
  delivery id (`redelivery_id`); in a channel message the delivery id is replaced the same
  way and the attempt count starts again. New ids are not in the ledger, so they are
  delivered — and receivers see a new `webhook-id`, Message-ID, ..., which is the point: a
  receiver that de-duplicates on the id would otherwise drop the resend. The notification id
  stays, so dedup still passes the request and every status stays on one timeline.

Replays go to the partition they were read from, not through a partitioner: the publisher
(librdkafka, CRC32) and the workers (aiokafka, murmur2) hash keys differently, and a
channel message must come back to the partition whose ledger knows its delivery id.

Every replayed record gets the header `tidings-replay: <replay id>` for the audit trail.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from streams.errors import SerializationError, TidingsError

REPLAY_HEADER = "tidings-replay"
RESEND_KEY = "tidings.resend"
"""Metadata key of a request or channel message resent by a replay; the value is its id."""

RecordKind = Literal["request", "message"]

# A fixed namespace for uuid5 (RFC 9562 §5.5), apart from the one of first delivery ids.
_REDELIVERY_NAMESPACE = uuid.UUID("0b6f5c1e-2f4e-4d8a-9a51-3c7d2e9b8f64")


class ReplayError(TidingsError):
    """A replay that cannot be done as asked (a topic that holds no work, a bad rate)."""


def new_replay_id() -> str:
    return f"rpl_{secrets.token_hex(6)}"


def redelivery_id(delivery_id: str, generation: str) -> str:
    """The delivery id of `delivery_id` resent under replay `generation`: stable (the same
    replay read twice gives the same id, so the ledger still stops *its* repeats) and new."""
    return f"dlv_{uuid.uuid5(_REDELIVERY_NAMESPACE, f'{delivery_id}/{generation}').hex}"


def generation_of(record: Mapping[str, Any]) -> str | None:
    """The replay generation a request or channel message was resent under, if any."""
    return (record.get("metadata") or {}).get(RESEND_KEY)


def kind_of_topic(topic: str, prefix: str) -> RecordKind:
    """What the records of `topic` are; only topics that hold work can be replayed."""
    if topic in (f"{prefix}.requests", f"{prefix}.dispatch"):
        return "request"
    if topic.startswith(f"{prefix}.channel."):
        return "message"
    raise ReplayError(
        f"{topic} cannot be replayed: replay the requests, dispatch or a channel topic "
        f"({prefix}.requests, {prefix}.dispatch, {prefix}.channel.<name>); statuses are a record "
        "of what happened, and dead letters go back with `tidings dlq redrive`"
    )


def topic_name(name: str, prefix: str) -> str:
    """`requests` → `<prefix>.requests`; a full name is kept as it is."""
    return name if name.startswith(f"{prefix}.") else f"{prefix}.{name}"


@dataclass(frozen=True, slots=True)
class Planned:
    """What the replay does with one record read: send `value`, or skip it and say why."""

    value: bytes | None
    skipped: str | None = None
    tenant_id: str | None = None
    notification_id: str | None = None
    delivery_id: str | None = None
    """The message's delivery id as it will be sent (after --resend); None for requests."""


def plan_record(
    kind: RecordKind,
    value: bytes,
    *,
    decode: Callable[[bytes], dict[str, Any]],
    encode: Callable[[dict[str, Any]], bytes],
    tenant: str | None = None,
    generation: str | None = None,
    seen: set[str] | None = None,
) -> Planned:
    """Decide one record: skipped (another tenant, unreadable where reading is needed, or a
    repeat of one already planned in `seen`), sent unchanged, or — with a resend
    `generation` — re-encoded under new delivery ids.

    A range can hold the same work twice (the original and an earlier replay of it). Both
    would carry the same delivery ids, and the deliver stage runs several sends at once, so
    two copies in flight together could both pass the ledger check before either is
    recorded: each piece of work is replayed once.
    """
    try:
        record = decode(value)
    except SerializationError:
        if tenant is not None or generation is not None:
            return Planned(None, skipped="undecodable")
        # Reprocessing means reprocessing: the stage dead-letters it again, as it did before.
        return Planned(value)
    tenant_id, notification_id = record.get("tenant_id"), record.get("notification_id")
    if tenant is not None and tenant_id != tenant:
        return Planned(None, skipped="other tenant", tenant_id=tenant_id,
                       notification_id=notification_id)
    if seen is not None:
        identity = _identity(kind, record)
        if identity in seen:
            return Planned(None, skipped="repeat in range", tenant_id=tenant_id,
                           notification_id=notification_id)
        seen.add(identity)
    if generation is not None:
        record["metadata"] = {**(record.get("metadata") or {}), RESEND_KEY: generation}
        if kind == "message":
            record["delivery_id"] = redelivery_id(record["delivery_id"], generation)
            record.update(attempt=0, not_before=0, last_error=None)
        value = encode(record)
    return Planned(value, tenant_id=tenant_id, notification_id=notification_id,
                   delivery_id=record.get("delivery_id") if kind == "message" else None)


def _identity(kind: RecordKind, record: Mapping[str, Any]) -> str:
    """What makes two records the same work: a message's delivery id; a request's
    notification id and recipients (the dispatch topic holds one record per recipient)."""
    if kind == "message":
        return str(record["delivery_id"])
    users = ",".join(str(r.get("user_id")) for r in record.get("recipients") or [])
    return f"{record.get('notification_id')}/{users}"


def check_rate(rate: float | None) -> None:
    if rate is not None and rate <= 0:
        raise ReplayError(f"--rate must be more than 0 records per second (got {rate:g})")


class Pacer:
    """Spaces sends `1 / rate` seconds apart (a GCRA with a burst of one second's worth).

    Send n is due at `start + n / rate`, so the pace holds whatever one send took; after a
    stall, at most one second of credit is kept, so catching up never floods the topic.
    """

    def __init__(self, rate: float | None) -> None:
        check_rate(rate)
        self._interval = 1.0 / rate if rate else 0.0
        self._due: float | None = None

    def delay(self, now: float) -> float:
        """Seconds to wait, from `now` (a monotonic clock), before the next send."""
        if not self._interval:
            return 0.0
        if self._due is None:
            self._due = now
        elif self._due < now - 1.0:
            self._due = now - 1.0
        wait = max(0.0, self._due - now)
        self._due += self._interval
        return wait
