"""Tests for agents/rule_eval.py: CEL conditions, recipient mappings, derived ids."""

from __future__ import annotations

from typing import Any

import pytest

from agents.rule_eval import RuleBook, build_requests, notification_id_for, resolve
from streams.errors import ValidationError
from streams.rules import normalize_rule

NOW = 1_700_000_000_000


def event(**payload: str) -> dict[str, Any]:
    return {
        "event_id": "evt-1", "tenant_id": "acme", "event_type": "order.shipped",
        "subject_id": "order-17", "occurred_at": NOW - 5000, "metadata": {"trace": "t-1"},
        "payload": {"order_id": "17", "total": "80", "country": "FR", "customer": "ann",
                    "email": "ann@example.com", "phone": "+14155550100", **payload},
    }


def rule(rule_id: str = "r1", **overrides: Any) -> dict[str, Any]:
    return normalize_rule({
        "tenant_id": "acme", "rule_id": rule_id, "event_type": "order.shipped",
        "condition": "true",
        "recipients": [{"user_id": "payload.customer", "email": "payload.email",
                        "phone": "payload.phone"}],
        "channels": ["email", "sms"], "title": "Order ${order_id}", "content": "Total ${total}",
        **overrides,
    }, now=NOW)


def book(*rules: dict[str, Any]) -> RuleBook:
    rule_book = RuleBook()
    for item in rules:
        rule_book.put(item)
    return rule_book


@pytest.mark.parametrize(
    ("condition", "fires"),
    [
        ("true", True),
        ("false", False),
        ('int(payload.total) >= 50 && payload.country in ["FR", "DE"]', True),
        ("int(payload.total) > 100", False),
        ('event.event_type == "order.shipped" && event.subject_id.startsWith("order-")', True),
        ('has(payload.coupon) && payload.coupon == "VIP"', False),
        ('"coupon" in payload', False),
        ('event.metadata.trace == "t-1"', True),
        ("event.occurred_at < 1700000000000", True),
        ('payload.email.matches("^[a-z]+@example[.]com$")', True),
        ("size(payload) == 6", True),
    ],
)
def test_conditions(condition: str, fires: bool) -> None:
    outcome = book(rule(condition=condition)).evaluate(event(), NOW)
    assert outcome.failures == []
    assert bool(outcome.requests) is fires


@pytest.mark.parametrize(
    ("condition", "error"),
    [
        ('payload.coupon == "VIP"', "KeyError"),  # a missing key is an error in CEL
        ("int(payload.country) > 1", "RuntimeError"),
        ("payload.total > 100", "TypeError"),  # CEL does not coerce string to int
        ("1 / (size(payload) - 6) == 1", "ZeroDivisionError"),
        ("payload.total", "not a bool"),
        ("nope.x == 1", ""),  # an undeclared variable
    ],
)
def test_a_failing_condition_is_reported_with_its_rule_and_others_still_run(
        condition: str, error: str) -> None:
    outcome = book(rule("a-broken", condition=condition), rule("b-fine")).evaluate(event(), NOW)
    (failure,) = outcome.failures
    assert failure.rule_id == "a-broken"
    assert str(failure.error).startswith("rule a-broken: ")
    assert error in str(failure.error)
    assert [rule_id for rule_id, _ in outcome.requests] == ["b-fine"]


def test_only_the_tenants_rules_for_the_event_type_run_and_disabled_ones_do_not() -> None:
    rule_book = book(rule("same"), rule("other-type", event_type="order.refunded"),
                     {**rule("other-tenant"), "tenant_id": "globex"},
                     rule("disabled", enabled=False))
    outcome = rule_book.evaluate(event(), NOW)
    assert [rule_id for rule_id, _ in outcome.requests] == ["same"]
    assert outcome.evaluated == 1


def test_a_put_replaces_and_remove_forgets() -> None:
    rule_book = book(rule("r1"))
    rule_book.put(rule("r1", event_type="order.refunded"))
    assert rule_book.rules_for("acme", "order.shipped") == []
    assert len(rule_book.rules_for("acme", "order.refunded")) == 1
    rule_book.remove("acme/r1")
    assert len(rule_book) == 0
    assert rule_book.rules_for("acme", "order.refunded") == []


def test_a_condition_that_does_not_compile_is_refused() -> None:
    with pytest.raises(ValidationError, match="not valid CEL"):
        RuleBook().put({**rule(), "condition": "payload.total >"})


def test_the_request_a_rule_makes() -> None:
    (request,) = build_requests(rule(priority="high", category="orders"), event(), NOW)
    expected_id = notification_id_for("acme", "evt-1", "r1", "ann")
    assert request["notification_id"] == request["idempotency_key"] == expected_id
    assert request["recipients"][0]["user_id"] == "ann"
    assert request["recipients"][0]["email"] == "ann@example.com"
    assert request["channels"] == ["email", "sms"]
    assert request["title"] == "Order 17" and request["content"] == "Total 80"
    assert request["data"] == event()["payload"]
    assert request["metadata"] == {"trace": "t-1", "rule_id": "r1", "event_id": "evt-1",
                                   "event_type": "order.shipped"}
    assert (request["priority"], request["category"]) == ("high", "orders")


def test_ids_are_derived_so_a_replay_makes_the_same_request() -> None:
    first = build_requests(rule(), event(), NOW)
    again = build_requests(rule(), event(), NOW + 60_000)
    assert first[0]["notification_id"] == again[0]["notification_id"]
    other_rule = build_requests(rule("r2"), event(), NOW)
    other_event = build_requests(rule(), {**event(), "event_id": "evt-2"}, NOW)
    assert len({first[0]["notification_id"], other_rule[0]["notification_id"],
                other_event[0]["notification_id"]}) == 3


def test_a_recipient_gets_only_the_channels_it_has_an_address_for() -> None:
    payload = event()
    del payload["payload"]["phone"]
    (request,) = build_requests(rule(fallback_channels=["webhook"]), payload, NOW)
    assert request["channels"] == ["email"] and request["fallback_channels"] == []


def test_a_recipient_without_any_address_is_an_error_of_the_rule() -> None:
    outcome = book(rule(recipients=[{"user_id": "subject_id", "phone": "payload.nope"}],
                        channels=["sms"])).evaluate(event(), NOW)
    (failure,) = outcome.failures
    assert "no address" in str(failure.error)


def test_several_recipients_and_literals() -> None:
    ops = {"user_id": "literal:ops-team", "slack": "literal:C0123456789"}
    requests = build_requests(rule(recipients=[
        {"user_id": "payload.customer", "email": "payload.email"}, ops,
    ], channels=["email", "slack"]), event(), NOW)
    assert [(r["recipients"][0]["user_id"], r["channels"]) for r in requests] == [
        ("ann", ["email"]), ("ops-team", ["slack"])]


@pytest.mark.parametrize(
    ("source", "value"),
    [("subject_id", "order-17"), ("event_type", "order.shipped"), ("event_id", "evt-1"),
     ("payload.customer", "ann"), ("payload.absent", None), ("literal:x:y", "x:y"),
     (None, None)],
)
def test_resolve(source: str | None, value: str | None) -> None:
    assert resolve(source, event()) == value


def test_placeholders_cannot_reach_attributes() -> None:
    (request,) = build_requests(
        rule(title="${order_id.__class__} {order_id} ${missing} $$"), event(), NOW)
    # string.Template: only ${name} of a known key is replaced; nothing is evaluated.
    assert request["title"] == "${order_id.__class__} {order_id} ${missing} $"
