"""Builders for the records every stage emits: DeliveryStatus and DeadLetter."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streams.requests import now_ms


def status_record(
    message: Mapping[str, Any],
    status: str,
    *,
    reason: str | None = None,
    status_code: int | None = None,
    latency_ms: int | None = None,
    at_ms: int | None = None,
    details: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A DeliveryStatus for a request or a ChannelMessage (`delivery_id` absent for requests)."""
    return {
        "tenant_id": message.get("tenant_id") or "",
        "notification_id": message.get("notification_id") or "",
        "delivery_id": message.get("delivery_id"),
        "channel": message.get("channel"),
        "status": status,
        "attempt": int(message.get("attempt") or 0),
        "reason": reason,
        "status_code": status_code,
        "occurred_at": at_ms if at_ms is not None else now_ms(),
        "latency_ms": latency_ms,
        "details": {**_rule_details(message), **(details or {})},
    }


def _rule_details(message: Mapping[str, Any]) -> dict[str, str]:
    """A notification made by a rule names the rule in every status (rules stage, issue 4)."""
    metadata = message.get("metadata") or {}
    rule_id = metadata.get("rule_id")
    return {"rule_id": rule_id} if isinstance(rule_id, str) else {}


def dead_letter_record(
    *,
    stage: str,
    error: BaseException,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes,
    attempts: int = 0,
    reason: str | None = None,
    decoded: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A DeadLetter carrying the original bytes and where they came from."""
    decoded = decoded or {}
    return {
        "stage": stage,
        "error_class": type(error).__name__,
        "message": reason or str(error) or type(error).__name__,
        "attempts": attempts,
        "original_topic": topic,
        "original_partition": partition,
        "original_offset": offset,
        "original_key": key,
        "original_bytes": value,
        "tenant_id": decoded.get("tenant_id"),
        "notification_id": decoded.get("notification_id"),
        "failed_at": now_ms(),
    }
