"""Tests for agents/route.py: delivery ids, fan-out, and ChannelMessages that fit the schema."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from agents.route import (
    channel_messages,
    delivery_id,
    failover_message,
    fan_out,
    recipient_key,
)
from streams.requests import normalize_request
from streams.serde import serde

CREATED_AT = 1_700_000_000_123


def make_request(**overrides: Any) -> dict[str, Any]:
    """A normalized request, as intake reads it from the requests topic."""
    raw: dict[str, Any] = {
        "tenant_id": "acme",
        "notification_id": "ntf_0001",
        "idempotency_key": "order-1",
        "priority": "high",
        "category": "orders",
        "channels": ["webhook", "email"],
        "recipients": [
            {"user_id": "u1", "webhook_url": "https://hooks.example.com/u1",
             "email": "u1@example.com", "metadata": {"plan": "pro"}},
            {"user_id": "u2", "webhook_url": "https://hooks.example.com/u2",
             "email": "u2@example.com"},
            {"user_id": "u3", "webhook_url": "https://hooks.example.com/u3",
             "email": "u3@example.com", "locale": "en-GB"},
        ],
        "title": "Order shipped",
        "content": "Your order 1 has shipped",
        "data": {"order_id": "1"},
        "metadata": {"traceparent": "00-abc-def-01"},
        "created_at": CREATED_AT,
    }
    return normalize_request(raw | overrides)


# -- delivery_id ----------------------------------------------------------------------------


def test_delivery_id_is_stable() -> None:
    first = delivery_id("acme", "ntf_0001", "webhook", "u1")
    assert first == delivery_id("acme", "ntf_0001", "webhook", "u1")
    assert first.startswith("dlv_")


@pytest.mark.parametrize(
    "other",
    [
        ("globex", "ntf_0001", "webhook", "u1"),
        ("acme", "ntf_0002", "webhook", "u1"),
        ("acme", "ntf_0001", "email", "u1"),
        ("acme", "ntf_0001", "webhook", "u2"),
        # The same characters split differently between the parts.
        ("acm", "entf_0001", "webhook", "u1"),
        ("acme", "ntf_0001w", "ebhook", "u1"),
        ("acme", "ntf_0001", "webhooku", "1"),
    ],
)
def test_delivery_id_differs_when_any_part_differs(other: tuple[str, str, str, str]) -> None:
    assert delivery_id(*other) != delivery_id("acme", "ntf_0001", "webhook", "u1")


def test_delivery_ids_are_distinct_over_a_grid() -> None:
    grid = list(itertools.product(
        ["acme", "globex"], ["ntf_1", "ntf_2", "ntf_3"], ["webhook", "email", "sms"],
        ["u1", "u2", "u3", "u4"],
    ))
    assert len({delivery_id(*parts) for parts in grid}) == len(grid)


@pytest.mark.parametrize(
    "parts",
    [
        ("acme", "ntf_0001", "webhook", "u1"),
        ("acme.eu", "ntf.0001", "webhook", "u1.x"),  # our ids may contain '.'
        ("t", "n", "c", "u"),
    ],
)
def test_delivery_id_has_no_dot(parts: tuple[str, str, str, str]) -> None:
    # Standard Webhooks signs "{id}.{timestamp}.{payload}", so an id must not contain '.'.
    assert "." not in delivery_id(*parts)


# -- fan_out --------------------------------------------------------------------------------


def test_fan_out_yields_one_single_recipient_request_per_recipient() -> None:
    request = make_request()
    out = list(fan_out(request))
    assert [key for key, _ in out] == [b"acme/u1", b"acme/u2", b"acme/u3"]
    for (_, single), recipient in zip(out, request["recipients"], strict=True):
        assert single["recipients"] == [recipient]
        assert {k: v for k, v in single.items() if k != "recipients"} == {
            k: v for k, v in request.items() if k != "recipients"
        }


def test_fan_out_leaves_the_request_alone() -> None:
    request = make_request()
    recipients = list(request["recipients"])
    list(fan_out(request))
    assert request["recipients"] == recipients


def test_each_fanned_out_request_encodes() -> None:
    codec = serde("NotificationRequest")
    for _, single in fan_out(make_request()):
        assert codec.decode(codec.encode(single)) == single


@pytest.mark.parametrize(
    ("tenant_id", "user_id", "key"),
    [("acme", "u1", b"acme/u1"), ("globex", "user@example.com", b"globex/user@example.com")],
)
def test_recipient_key(tenant_id: str, user_id: str, key: bytes) -> None:
    assert recipient_key(tenant_id, user_id) == key


# -- channel_messages -----------------------------------------------------------------------


def single_recipient_request(**overrides: Any) -> dict[str, Any]:
    _, single = next(fan_out(make_request(**overrides)))
    return single


def test_channel_messages_yields_one_message_per_channel() -> None:
    request = single_recipient_request()
    messages = list(channel_messages(request))
    assert [m["channel"] for m in messages] == ["webhook", "email"]
    recipient = request["recipients"][0]
    for message in messages:
        assert message == {
            "delivery_id": delivery_id("acme", "ntf_0001", message["channel"], "u1"),
            "notification_id": "ntf_0001",
            "tenant_id": "acme",
            "channel": message["channel"],
            "fallback_channels": [],
            "category": "orders",
            "priority": "high",
            "recipient": recipient,
            "title": "Order shipped",
            "body": "Your order 1 has shipped",
            "data": {"order_id": "1"},
            "metadata": {"traceparent": "00-abc-def-01"},
            "html": None, "blocks": None, "payload": None, "locale": None,
            "rendered_fallbacks": {},
            "attempt": 0,
            "created_at": CREATED_AT,
            "not_before": 0,
            "last_error": None,
        }


def test_channel_messages_of_a_replayed_request_keep_their_delivery_ids() -> None:
    first = [m["delivery_id"] for m in channel_messages(single_recipient_request())]
    again = [m["delivery_id"] for m in channel_messages(single_recipient_request())]
    assert first == again
    assert len(set(first)) == len(first)


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({}, id="full"),
        pytest.param({"title": None}, id="content only"),
        pytest.param({"content": None}, id="title only"),
        pytest.param({"data": {}, "metadata": {}}, id="no data"),
        pytest.param({"channels": ["webhook"], "priority": "critical"}, id="one channel"),
    ],
)
def test_every_channel_message_encodes_as_a_channel_message(overrides: dict[str, Any]) -> None:
    codec = serde("ChannelMessage")
    for message in channel_messages(single_recipient_request(**overrides)):
        assert codec.decode(codec.encode(message)) == message


def test_channel_messages_of_a_decoded_request_encode() -> None:
    # What dispatch does: decode the single-recipient request, then route it.
    request_codec, message_codec = serde("NotificationRequest"), serde("ChannelMessage")
    decoded = request_codec.decode(request_codec.encode(single_recipient_request()))
    for message in channel_messages(decoded):
        assert message_codec.decode(message_codec.encode(message)) == message


def test_push_is_one_delivery_per_device_token():
    request = {
        "tenant_id": "acme", "notification_id": "ntf_1", "category": "orders",
        "priority": "normal", "channels": ["push"], "fallback_channels": ["sms"],
        "recipients": [{"user_id": "u1", "push_tokens": ["fcm:a", "apns:b"], "phone": "+1"}],
        "title": "t", "content": "c", "data": {}, "metadata": {}, "created_at": 1,
    }
    messages = list(channel_messages(request))
    assert [m["recipient"]["push_tokens"] for m in messages] == [["fcm:a"], ["apns:b"]]
    assert len({m["delivery_id"] for m in messages}) == 2
    assert all(m["fallback_channels"] == ["sms"] for m in messages)


def test_failover_moves_to_the_next_channel_with_a_stable_id():
    request = {
        "tenant_id": "acme", "notification_id": "ntf_1", "category": "orders",
        "priority": "normal", "channels": ["push"], "fallback_channels": ["sms", "email"],
        "recipients": [{"user_id": "u1", "push_tokens": ["fcm:a"], "phone": "+1",
                        "email": "a@example.com"}],
        "title": "t", "content": "c", "data": {"k": "v"}, "metadata": {}, "created_at": 1,
    }
    (push,) = channel_messages(request)
    sms = failover_message(push)
    assert sms is not None
    assert (sms["channel"], sms["fallback_channels"]) == ("sms", ["email"])
    assert sms["delivery_id"] == delivery_id("acme", "ntf_1", "sms", "u1")
    assert sms["data"] == {"k": "v"} and sms["body"] == "c" and sms["attempt"] == 0
    email = failover_message(sms)
    assert email is not None and email["fallback_channels"] == []
    assert failover_message(email) is None
    assert failover_message(push) == sms  # the same failover twice is the same delivery
