"""Tests for streams/preferences.py: ops, checks at the edge, folding changes into states."""

from __future__ import annotations

from typing import Any

import pytest

from streams.errors import ValidationError
from streams.preferences import apply_change, check_op, empty_state, fold, parse_quiet_hours


def change(*ops: tuple[str, str | None]) -> dict[str, Any]:
    return {**empty_state("acme", "u1"), "kind": "change", "source": "cli",
            "ops": [{"op": op, "value": value} for op, value in ops]}


def test_changes_fold_into_the_next_revision() -> None:
    state = apply_change(None, change(("opt_out_channel", "sms"),
                                      ("opt_out_category", "marketing"),
                                      ("set_quiet_hours", "22:00-07:00"),
                                      ("set_timezone", "Europe/Paris"),
                                      ("set_locale", "fr-FR"),
                                      ("set_preferred_channels", "push, email")), now=10)
    assert state["revision"] == 1 and state["kind"] == "state" and state["ops"] == []
    assert state["channel_opt_outs"] == ["sms"]
    assert state["category_opt_outs"] == ["marketing"]
    assert state["quiet_hours"] == {"start": "22:00", "end": "07:00"}
    assert (state["timezone"], state["locale"]) == ("Europe/Paris", "fr-FR")
    assert state["preferred_channels"] == ["push", "email"]
    assert (state["source"], state["updated_at"]) == ("cli", 10)

    later = apply_change(state, change(("opt_in_channel", "sms"), ("set_quiet_hours", None),
                                       ("set_locale", None)), now=20)
    assert later["revision"] == 2 and later["channel_opt_outs"] == []
    assert later["quiet_hours"] is None and later["locale"] is None
    assert later["category_opt_outs"] == ["marketing"]  # untouched


def test_ops_are_idempotent() -> None:
    once = apply_change(None, change(("opt_out_channel", "sms")), now=1)
    twice = apply_change(once, change(("opt_out_channel", "sms")), now=1)
    assert twice["channel_opt_outs"] == ["sms"]


def test_a_state_replaces_only_an_older_one() -> None:
    stored = apply_change(None, change(("set_locale", "de")), now=1)  # revision 1
    newer = {**stored, "revision": 2, "locale": "fr"}
    assert fold(stored, newer, now=2) == newer
    assert fold(newer, stored, now=3) is None  # its own older write read back
    assert fold(newer, dict(newer), now=3) is None
    assert fold(None, stored, now=3) == stored


@pytest.mark.parametrize(
    ("op", "value", "message"),
    [
        ("opt_out_channel", "fax", "unknown channel"),
        ("opt_out_category", "security", "required category"),
        ("opt_out_category", "a b", "identifier"),
        ("set_quiet_hours", "22:00", "START-END"),
        ("set_quiet_hours", "25:00-07:00", "time of day"),
        ("set_quiet_hours", "07:00-07:00", "same time"),
        ("set_timezone", "Mars/Olympus", "unknown time zone"),
        ("set_locale", "french!", "BCP 47"),
        ("set_preferred_channels", "email,fax", "unknown channels"),
        ("mute_forever", None, "unknown op"),
    ],
)
def test_bad_ops_are_refused(op: str, value: str | None, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        check_op(op, value, ("security",))


def test_opting_back_in_to_a_required_category_is_allowed() -> None:
    check_op("opt_in_category", "security", ("security",))


def test_quiet_hours_with_seconds() -> None:
    assert parse_quiet_hours("10:00:00 - 10:00:30") == {"start": "10:00:00", "end": "10:00:30"}
