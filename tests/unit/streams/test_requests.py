"""Tests for streams/requests.py: normalizing and validating NotificationRequests."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from streams.errors import ValidationError
from streams.requests import (
    MAX_RECIPIENTS,
    normalize_request,
    now_ms,
    request_key,
    validate_request,
)
from streams.serde import serde

# What a caller hands `tidings publish`, one JSON object a line.
JSON_LINE = (
    '{"tenant_id":"acme","idempotency_key":"order-1","priority":"normal","category":"orders",'
    '"channels":["webhook"],"recipients":[{"user_id":"u1",'
    '"webhook_url":"http://127.0.0.1:8089/hook"}],"title":"Order shipped",'
    '"content":"Your order 1 has shipped","data":{"order_id":"1"}}'
)
NOW = 1_700_000_000_123


def raw_request(**overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = json.loads(JSON_LINE)
    return raw | overrides


def webhook_recipient(user_id: str, **fields: Any) -> dict[str, Any]:
    return {"user_id": user_id, "webhook_url": f"https://hooks.example.com/{user_id}"} | fields


# -- normalize_request: a good request ----------------------------------------------------------


def test_the_json_line_normalizes_to_a_complete_request() -> None:
    request = normalize_request(json.loads(JSON_LINE), now=NOW)
    notification_id = request.pop("notification_id")
    assert re.fullmatch(r"ntf_[0-9a-f]{32}", notification_id)
    assert request == {
        "tenant_id": "acme",
        "idempotency_key": "order-1",
        "priority": "normal",
        "category": "orders",
        "recipients": [
            {
                "user_id": "u1",
                "email": None,
                "phone": None,
                "push_tokens": [],
                "slack": None,
                "webhook_url": "http://127.0.0.1:8089/hook",
                "locale": None,
                "timezone": None,
                "metadata": {},
            }
        ],
        "channels": ["webhook"],
        "fallback_channels": [],
        "template": None,
        "title": "Order shipped",
        "content": "Your order 1 has shipped",
        "data": {"order_id": "1"},
        "metadata": {},
        "created_at": NOW,
        "send_at": None,
    }


def test_the_json_line_encodes_as_a_notification_request() -> None:
    request = normalize_request(json.loads(JSON_LINE))
    codec = serde("NotificationRequest")
    assert codec.decode(codec.encode(request)) == request


def test_a_decoded_request_validates_again() -> None:
    # The validate stage runs validate_request on what it reads back from the topic.
    codec = serde("NotificationRequest")
    validate_request(codec.decode(codec.encode(normalize_request(json.loads(JSON_LINE)))))


def test_each_request_gets_a_fresh_notification_id() -> None:
    ids = {normalize_request(raw_request())["notification_id"] for _ in range(3)}
    assert len(ids) == 3


def test_created_at_defaults_to_now() -> None:
    before = now_ms()
    created_at = normalize_request(raw_request())["created_at"]
    assert before <= created_at <= now_ms()


@pytest.mark.parametrize(
    ("overrides", "field", "expected"),
    [
        ({"notification_id": "ntf_given"}, "notification_id", "ntf_given"),
        ({"created_at": 1_600_000_000_000}, "created_at", 1_600_000_000_000),
        ({"send_at": NOW + 60_000}, "send_at", NOW + 60_000),
        ({"metadata": {"campaign": "c1"}}, "metadata", {"campaign": "c1"}),
        ({"priority": "critical"}, "priority", "critical"),
    ],
)
def test_given_fields_are_kept(overrides: dict[str, Any], field: str, expected: Any) -> None:
    assert normalize_request(raw_request(**overrides), now=NOW)[field] == expected


@pytest.mark.parametrize(
    ("missing", "field", "expected"),
    [
        ("priority", "priority", "normal"),
        ("category", "category", "general"),
        ("data", "data", {}),
        ("title", "title", None),
    ],
)
def test_fields_not_given_take_defaults(missing: str, field: str, expected: Any) -> None:
    raw = raw_request()
    del raw[missing]
    assert normalize_request(raw)[field] == expected


def test_without_an_idempotency_key_the_notification_id_is_the_key() -> None:
    raw = raw_request(notification_id="ntf_given")
    del raw["idempotency_key"]
    assert normalize_request(raw)["idempotency_key"] == "ntf_given"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"order_id": "1"}, {"order_id": "1"}),
        ({"count": 3}, {"count": "3"}),
        ({"amount": 12.5}, {"amount": "12.5"}),
        ({"paid": True, "late": False}, {"paid": "true", "late": "false"}),
        ({}, {}),
        (None, {}),
    ],
)
def test_data_values_become_strings(data: Any, expected: dict[str, str]) -> None:
    assert normalize_request(raw_request(data=data))["data"] == expected


def test_every_channel_with_its_address_is_accepted() -> None:
    recipient = {
        "user_id": "u1",
        "email": "u1@example.com",
        "phone": "+14155550100",
        "push_tokens": ["fcm-token"],
        "slack": "C024BE91L",
        "webhook_url": "https://hooks.example.com/u1",
    }
    channels = ["email", "sms", "push", "slack", "webhook"]
    request = normalize_request(raw_request(channels=channels, recipients=[recipient]))
    codec = serde("NotificationRequest")
    assert codec.decode(codec.encode(request)) == request


def test_the_most_recipients_allowed_is_accepted() -> None:
    recipients = [webhook_recipient(f"u{i}") for i in range(MAX_RECIPIENTS)]
    request = normalize_request(raw_request(recipients=recipients))
    assert len(request["recipients"]) == MAX_RECIPIENTS


# -- normalize_request: bad requests ------------------------------------------------------------


def without(field: str) -> dict[str, Any]:
    raw = raw_request()
    del raw[field]
    return raw


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        pytest.param(without("tenant_id"), "tenant_id", id="missing tenant"),
        pytest.param(raw_request(tenant_id=""), "tenant_id", id="empty tenant"),
        pytest.param(raw_request(tenant_id="ac me"), "tenant_id", id="tenant with a space"),
        pytest.param(raw_request(tenant_id="a" * 129), "tenant_id", id="tenant too long"),
        pytest.param(raw_request(idempotency_key="key/1"), "idempotency_key", id="bad key"),
        pytest.param(raw_request(notification_id=5), "notification_id", id="numeric id"),
        pytest.param(raw_request(priority="urgent"), "priority", id="bad priority"),
        pytest.param(raw_request(priority=None), "priority", id="null priority"),
        pytest.param(raw_request(category="a b"), "category", id="bad category"),
        pytest.param(raw_request(channels=["fax"]), "channels", id="unknown channel"),
        pytest.param(raw_request(channels=[]), "channels", id="no channel"),
        pytest.param(raw_request(channels="webhook"), "channels", id="channels not a list"),
        pytest.param(raw_request(channels=["webhook", "webhook"]), "channels",
                     id="channel twice"),
        pytest.param(raw_request(channels=["email"]), "recipients[0].email",
                     id="channel without address"),
        pytest.param(
            raw_request(channels=["webhook", "sms"],
                        recipients=[webhook_recipient("u1", phone="+1415"),
                                    webhook_recipient("u2")]),
            "recipients[1].phone", id="second recipient without address",
        ),
        pytest.param(raw_request(recipients=[]), "recipients", id="no recipient"),
        pytest.param(without("recipients"), "recipients", id="missing recipients"),
        pytest.param(raw_request(recipients=["u1"]), "recipients[0]", id="recipient not object"),
        pytest.param(raw_request(recipients=[webhook_recipient("u1", fax="1")]),
                     "recipients[0]", id="unknown recipient field"),
        pytest.param(raw_request(recipients=[{"webhook_url": "https://h.example.com"}]),
                     "recipients[0].user_id", id="recipient without user"),
        pytest.param(
            raw_request(recipients=[webhook_recipient("u1"), webhook_recipient("u1")]),
            "recipients[1].user_id", id="duplicate user",
        ),
        pytest.param(raw_request(recipients=[webhook_recipient("u1", push_tokens="tok")]),
                     "recipients[0].push_tokens", id="push_tokens not a list"),
        pytest.param(raw_request(recipients=[webhook_recipient("u1", metadata={"a": [1]})]),
                     "recipients[0].metadata.a", id="recipient metadata not text"),
        pytest.param(raw_request(title=None, content=None), "content", id="no content"),
        pytest.param(raw_request(title="", content=""), "content", id="empty content"),
        pytest.param(raw_request(content="x" * (64 * 1024 + 1)), "content",
                     id="content too long"),
        pytest.param(raw_request(title=["Order"]), "title", id="title not text"),
        pytest.param(raw_request(subject="Order shipped"), "subject",
                     id="unknown top-level field"),
        pytest.param(
            raw_request(recipients=[{"user_id": "u1", "webhook_url": "ftp://h.example.com"}]),
            "recipients[0].webhook_url", id="non-http webhook_url",
        ),
        pytest.param(
            raw_request(channels=["email"],
                        recipients=[{"user_id": "u1", "email": "u1@example.com",
                                     "webhook_url": "hooks.example.com"}]),
            "recipients[0].webhook_url", id="webhook_url without scheme on another channel",
        ),
        pytest.param(
            raw_request(recipients=[webhook_recipient(f"u{i}")
                                    for i in range(MAX_RECIPIENTS + 1)]),
            "recipients", id="too many recipients",
        ),
        pytest.param(raw_request(data={"items": ["a", "b"]}), "data.items", id="data list"),
        pytest.param(raw_request(data={"order": {"id": "1"}}), "data.order", id="data object"),
        pytest.param(raw_request(data={"note": None}), "data.note", id="data null"),
        pytest.param(raw_request(data=["order_id"]), "data", id="data not an object"),
        pytest.param(raw_request(metadata={"n": [1]}), "metadata.n", id="metadata list"),
        pytest.param(raw_request(template={"template_id": "../other-tenant/welcome"}),
                     "template.template_id", id="template id is a path"),
        pytest.param(raw_request(template={"template_id": "Welcome"}),
                     "template.template_id", id="template id not lower case"),
        pytest.param(raw_request(template={"template_id": "welcome", "version": 0}),
                     "template.version", id="template version zero"),
        pytest.param(raw_request(template="order-shipped"), "template", id="template not object"),
        pytest.param(raw_request(created_at=1.5), "created_at", id="created_at float"),
        pytest.param(raw_request(created_at=-1), "created_at", id="created_at negative"),
        pytest.param(raw_request(send_at="tomorrow"), "send_at", id="send_at text"),
        pytest.param(raw_request(send_at=True), "send_at", id="send_at bool"),
    ],
)
def test_invalid_request_names_the_field(raw: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        normalize_request(raw)
    assert caught.value.field == field


def test_a_template_reference_needs_no_inline_content() -> None:
    request = normalize_request(raw_request(
        template={"template_id": "order-shipped", "version": 2}, title=None, content=None))
    assert request["template"] == {"template_id": "order-shipped", "version": 2}


@pytest.mark.parametrize("raw", [[], "a request", None])
def test_a_request_that_is_not_an_object_is_refused(raw: Any) -> None:
    with pytest.raises(ValidationError):
        normalize_request(raw)


# -- request_key --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("recipients", "key"),
    [
        ([webhook_recipient("u1")], b"acme/u1"),
        ([webhook_recipient("u2"), webhook_recipient("u1")], b"acme/u2"),
    ],
)
def test_request_key_is_tenant_and_first_recipient(
    recipients: list[dict[str, Any]], key: bytes
) -> None:
    assert request_key(normalize_request(raw_request(recipients=recipients))) == key
