"""Tests for streams/rules.py and streams/events.py: what the edge refuses, and why."""

from __future__ import annotations

from typing import Any

import pytest

from streams.errors import ValidationError
from streams.events import event_key, normalize_event
from streams.rules import MAX_CONDITION_CHARS, normalize_rule


def rule(**overrides: Any) -> dict[str, Any]:
    return {"tenant_id": "acme", "rule_id": "r1", "event_type": "order.shipped",
            "condition": "int(payload.total) > 10",
            "recipients": [{"user_id": "subject_id", "email": "payload.email"}],
            "channels": ["email"], "title": "Shipped", **overrides}


def test_defaults() -> None:
    normalized = normalize_rule(rule(condition=None) | {"condition": "true"}, now=5)
    assert normalized["priority"] == "normal" and normalized["category"] == "general"
    assert normalized["enabled"] is True and normalized["updated_at"] == 5
    assert normalized["recipients"][0]["phone"] is None


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"condition": "payload.total >"}, "condition", "not valid CEL"),
        ({"condition": "x" * (MAX_CONDITION_CHARS + 1)}, "condition", "longer"),
        ({"condition": " "}, "condition", "CEL expression"),
        ({"event_type": "Order Shipped"}, "event_type", "dotted"),
        ({"rule_id": "a/b"}, "rule_id", "letters"),
        ({"channels": []}, "channels", "non-empty"),
        ({"channels": ["fax"]}, "channels", "unknown"),
        ({"fallback_channels": ["email"]}, "channels", "twice"),
        ({"recipients": []}, "recipients", "non-empty"),
        ({"recipients": [{"email": "payload.email"}]}, "recipients[0].user_id", "required"),
        ({"recipients": [{"user_id": "subject_id", "fax": "x"}]}, "recipients[0].fax",
         "unknown"),
        ({"recipients": [{"user_id": "payload", "email": "payload.email"}]},
         "recipients[0].user_id", "payload.<key>"),
        ({"recipients": [{"user_id": "subject_id", "phone": "payload.phone"}]},
         "recipients[0]", "no address"),
        ({"title": None}, "content", "template or an inline"),
        ({"priority": "urgent"}, "priority", "priority"),
        ({"enabled": "yes"}, "enabled", "true or false"),
        ({"template": {"version": 1}}, "template", "template_id"),
        ({"surprise": 1}, "surprise", "unknown fields"),
    ],
)
def test_bad_rules_are_refused_with_the_field(overrides: dict[str, Any], field: str,
                                              message: str) -> None:
    with pytest.raises(ValidationError, match=message) as caught:
        normalize_rule(rule(**overrides))
    assert caught.value.field == field


def test_a_template_rule_needs_no_title() -> None:
    normalized = normalize_rule(rule(title=None, template={"template_id": "shipped"}))
    assert normalized["template"] == {"template_id": "shipped", "version": None}


def event(**overrides: Any) -> dict[str, Any]:
    return {"tenant_id": "acme", "event_type": "order.shipped", "subject_id": "order-17",
            "payload": {"total": 42.5, "gift": True, "count": 3, "email": "a@b.c"},
            **overrides}


def test_event_defaults_and_scalars_become_text() -> None:
    normalized = normalize_event(event(), now=7)
    assert normalized["event_id"].startswith("evt_") and normalized["occurred_at"] == 7
    assert normalized["payload"] == {"total": "42.5", "gift": "true", "count": "3",
                                     "email": "a@b.c"}
    assert event_key(normalized) == b"acme/order-17"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"payload": {"items": [1, 2]}}, "payload.items"),
        ({"payload": {"customer": {"id": 1}}}, "payload.customer"),
        ({"payload": "total=1"}, "payload"),
        ({"event_type": "order shipped"}, "event_type"),
        ({"subject_id": ""}, "subject_id"),
        ({"tenant_id": None}, "tenant_id"),
        ({"occurred_at": "yesterday"}, "occurred_at"),
        ({"extra": 1}, "extra"),
    ],
)
def test_bad_events_are_refused_with_the_field(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        normalize_event(event(**overrides))
    assert caught.value.field == field
