"""Requests the runaway guard held: list them, and release them back into the pipeline.

The guard (agents/runaway.py) writes a held request's original bytes to `<prefix>.hold`, on
the partition number the request had on `<prefix>.requests`. Releasing re-publishes a
tenant's held requests to that same requests partition with the header
`tidings-released: operator|auto`, which the guard lets through uncounted; the dedup stage
passes them because they carry their original notification id (agents/dedup.py).

What has been released is recorded on the compacted topic `<prefix>.hold-releases`, one
record per tenant and hold partition: `{"offset": next offset not yet released, ...}`. A
tenant's held requests are the records of its own on the hold topic from those offsets on.
Two releases that race (an operator and the guard's own release when the rate normalises)
may both re-publish a request; the delivered ledger stops the second delivery, as for any
replay.

This runs outside the worker (`tidings hold`) and inside it (the guard's automatic release,
in a thread), so it uses confluent-kafka's blocking client.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from streams.errors import TidingsError
from streams.requests import now_ms
from streams.settings import Settings
from streams.topic_reader import read_to_end

RELEASED_HEADER = "tidings-released"
RELEASED_BY = ("operator", "auto")


class HoldError(TidingsError):
    """Held requests could not be re-published, or their release not recorded."""


@dataclass(frozen=True, slots=True)
class HeldRequest:
    tenant_id: str
    partition: int
    offset: int
    key: bytes
    value: bytes
    held_at_ms: int


def tenant_of(key: bytes | None) -> str:
    """Requests are keyed `tenant/user`; tenant ids cannot contain `/` (streams/requests.py)."""
    return (key or b"").decode(errors="replace").partition("/")[0]


def _partitions(settings: Settings) -> range:
    return range(settings.partitions)


def released_offsets(settings: Settings) -> dict[tuple[str, int], int]:
    """(tenant, hold partition) → the first offset not released yet."""
    offsets: dict[tuple[str, int], int] = {}
    for message in read_to_end(settings, settings.topic("hold-releases"),
                         dict.fromkeys(_partitions(settings), 0)):
        tenant, _, partition = (message.key() or b"").decode().rpartition("/")
        if message.value() is None:
            continue
        offsets[(tenant, int(partition))] = int(orjson.loads(message.value())["offset"])
    return offsets


def held(settings: Settings, tenant_id: str | None = None,
         partitions: Iterable[int] | None = None) -> list[HeldRequest]:
    """The requests held and not released yet (of one tenant, or of all), by partition and
    offset."""
    marks = released_offsets(settings)
    wanted = list(partitions) if partitions is not None else list(_partitions(settings))
    # One tenant's from its release mark; every tenant's from the start (a tenant without a
    # mark on a partition has nothing released there).
    starts = {p: marks.get((tenant_id, p), 0) if tenant_id is not None else 0 for p in wanted}
    found = []
    for message in read_to_end(settings, settings.topic("hold"), starts):
        tenant = tenant_of(message.key())
        p, offset = message.partition(), message.offset()
        if tenant_id is not None and tenant != tenant_id:
            continue
        if offset < marks.get((tenant, p), 0):
            continue
        found.append(HeldRequest(tenant, p, offset, message.key() or b"", message.value() or b"",
                                 message.timestamp()[1]))
    return sorted(found, key=lambda h: (h.partition, h.offset))


def release(settings: Settings, tenant_id: str, *, by: str = "operator",
            partitions: Iterable[int] | None = None) -> list[HeldRequest]:
    """Re-publish a tenant's held requests to the requests topic; record what was released."""
    from confluent_kafka import KafkaException, Producer

    if by not in RELEASED_BY:
        raise HoldError(f"released by {by!r}; expected one of {list(RELEASED_BY)}")
    requests = held(settings, tenant_id, partitions)
    if not requests:
        return []
    errors: list[str] = []

    def on_delivery(error: Any, message: Any) -> None:
        if error is not None:
            errors.append(error.str())

    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap,
                         "enable.idempotence": True, "acks": "all", "log_level": 4})
    try:
        for request in requests:
            producer.produce(settings.topic("requests"), key=request.key, value=request.value,
                             partition=request.partition, on_delivery=on_delivery,
                             headers=[(RELEASED_HEADER, by.encode())])
            producer.poll(0)
        producer.flush(30)
        if errors:  # not recorded as released: a later release sends them again
            raise HoldError(f"re-publishing held requests: {'; '.join(errors[:3])}")
        last: dict[int, int] = {}
        for request in requests:
            last[request.partition] = max(last.get(request.partition, -1), request.offset)
        for partition, offset in last.items():
            mark = {"offset": offset + 1, "released_at": now_ms(), "by": by}
            producer.produce(settings.topic("hold-releases"),
                             key=f"{tenant_id}/{partition}".encode(), value=orjson.dumps(mark),
                             on_delivery=on_delivery)
        producer.flush(30)
    except KafkaException as exc:
        raise HoldError(f"releasing held requests: {exc}") from exc
    if errors:
        raise HoldError(f"recording the release: {'; '.join(errors[:3])}")
    return requests
