"""Tests for streams/dlq.py: filters, letter ids, decoding the original bytes."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from streams.dlq import (
    DeadLetterError,
    Letter,
    LetterFilter,
    decode_original,
    original_schema,
    parse_letter_id,
    printable,
    redrive_value,
)
from streams.requests import normalize_request
from streams.serde import serde

FAILED_AT = 1_764_622_800_000


def letter(**overrides: Any) -> dict[str, Any]:
    return {
        "stage": "deliver", "error_class": "RetriesExhausted", "message": "503",
        "attempts": 3, "original_topic": "t.channel.webhook", "original_partition": 2,
        "original_offset": 7, "original_key": b"acme/u1", "original_bytes": b"",
        "tenant_id": "acme", "notification_id": "ntf_1", "failed_at": FAILED_AT,
        **overrides,
    }


@pytest.mark.parametrize(
    ("letter_filter", "matches"),
    [
        pytest.param(LetterFilter(), True, id="no filter"),
        pytest.param(LetterFilter(stage="deliver"), True, id="stage"),
        pytest.param(LetterFilter(stage="validate"), False, id="other stage"),
        pytest.param(LetterFilter(error_class="RetriesExhausted"), True, id="error class"),
        pytest.param(LetterFilter(error_class="Rejected"), False, id="other error class"),
        pytest.param(LetterFilter(tenant="acme"), True, id="tenant"),
        pytest.param(LetterFilter(tenant="globex"), False, id="other tenant"),
        pytest.param(LetterFilter(since_ms=FAILED_AT), True, id="since is included"),
        pytest.param(LetterFilter(since_ms=FAILED_AT + 1), False, id="before since"),
        pytest.param(LetterFilter(until_ms=FAILED_AT), False, id="until is not included"),
        pytest.param(LetterFilter(until_ms=FAILED_AT + 1), True, id="before until"),
        pytest.param(LetterFilter(stage="deliver", tenant="globex"), False, id="all must match"),
    ],
)
def test_filter(letter_filter: LetterFilter, matches: bool) -> None:
    assert letter_filter.matches(letter()) is matches


def test_a_letter_without_a_tenant_matches_no_tenant_filter() -> None:
    assert not LetterFilter(tenant="acme").matches(letter(tenant_id=None))


def test_letter_ids_are_partition_and_offset() -> None:
    assert parse_letter_id("3:1042") == (3, 1042)
    assert Letter(3, 1042, letter()).id == "3:1042"


@pytest.mark.parametrize("text", ["3", "3:", ":5", "a:b", "3:-1", "3:5:1"])
def test_bad_letter_ids_say_what_an_id_looks_like(text: str) -> None:
    with pytest.raises(DeadLetterError, match="partition:offset"):
        parse_letter_id(text)


@pytest.mark.parametrize(
    ("topic", "schema"),
    [("t.requests", "NotificationRequest"), ("t.dispatch", "NotificationRequest"),
     ("t.channel.sms", "ChannelMessage"), ("t.retry.webhook.5s", "ChannelMessage"),
     ("elsewhere", None)],
)
def test_original_schema_by_topic(topic: str, schema: str | None) -> None:
    assert original_schema(topic, "t") == schema


def test_a_request_decodes() -> None:
    request = normalize_request({
        "tenant_id": "acme", "channels": ["webhook"], "title": "Hi",
        "recipients": [{"user_id": "u1", "webhook_url": "https://h.example.com/"}],
    })
    raw = serde("NotificationRequest").encode(request)
    decoded = decode_original(letter(original_topic="t.requests", original_bytes=raw), "t")
    assert decoded["schema"] == "NotificationRequest"
    assert decoded["record"]["notification_id"] == request["notification_id"]


def test_garbage_is_shown_as_bytes_with_the_reason() -> None:
    decoded = decode_original(letter(original_topic="t.requests", original_bytes=b"\x00oops"),
                              "t")
    assert "NotificationRequest" in decoded["undecodable"]
    assert decoded["bytes_hex"] == "006f6f7073"
    assert decoded["length"] == 5


def test_printable_letters_are_json_ready() -> None:
    out = printable(Letter(1, 2, letter(original_bytes=b"\x00\xff")), "t", with_original=True)
    assert out["id"] == "1:2"
    assert out["original_key"] == "acme/u1"
    assert base64.b64decode(out["original_bytes"]) == b"\x00\xff"
    assert out["failed_at_iso"] == "2025-12-01T21:00:00.000Z"
    assert "undecodable" in out["original"]
    binary_key = printable(Letter(1, 2, letter(original_key=b"\xff")), "t", with_original=False)
    assert binary_key["original_key"] == "base64:/w=="


def channel_message() -> bytes:
    from agents.route import channel_messages

    request = normalize_request({
        "tenant_id": "acme", "channels": ["webhook"], "title": "Hi",
        "recipients": [{"user_id": "u1", "webhook_url": "https://h.example.com/"}],
    })
    (message,) = channel_messages(request)
    message.update(attempt=3, not_before=FAILED_AT, last_error="503")
    return serde("ChannelMessage").encode(message)


def test_redrive_sends_the_original_bytes() -> None:
    raw = channel_message()
    assert redrive_value(letter(original_bytes=raw), "t") == raw


def test_reset_attempts_starts_a_deliverys_count_again() -> None:
    raw = channel_message()
    reset = serde("ChannelMessage").decode(
        redrive_value(letter(original_bytes=raw), "t", reset_attempts=True))
    original = serde("ChannelMessage").decode(raw)
    assert (reset["attempt"], reset["not_before"]) == (0, 0)
    assert reset["delivery_id"] == original["delivery_id"]  # the same delivery: the ledger
    assert reset["last_error"] == "503"  # still says why it failed before


def test_reset_attempts_leaves_requests_alone_and_refuses_garbage() -> None:
    assert redrive_value(letter(original_topic="t.requests", original_bytes=b"\x00"), "t",
                         reset_attempts=True) == b"\x00"
    with pytest.raises(DeadLetterError, match="undecodable"):
        redrive_value(letter(original_bytes=b"\x00"), "t", reset_attempts=True)
