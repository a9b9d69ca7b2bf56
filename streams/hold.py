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

import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from streams.errors import TidingsError
from streams.requests import now_ms
from streams.settings import Settings

RELEASED_HEADER = "tidings-released"
RELEASED_BY = ("operator", "auto")


class HoldError(TidingsError):
    """The hold topic or its release record could not be read or written."""


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


def _consumer(settings: Settings) -> Any:
    from confluent_kafka import Consumer

    return Consumer({
        "bootstrap.servers": settings.kafka_bootstrap,
        "group.id": f"tidings-hold-{secrets.token_hex(4)}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "log_level": 4,
    })


def _read(settings: Settings, topic: str, starts: dict[int, int], timeout_s: float = 30.0
          ) -> Iterator[Any]:
    """Every record of `topic` from the given offset of each partition up to its end now."""
    from confluent_kafka import KafkaException, TopicPartition

    consumer = _consumer(settings)
    try:
        ends = {}
        for partition, start in starts.items():
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                       timeout=timeout_s)
            if high > max(start, low):
                ends[partition] = high
        if not ends:
            return
        consumer.assign([TopicPartition(topic, p, max(starts[p], 0)) for p in ends])
        done: set[int] = set()
        while len(done) < len(ends):
            batch = consumer.consume(num_messages=500, timeout=timeout_s)
            if not batch:
                raise HoldError(f"reading {topic}: no records within {timeout_s}s")
            for message in batch:
                if message.error():
                    raise HoldError(f"reading {topic}: {message.error().str()}")
                partition, offset = message.partition(), message.offset()
                if partition in done:
                    continue
                if offset >= ends[partition] - 1:
                    done.add(partition)
                if offset < ends[partition]:
                    yield message
    except KafkaException as exc:
        raise HoldError(f"reading {topic}: {exc}") from exc
    finally:
        consumer.close()


def _partitions(settings: Settings) -> range:
    return range(settings.partitions)


def released_offsets(settings: Settings) -> dict[tuple[str, int], int]:
    """(tenant, hold partition) → the first offset not released yet."""
    offsets: dict[tuple[str, int], int] = {}
    for message in _read(settings, settings.topic("hold-releases"),
                         dict.fromkeys(_partitions(settings), 0)):
        tenant, _, partition = (message.key() or b"").decode().rpartition("/")
        if message.value() is None:
            continue
        offsets[(tenant, int(partition))] = int(orjson.loads(message.value())["offset"])
    return offsets


def held(settings: Settings, tenant_id: str | None = None,
         partitions: Iterable[int] | None = None) -> list[HeldRequest]:
    """The requests held and not released yet (of one tenant, or of all)."""
    marks = released_offsets(settings)
    wanted = list(partitions) if partitions is not None else list(_partitions(settings))
    starts = {}
    for p in wanted:
        tenants = [t for (t, q) in marks if q == p]
        if tenant_id is not None:
            starts[p] = marks.get((tenant_id, p), 0)
        else:  # from the oldest unreleased record of any tenant
            starts[p] = 0 if not tenants else min(marks[(t, p)] for t in tenants)
    found = []
    for message in _read(settings, settings.topic("hold"), starts):
        tenant = tenant_of(message.key())
        p, offset = message.partition(), message.offset()
        if tenant_id is not None and tenant != tenant_id:
            continue
        if offset < marks.get((tenant, p), 0):
            continue
        found.append(HeldRequest(tenant, p, offset, message.key() or b"", message.value() or b"",
                                 message.timestamp()[1]))
    return found


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
