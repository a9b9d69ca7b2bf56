"""Tests for streams/records.py: DeliveryStatus and DeadLetter records fit their schemas."""

from __future__ import annotations

from typing import Any

import pytest

from streams.errors import SerializationError, ValidationError
from streams.records import dead_letter_record, status_record
from streams.requests import now_ms
from streams.serde import serde

AT = 1_700_000_000_123

REQUEST: dict[str, Any] = {
    "tenant_id": "acme",
    "notification_id": "ntf_0001",
    "idempotency_key": "order-1",
    "priority": "normal",
    "category": "orders",
    "recipients": [{"user_id": "u1", "webhook_url": "https://hooks.example.com/u1"}],
    "channels": ["webhook"],
    "created_at": AT,
}
MESSAGE: dict[str, Any] = {
    "delivery_id": "dlv_0123456789abcdef",
    "notification_id": "ntf_0001",
    "tenant_id": "acme",
    "channel": "webhook",
    "attempt": 2,
    "created_at": AT,
}


def roundtrip(name: str, record: dict[str, Any]) -> dict[str, Any]:
    codec = serde(name)
    return codec.decode(codec.encode(record))


# -- status_record ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "status", "fields", "expected"),
    [
        pytest.param(
            REQUEST, "accepted", {},
            {"delivery_id": None, "channel": None, "attempt": 0, "reason": None,
             "status_code": None, "latency_ms": None},
            id="request accepted",
        ),
        pytest.param(
            REQUEST, "duplicate", {"reason": "idempotency key already used by ntf_0000"},
            {"delivery_id": None, "channel": None,
             "reason": "idempotency key already used by ntf_0000"},
            id="request duplicate",
        ),
        pytest.param(
            MESSAGE, "delivered", {"status_code": 200, "latency_ms": 42},
            {"delivery_id": "dlv_0123456789abcdef", "channel": "webhook", "attempt": 2,
             "status_code": 200, "latency_ms": 42},
            id="message delivered",
        ),
        pytest.param(
            MESSAGE, "retrying", {"reason": "HTTP 503", "status_code": 503},
            {"attempt": 2, "reason": "HTTP 503", "status_code": 503},
            id="message retrying",
        ),
        pytest.param(
            MESSAGE | {"attempt": None}, "deferred", {"reason": "rate limit"},
            {"attempt": 0}, id="attempt missing",
        ),
        pytest.param({}, "dead_lettered", {}, {"tenant_id": "", "notification_id": ""},
                     id="nothing decoded"),
    ],
)
def test_status_record(
    message: dict[str, Any], status: str, fields: dict[str, Any], expected: dict[str, Any]
) -> None:
    record = status_record(message, status, at_ms=AT, **fields)
    assert record["status"] == status
    assert record["occurred_at"] == AT
    assert {key: record[key] for key in expected} == expected
    assert roundtrip("DeliveryStatus", record) == record


def test_status_record_occurs_now_by_default() -> None:
    before = now_ms()
    occurred_at = status_record(MESSAGE, "delivered")["occurred_at"]
    assert before <= occurred_at <= now_ms()


# -- dead_letter_record -------------------------------------------------------------------------


def dead_letter(**overrides: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "stage": "validate",
        "error": ValidationError("priority must be one of ...", field="priority"),
        "topic": "tidings.requests",
        "partition": 3,
        "offset": 2**40,  # a long, not an int
        "key": b"acme/u1",
        "value": b"\xc3\x01\x00",
    }
    return dead_letter_record(**(arguments | overrides))


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        pytest.param(
            {},
            {"stage": "validate", "error_class": "ValidationError",
             "message": "priority must be one of ...", "attempts": 0,
             "original_topic": "tidings.requests", "original_partition": 3,
             "original_offset": 2**40, "original_key": b"acme/u1",
             "original_bytes": b"\xc3\x01\x00", "tenant_id": None, "notification_id": None},
            id="validation error",
        ),
        pytest.param({"error": SerializationError("header cut short"), "key": None},
                     {"error_class": "SerializationError", "original_key": None},
                     id="no key"),
        pytest.param({"error": RuntimeError()}, {"message": "RuntimeError"},
                     id="error without message"),
        pytest.param({"error": RuntimeError("boom"), "reason": "retries exhausted"},
                     {"message": "retries exhausted"}, id="reason wins"),
        pytest.param({"stage": "deliver", "attempts": 4, "decoded": MESSAGE},
                     {"stage": "deliver", "attempts": 4, "tenant_id": "acme",
                      "notification_id": "ntf_0001"},
                     id="decoded message"),
        pytest.param({"value": b""}, {"original_bytes": b""}, id="empty value"),
    ],
)
def test_dead_letter_record(overrides: dict[str, Any], expected: dict[str, Any]) -> None:
    record = dead_letter(**overrides)
    assert {key: record[key] for key in expected} == expected
    assert roundtrip("DeadLetter", record) == record


def test_dead_letter_fails_now() -> None:
    before = now_ms()
    failed_at = dead_letter()["failed_at"]
    assert before <= failed_at <= now_ms()
