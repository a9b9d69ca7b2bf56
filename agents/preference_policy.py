"""Preference decisions, without Kafka: which channels a user gets a notification on, and
whether it waits for the end of their quiet hours.

The order of the checks, for one single-recipient request:

1. A *required* category (settings: `preferences_required_categories`, e.g. security) ignores
   every opt-out and the preferred channels: a password reset goes wherever it was sent.
2. A category opt-out suppresses every channel; a channel opt-out suppresses that channel.
   Priority does not matter here: `critical` never passes an opt-out of a category that is
   not required.
3. Preferred channels: when the user has some and the request names at least one of them,
   the request goes only on those; when it names none, it goes as sent (a preference, not an
   opt-out).
4. Quiet hours, in the user's time zone: the request waits until the window ends, unless it
   is `critical`.

The user's locale and time zone fill the recipient's when the request leaves them empty, so
the renderer formats in the user's language and zone.
"""

from __future__ import annotations

import datetime
import zoneinfo
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from streams.preferences import parse_wall_time

__all__ = ["PreferenceDecision", "decide", "narrowed", "quiet_until"]

UTC = datetime.UTC
CATEGORY_OPT_OUT, CHANNEL_OPT_OUT, NOT_PREFERRED = (
    "category_opt_out", "channel_opt_out", "not_preferred")


@dataclass(slots=True)
class PreferenceDecision:
    channels: list[str]  # what is still sent
    fallback_channels: list[str]
    suppressed: dict[str, str] = field(default_factory=dict)  # channel -> cause
    defer_until_ms: int | None = None
    locale: str | None = None  # to fill an empty recipient.locale
    timezone: str | None = None  # to fill an empty recipient.timezone


def _zone(name: str | None) -> datetime.tzinfo:
    if not name:
        return UTC
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        # A bad zone on a request (the preferences CLI checks its own) falls back to UTC
        # rather than failing the notification.
        return UTC


def _instant(local: datetime.datetime) -> datetime.datetime:
    """The first instant whose wall time in `local.tzinfo` is at or after `local` (naive
    wall time + zone). Through a DST gap (a wall time that never happens: 02:30 on a
    spring-forward night) that is the transition itself; in a fold (01:30 twice in the
    autumn), the first occurrence."""
    zone = local.tzinfo
    assert zone is not None
    early = local.replace(fold=1).astimezone(UTC)
    late = local.replace(fold=0).astimezone(UTC)
    if early > late:  # the first of two occurrences is fold=0 (PEP 495)
        early, late = late, early
    wall = local.replace(tzinfo=None)
    if early.astimezone(zone).replace(tzinfo=None) == wall:
        return early  # the wall time exists (the first occurrence when it exists twice)
    # A gap: find the transition between the two readings, to the second, by bisection.
    low, high = early, late
    while high - low > datetime.timedelta(seconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(zone).replace(tzinfo=None) >= wall:
            high = middle
        else:
            low = middle
    return high.replace(microsecond=0)


def quiet_until(now_ms: int, start: str, end: str, timezone: str | None) -> int | None:
    """When the quiet window that `now_ms` falls in ends (epoch ms), or None outside it.

    `start`/`end` are local wall times; `start > end` is a window across midnight
    (22:00-07:00). The end is found on the local calendar, so a DST change inside the window
    moves it with the wall clock.
    """
    zone = _zone(timezone)
    now = datetime.datetime.fromtimestamp(now_ms / 1000, tz=UTC).astimezone(zone)
    start_s, end_s = parse_wall_time(start), parse_wall_time(end)
    seconds = now.hour * 3600 + now.minute * 60 + now.second
    today = now.date()
    if start_s < end_s:
        if not start_s <= seconds < end_s:
            return None
        end_day = today
    else:  # across midnight
        if seconds >= start_s:
            end_day = today + datetime.timedelta(days=1)
        elif seconds < end_s:
            end_day = today
        else:
            return None
    hours, rest = divmod(end_s, 3600)
    wall = datetime.datetime.combine(end_day, datetime.time(hours, rest // 60, rest % 60),
                                     tzinfo=zone)
    return int(_instant(wall).timestamp() * 1000)


def decide(request: Mapping[str, Any], preferences: Mapping[str, Any] | None, now_ms: int,
           required_categories: Collection[str]) -> PreferenceDecision:
    """What the user's preferences make of one single-recipient request."""
    channels = list(request["channels"])
    fallback = list(request.get("fallback_channels") or [])
    if preferences is None:
        return PreferenceDecision(channels, fallback)
    recipient = request["recipients"][0]
    decision = PreferenceDecision(channels, fallback, locale=preferences.get("locale"),
                                  timezone=preferences.get("timezone"))
    if request["category"] not in required_categories:
        opted_out_channels = set(preferences.get("channel_opt_outs") or ())
        if request["category"] in set(preferences.get("category_opt_outs") or ()):
            decision.suppressed = dict.fromkeys(channels, CATEGORY_OPT_OUT)
            decision.channels, decision.fallback_channels = [], []
            return decision
        decision.suppressed = {c: CHANNEL_OPT_OUT for c in channels if c in opted_out_channels}
        decision.channels = [c for c in channels if c not in opted_out_channels]
        decision.fallback_channels = [c for c in fallback if c not in opted_out_channels]
        preferred = preferences.get("preferred_channels") or []
        if preferred and any(c in preferred for c in decision.channels):
            decision.suppressed.update(
                {c: NOT_PREFERRED for c in decision.channels if c not in preferred})
            decision.channels = [c for c in decision.channels if c in preferred]
    window = preferences.get("quiet_hours")
    if window and decision.channels and request["priority"] != "critical":
        zone = preferences.get("timezone") or recipient.get("timezone")
        decision.defer_until_ms = quiet_until(now_ms, window["start"], window["end"], zone)
    return decision


def narrowed(request: Mapping[str, Any], decision: PreferenceDecision) -> dict[str, Any]:
    """The request as it goes on: the channels left, and the user's locale and time zone in
    the recipient where the request left them empty (what the renderer reads)."""
    recipient = request["recipients"][0]
    return {**request, "channels": decision.channels,
            "fallback_channels": decision.fallback_channels,
            "recipients": [{**recipient,
                            "locale": recipient.get("locale") or decision.locale,
                            "timezone": recipient.get("timezone") or decision.timezone}]}
