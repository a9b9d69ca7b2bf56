"""Tests for agents/preference_policy.py: opt-outs, required categories, preferred channels,
critical priority, and quiet-hour windows across time zones, midnight and DST."""

from __future__ import annotations

import datetime
import zoneinfo
from typing import Any

import pytest

from agents.preference_policy import decide, narrowed, quiet_until
from streams.preferences import empty_state

REQUIRED = ("security",)


def at(wall: str, zone: str) -> int:
    """Epoch ms of a wall time in a zone (the first occurrence when it happens twice)."""
    moment = datetime.datetime.fromisoformat(wall).replace(tzinfo=zoneinfo.ZoneInfo(zone))
    return int(moment.timestamp() * 1000)


def wall(ms: int | None, zone: str) -> str | None:
    if ms is None:
        return None
    moment = datetime.datetime.fromtimestamp(ms / 1000, tz=zoneinfo.ZoneInfo(zone))
    return moment.isoformat()


@pytest.mark.parametrize(
    ("now", "zone", "start", "end", "until"),
    [
        # A window inside one day.
        ("2026-06-10T12:30", "Europe/Paris", "12:00", "14:00", "2026-06-10T14:00:00+02:00"),
        ("2026-06-10T14:00", "Europe/Paris", "12:00", "14:00", None),  # the end is outside
        ("2026-06-10T11:59", "Europe/Paris", "12:00", "14:00", None),
        # Across midnight: before and after it.
        ("2026-06-10T23:30", "Europe/Paris", "22:00", "07:00", "2026-06-11T07:00:00+02:00"),
        ("2026-06-11T03:00", "Europe/Paris", "22:00", "07:00", "2026-06-11T07:00:00+02:00"),
        ("2026-06-11T07:00", "Europe/Paris", "22:00", "07:00", None),
        ("2026-06-11T21:59:59", "Europe/Paris", "22:00", "07:00", None),
        ("2026-12-31T23:00", "Asia/Tokyo", "22:00", "07:00", "2027-01-01T07:00:00+09:00"),
        # Seconds, for short windows.
        ("2026-06-10T10:00:05", "UTC", "10:00:00", "10:00:10", "2026-06-10T10:00:10+00:00"),
        # Spring forward (New York, 2026-03-08 02:00 → 03:00): 07:00 is still 07:00 local,
        # a window end inside the gap ends at the transition.
        ("2026-03-07T23:00", "America/New_York", "22:00", "07:00",
         "2026-03-08T07:00:00-04:00"),
        ("2026-03-07T23:00", "America/New_York", "22:00", "02:30",
         "2026-03-08T03:00:00-04:00"),
        # Fall back (New York, 2026-11-01 02:00 → 01:00): an end at 01:30, which happens
        # twice, is its first occurrence; 07:00 is after both.
        ("2026-10-31T23:00", "America/New_York", "22:00", "01:30",
         "2026-11-01T01:30:00-04:00"),
        ("2026-10-31T23:00", "America/New_York", "22:00", "07:00",
         "2026-11-01T07:00:00-05:00"),
        # Southern hemisphere, DST starts 2026-10-04 02:00 → 03:00 in Sydney.
        ("2026-10-03T23:00", "Australia/Sydney", "22:00", "02:15",
         "2026-10-04T03:00:00+11:00"),
    ],
)
def test_quiet_until(now: str, zone: str, start: str, end: str, until: str | None) -> None:
    assert wall(quiet_until(at(now, zone), start, end, zone), zone) == until


def test_quiet_hours_are_in_the_users_zone_not_utc() -> None:
    now = at("2026-06-10T23:30", "UTC")  # 08:30 in Tokyo, 19:30 in New York
    assert quiet_until(now, "22:00", "07:00", "UTC") is not None
    assert quiet_until(now, "22:00", "07:00", "Asia/Tokyo") is None
    assert quiet_until(now, "19:00", "20:00", "America/New_York") == at(
        "2026-06-10T20:00", "America/New_York")


def test_an_unknown_zone_falls_back_to_utc() -> None:
    now = at("2026-06-10T23:30", "UTC")
    assert quiet_until(now, "22:00", "07:00", "Mars/Olympus") == at("2026-06-11T07:00", "UTC")


def request(channels: list[str], *, category: str = "newsletter", priority: str = "normal",
            **recipient: Any) -> dict[str, Any]:
    return {"tenant_id": "acme", "category": category, "priority": priority,
            "channels": channels, "fallback_channels": ["webhook"],
            "recipients": [{"user_id": "u1", **recipient}]}


def prefs(**fields: Any) -> dict[str, Any]:
    return {**empty_state("acme", "u1"), **fields}


NOON = at("2026-06-10T12:00", "UTC")
NIGHT = at("2026-06-10T23:00", "UTC")


def test_no_preferences_changes_nothing() -> None:
    decision = decide(request(["email", "sms"]), None, NOON, REQUIRED)
    assert decision.channels == ["email", "sms"] and decision.suppressed == {}
    assert decision.defer_until_ms is None


def test_category_opt_out_suppresses_every_channel_even_critical() -> None:
    for priority in ("normal", "critical"):
        decision = decide(request(["email", "sms"], priority=priority),
                          prefs(category_opt_outs=["newsletter"]), NOON, REQUIRED)
        assert decision.channels == [] and decision.fallback_channels == []
        assert decision.suppressed == {"email": "category_opt_out", "sms": "category_opt_out"}


def test_channel_opt_out_suppresses_that_channel_and_its_fallback_use() -> None:
    decision = decide(request(["email", "sms"]),
                      prefs(channel_opt_outs=["sms", "webhook"]), NOON, REQUIRED)
    assert decision.channels == ["email"] and decision.fallback_channels == []
    assert decision.suppressed == {"sms": "channel_opt_out"}


def test_a_required_category_ignores_opt_outs_and_preferred_channels() -> None:
    decision = decide(request(["email", "sms"], category="security"),
                      prefs(category_opt_outs=["security"], channel_opt_outs=["sms"],
                            preferred_channels=["push"]), NOON, REQUIRED)
    assert decision.channels == ["email", "sms"] and decision.suppressed == {}


def test_required_categories_are_configurable() -> None:
    decision = decide(request(["email"], category="billing"),
                      prefs(category_opt_outs=["billing"]), NOON, ("billing",))
    assert decision.channels == ["email"]


def test_preferred_channels_narrow_a_request_that_names_one() -> None:
    decision = decide(request(["email", "sms", "push"]),
                      prefs(preferred_channels=["push"]), NOON, REQUIRED)
    assert decision.channels == ["push"]
    assert decision.suppressed == {"email": "not_preferred", "sms": "not_preferred"}
    # A request naming none of them goes as sent.
    decision = decide(request(["email"]), prefs(preferred_channels=["push"]), NOON, REQUIRED)
    assert decision.channels == ["email"] and decision.suppressed == {}


def test_quiet_hours_defer_until_the_end_unless_critical() -> None:
    quiet = prefs(quiet_hours={"start": "22:00", "end": "07:00"}, timezone="UTC")
    decision = decide(request(["email"]), quiet, NIGHT, REQUIRED)
    assert decision.defer_until_ms == at("2026-06-11T07:00", "UTC")
    assert decision.channels == ["email"] and decision.suppressed == {}
    assert decide(request(["email"], priority="critical"), quiet, NIGHT,
                  REQUIRED).defer_until_ms is None
    assert decide(request(["email"]), quiet, NOON, REQUIRED).defer_until_ms is None


def test_quiet_hours_use_the_recipients_zone_when_the_user_set_none() -> None:
    quiet = prefs(quiet_hours={"start": "22:00", "end": "07:00"})
    now = at("2026-06-10T23:00", "Asia/Tokyo")  # 14:00 UTC
    decision = decide(request(["email"], timezone="Asia/Tokyo"), quiet, now, REQUIRED)
    assert decision.defer_until_ms == at("2026-06-11T07:00", "Asia/Tokyo")
    assert decide(request(["email"]), quiet, now, REQUIRED).defer_until_ms is None


def test_a_suppressed_request_is_not_also_deferred() -> None:
    decision = decide(request(["email"]),
                      prefs(category_opt_outs=["newsletter"],
                            quiet_hours={"start": "22:00", "end": "07:00"}), NIGHT, REQUIRED)
    assert decision.channels == [] and decision.defer_until_ms is None


def test_locale_and_zone_are_offered_for_the_recipient() -> None:
    decision = decide(request(["email"]), prefs(locale="fr-CA", timezone="America/Toronto"),
                      NOON, REQUIRED)
    assert (decision.locale, decision.timezone) == ("fr-CA", "America/Toronto")


def test_the_narrowed_request_fills_locale_and_zone_only_where_empty() -> None:
    preferences = prefs(locale="fr-CA", timezone="America/Toronto", channel_opt_outs=["sms"])
    empty = request(["email", "sms"])
    out = narrowed(empty, decide(empty, preferences, NOON, REQUIRED))
    assert out["channels"] == ["email"] and out["fallback_channels"] == ["webhook"]
    assert (out["recipients"][0]["locale"], out["recipients"][0]["timezone"]) == (
        "fr-CA", "America/Toronto")
    given = request(["email"], locale="en-GB", timezone="Europe/London")
    out = narrowed(given, decide(given, preferences, NOON, REQUIRED))
    assert (out["recipients"][0]["locale"], out["recipients"][0]["timezone"]) == (
        "en-GB", "Europe/London")
    assert empty["channels"] == ["email", "sms"]  # the input is not changed
