"""The API replica's local view of two topics, in RocksDB (rocksdict, raw bytes).

Keys::

    s/<notification id>/<partition:04>/<offset:020>  → a DeliveryStatus (JSON), one per record
    i/<tenant>/<idempotency key>                     → an IdempotencyRecord (JSON)
    n/<notification id>                              → the tenant that owns it
    o/<topic>/<partition>                            → the next offset to read

A batch of records and the offsets after it are written in one RocksDB write batch, so a
crash never applies a record twice or skips one: the store restarts exactly where it
stopped. A status's key is its position on the topic, so the timeline needs no
read-modify-write and a prefix scan returns it in log order.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
from rocksdict import Options, Rdict, WriteBatch

from streams.api.idempotency import record_key


class StatusStore:
    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self._db = Rdict(str(path), options=Options(raw_mode=True))

    def close(self) -> None:
        self._db.close()

    # -- reads ---------------------------------------------------------------------------

    def next_offset(self, topic: str, partition: int) -> int | None:
        raw = self._db.get(f"o/{topic}/{partition}".encode())
        return int(raw) if raw is not None else None

    def idempotency(self, tenant_id: str, idempotency_key: str) -> dict[str, Any] | None:
        raw = self._db.get(f"i/{record_key(tenant_id, idempotency_key)}".encode())
        return orjson.loads(raw) if raw is not None else None

    def owner(self, notification_id: str) -> str | None:
        raw = self._db.get(f"n/{notification_id}".encode())
        return raw.decode() if raw is not None else None

    def timeline(self, notification_id: str) -> list[dict[str, Any]]:
        """Every status of the notification, in the order the status topic holds them."""
        prefix = f"s/{notification_id}/".encode()
        statuses = []
        for key, value in self._db.items(from_key=prefix):
            if not isinstance(key, bytes) or not key.startswith(prefix):
                break
            statuses.append(orjson.loads(value))
        return statuses

    # -- writes --------------------------------------------------------------------------

    def apply(
        self,
        *,
        statuses: Iterable[tuple[int, int, dict[str, Any]]] = (),
        idempotency: Iterable[dict[str, Any]] = (),
        offsets: Iterable[tuple[str, int, int]] = (),
    ) -> None:
        """Write statuses `(partition, offset, record)`, idempotency records and the next
        offsets `(topic, partition, offset)` atomically."""
        batch = WriteBatch(raw_mode=True)
        for partition, offset, status in statuses:
            key = f"s/{status['notification_id']}/{partition:04}/{offset:020}"
            batch.put(key.encode(), orjson.dumps(status))
        for record in idempotency:
            self._put_idempotency(batch, record)
        for topic, partition, offset in offsets:
            batch.put(f"o/{topic}/{partition}".encode(), str(offset).encode())
        self._db.write(batch)

    def remember(self, record: dict[str, Any]) -> None:
        """Record what this replica just accepted, before its topic record comes back."""
        batch = WriteBatch(raw_mode=True)
        self._put_idempotency(batch, record)
        self._db.write(batch)

    @staticmethod
    def _put_idempotency(batch: WriteBatch, record: dict[str, Any]) -> None:
        key = record_key(record["tenant_id"], record["idempotency_key"])
        batch.put(f"i/{key}".encode(), orjson.dumps(record))
        batch.put(f"n/{record['notification_id']}".encode(), record["tenant_id"].encode())
