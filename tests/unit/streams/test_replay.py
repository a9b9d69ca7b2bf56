"""Tests for streams/replay.py: which topics replay, what each record becomes, pacing."""

from __future__ import annotations

from typing import Any

import pytest

from agents.route import channel_messages, delivery_id, failover_message, fan_out
from streams.replay import (
    RESEND_KEY,
    Pacer,
    ReplayError,
    generation_of,
    kind_of_topic,
    plan_record,
    redelivery_id,
    topic_name,
)
from streams.requests import normalize_request
from streams.serde import serde

REQUESTS, MESSAGES = serde("NotificationRequest"), serde("ChannelMessage")


def request(tenant: str = "acme", **extra: Any) -> dict[str, Any]:
    return normalize_request({
        "tenant_id": tenant, "notification_id": f"ntf_{tenant}", "idempotency_key": "k1",
        "channels": ["webhook"], "fallback_channels": ["email"],
        "recipients": [{"user_id": "u1", "webhook_url": "https://h.example.com/u1",
                        "email": "u1@example.com"}],
        "title": "Hello", "metadata": {"campaign": "c1"}, "created_at": 1_700_000_000_000,
        **extra,
    })


def message(tenant: str = "acme") -> dict[str, Any]:
    (single,) = [r for _, r in fan_out(request(tenant))]
    (first,) = channel_messages(single)
    first.update(attempt=3, not_before=1_700_000_009_000, last_error="503")
    return first


def plan(kind: Any, value: bytes, **options: Any) -> Any:
    codec = REQUESTS if kind == "request" else MESSAGES
    return plan_record(kind, value, decode=codec.decode, encode=codec.encode, **options)


# -- topics ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic", "kind"),
    [("tidings.requests", "request"), ("tidings.dispatch", "request"),
     ("tidings.channel.webhook", "message"), ("tidings.channel.sms", "message")],
)
def test_topics_that_hold_work_replay(topic: str, kind: str) -> None:
    assert kind_of_topic(topic, "tidings") == kind


@pytest.mark.parametrize(
    "topic",
    ["tidings.status", "tidings.deadletter", "tidings.retry.webhook.5s",
     "tidings-dedup-changelog", "other.requests", "tidings.requestsx"],
)
def test_other_topics_are_refused_with_the_alternatives(topic: str) -> None:
    with pytest.raises(ReplayError, match="tidings.requests, tidings.dispatch"):
        kind_of_topic(topic, "tidings")


def test_topic_names_get_the_prefix_unless_given_in_full() -> None:
    assert topic_name("requests", "t1") == "t1.requests"
    assert topic_name("channel.webhook", "t1") == "t1.channel.webhook"
    assert topic_name("t1.requests", "t1") == "t1.requests"


# -- planning one record ---------------------------------------------------------------------


def test_a_plain_replay_sends_the_bytes_unchanged() -> None:
    value = REQUESTS.encode(request())
    planned = plan("request", value)
    assert planned.value == value
    assert (planned.tenant_id, planned.notification_id) == ("acme", "ntf_acme")


def test_another_tenants_record_is_skipped() -> None:
    planned = plan("request", REQUESTS.encode(request("globex")), tenant="acme")
    assert planned.value is None
    assert planned.skipped == "other tenant"


def test_undecodable_bytes_replay_unchanged_unless_they_must_be_read() -> None:
    garbage = b"\x00 not avro"
    assert plan("request", garbage).value == garbage
    assert plan("request", garbage, tenant="acme").skipped == "undecodable"
    assert plan("message", garbage, generation="rpl_1").skipped == "undecodable"


def test_the_same_work_twice_in_a_range_is_replayed_once() -> None:
    seen: set[str] = set()
    value = REQUESTS.encode(request())
    assert plan("request", value, seen=seen).value == value
    repeat = plan("request", value, seen=seen)
    assert (repeat.value, repeat.skipped) == (None, "repeat in range")
    # A resent copy of it is the same work as well.
    assert plan("request", value, seen=seen, generation="rpl_1").skipped == "repeat in range"
    assert plan("request", REQUESTS.encode(request("globex")), seen=seen).value is not None


def test_one_request_per_recipient_is_distinct_work() -> None:
    seen: set[str] = set()
    two = request()
    two["recipients"].append({**two["recipients"][0], "user_id": "u2"})
    singles = [REQUESTS.encode(single) for _, single in fan_out(two)]
    assert all(plan("request", v, seen=seen).value == v for v in singles)


def test_a_channel_message_repeats_by_delivery_id() -> None:
    seen: set[str] = set()
    first = message()
    again = {**first, "attempt": 1}  # the same delivery, back from a retry tier
    assert plan("message", MESSAGES.encode(first), seen=seen).value is not None
    assert plan("message", MESSAGES.encode(again), seen=seen).skipped == "repeat in range"


def test_resending_a_request_marks_its_generation_and_keeps_its_ids() -> None:
    original = request()
    planned = plan("request", REQUESTS.encode(original), generation="rpl_1")
    resent = REQUESTS.decode(planned.value)
    assert resent["metadata"] == {"campaign": "c1", RESEND_KEY: "rpl_1"}
    # The notification id and idempotency key stay: dedup passes it, statuses stay together.
    assert resent["notification_id"] == original["notification_id"]
    assert resent["idempotency_key"] == original["idempotency_key"]
    assert generation_of(resent) == "rpl_1"


def test_routing_a_resent_request_gives_new_delivery_ids_for_every_channel() -> None:
    resent = REQUESTS.decode(plan("request", REQUESTS.encode(request()), generation="rpl_1").value)
    (single,) = [r for _, r in fan_out(resent)]
    (routed,) = channel_messages(single)
    first = delivery_id("acme", "ntf_acme", "webhook", "u1")
    assert routed["delivery_id"] == redelivery_id(first, "rpl_1") != first
    # A fallback hop of the resent delivery is new too.
    fallback = failover_message(routed)
    assert fallback is not None
    assert fallback["delivery_id"] == redelivery_id(
        delivery_id("acme", "ntf_acme", "email", "u1"), "rpl_1")


def test_resending_a_channel_message_replaces_its_id_and_starts_its_attempts_again() -> None:
    original = message()
    planned = plan("message", MESSAGES.encode(original), generation="rpl_2")
    resent = MESSAGES.decode(planned.value)
    assert resent["delivery_id"] == redelivery_id(original["delivery_id"], "rpl_2")
    assert planned.delivery_id == resent["delivery_id"]
    assert (resent["attempt"], resent["not_before"], resent["last_error"]) == (0, 0, None)
    assert resent["metadata"][RESEND_KEY] == "rpl_2"
    assert resent["recipient"] == original["recipient"]


def test_a_resent_request_and_a_resent_message_of_one_replay_share_the_new_id() -> None:
    original = message()
    via_message = MESSAGES.decode(
        plan("message", MESSAGES.encode(original), generation="rpl_3").value)
    resent = REQUESTS.decode(plan("request", REQUESTS.encode(request()), generation="rpl_3").value)
    (single,) = [r for _, r in fan_out(resent)]
    (via_request,) = channel_messages(single)
    assert via_message["delivery_id"] == via_request["delivery_id"]


def test_redelivery_ids_are_stable_per_generation_and_distinct_across() -> None:
    assert redelivery_id("dlv_a", "rpl_1") == redelivery_id("dlv_a", "rpl_1")
    ids = {redelivery_id(d, g) for d in ("dlv_a", "dlv_b") for g in ("rpl_1", "rpl_2")}
    assert len(ids) == 4
    assert all(i.startswith("dlv_") for i in ids)


# -- pacing ----------------------------------------------------------------------------------


def test_without_a_rate_nothing_waits() -> None:
    pacer = Pacer(None)
    assert [pacer.delay(0.0) for _ in range(5)] == [0.0] * 5


def test_a_rate_spaces_the_sends() -> None:
    pacer = Pacer(4)
    assert [pacer.delay(0.0) for _ in range(4)] == [0.0, 0.25, 0.5, 0.75]


def test_time_spent_sending_counts_toward_the_pace() -> None:
    pacer = Pacer(2)
    assert pacer.delay(0.0) == 0.0
    assert pacer.delay(0.4) == pytest.approx(0.1)  # due at 0.5
    assert pacer.delay(2.0) == 0.0  # late: send at once


def test_after_a_stall_at_most_one_second_of_credit_is_kept() -> None:
    pacer = Pacer(10)
    pacer.delay(0.0)
    delays = [pacer.delay(100.0) for _ in range(12)]
    assert delays[:11] == [0.0] * 11  # one second's worth (10) at once, plus the one due now
    assert delays[11] == pytest.approx(0.1)


@pytest.mark.parametrize("rate", [0, -1])
def test_a_rate_must_be_positive(rate: float) -> None:
    with pytest.raises(ReplayError, match="--rate"):
        Pacer(rate)
