"""Idempotency-Key semantics of `POST /v1/notifications` — pure functions, no I/O.

Where the key → (body hash, id) map lives, and why it holds across replicas:

1. **The id is derived, not drawn.** ``notification_id = ntf_ + sha256(tenant, key, body
   hash)``. Any replica that sees the same tenant, key and body computes the same id without
   asking anyone, and a second publish of that id is harmless: the dedup stage passes the
   same id read again and the delivered ledger stops a second send (agents/dedup.py).
2. **What was accepted is a Kafka record.** After the broker acknowledged the request, the
   API writes ``tenant/key → (body hash, id)`` to the ``<prefix>.api-idempotency`` topic;
   every replica materializes that topic into its RocksDB store, so a retry on any replica
   finds it (same body → the same id again; other body → 409).
3. **The race between replicas is closed by the pipeline.** Two *different* bodies with one
   key sent to two replicas within the topic's propagation delay (milliseconds) both get a
   202 with different ids; the dedup stage then lets the first through and records the
   second as ``duplicate`` — which its `GET` shows. Nothing is sent twice. (The dedup stage
   is exact when both requests share the first recipient, hence the same partition; see
   agents/dedup.py.)

An in-process map alone would break as soon as two replicas run, or one restarts.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson


def body_sha256(body: Any) -> str:
    """Hex SHA-256 of a body in canonical JSON: sorted keys, no whitespace. The caller passes
    the validated model with defaults filled, so `{}` and `{"priority": "normal"}` agree."""
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def notification_id_for(tenant_id: str, idempotency_key: str, body_hash: str) -> str:
    """The id every replica derives for this tenant, key and body (NUL-separated, so no two
    different triples join into the same string)."""
    material = "\0".join((tenant_id, idempotency_key, body_hash)).encode()
    return "ntf_" + hashlib.sha256(material).hexdigest()[:32]


def record_key(tenant_id: str, idempotency_key: str) -> str:
    return f"{tenant_id}/{idempotency_key}"


@dataclass(frozen=True, slots=True)
class Replay:
    """The key was used with this body: answer with the id given before."""
    notification_id: str


@dataclass(frozen=True, slots=True)
class Conflict:
    """The key was used with another body: 409, naming the id it was used for."""
    notification_id: str


@dataclass(frozen=True, slots=True)
class Fresh:
    """The key is unused (or its use has expired): publish under this id."""
    notification_id: str


Decision = Replay | Conflict | Fresh


def decide(
    seen: dict[str, Any] | None,
    *,
    tenant_id: str,
    idempotency_key: str,
    body_hash: str,
    now_ms: int,
    window_ms: int,
) -> Decision:
    """What to do with a POST, given the stored IdempotencyRecord for its key (or None)."""
    fresh = Fresh(notification_id_for(tenant_id, idempotency_key, body_hash))
    if seen is None or now_ms - int(seen["accepted_at"]) >= window_ms:
        return fresh
    if seen["body_sha256"] == body_hash:
        return Replay(str(seen["notification_id"]))
    return Conflict(str(seen["notification_id"]))
