"""User preferences: the contract (changes as idempotent ops, how they fold into a state) and
the client that publishes changes to the compacted `<prefix>.preferences` topic.

    with PreferencesClient(load_settings()) as preferences:
        preferences.change("acme", "u1", [("opt_out_channel", "sms"),
                                           ("set_quiet_hours", "22:00-07:00"),
                                           ("set_timezone", "Europe/Paris")])
        preferences.show("acme", "u1")

Why changes rather than whole records: the unsubscribe endpoint and the CLI each change one
thing and cannot see the stored state. They publish a `change`; the preferences stage (the
only writer of states) folds it into the user's state in its table and writes the result back
to the same key as a `state` with the next revision. The topic is compacted with
`min.compaction.lag.ms` of a week, so a change is never compacted away before the stage has
folded it, and the topic alone rebuilds every user's preferences.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any

from streams.errors import ValidationError
from streams.keyed import KeyedProducer, read_records
from streams.requests import now_ms
from streams.serde import serde
from streams.settings import CHANNELS, Settings

__all__ = ["OPS", "PreferencesClient", "apply_change", "check_op", "empty_state",
           "fold", "parse_quiet_hours", "preferences_key"]

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@\-]{0,127}$")
# BCP 47, loosely: language, then subtags (en, fr-CA, zh-Hant-TW).
_LOCALE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
_WALL_TIME = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])(?::([0-5][0-9]))?$")
OPS = ("opt_out_channel", "opt_in_channel", "opt_out_category", "opt_in_category",
       "set_quiet_hours", "set_timezone", "set_locale", "set_preferred_channels")


def preferences_key(tenant_id: str, user_id: str) -> bytes:
    """The same key as the user's dispatch records (agents/route.py `recipient_key`)."""
    return f"{tenant_id}/{user_id}".encode()


def parse_wall_time(text: str) -> int:
    """Seconds after local midnight of `HH:MM` or `HH:MM:SS`."""
    match = _WALL_TIME.match(text)
    if match is None:
        raise ValidationError(f"{text!r} is not a time of day HH:MM or HH:MM:SS",
                              field="quiet_hours")
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + int(seconds or 0)


def parse_quiet_hours(text: str) -> dict[str, str]:
    """`22:00-07:00` → {"start": "22:00", "end": "07:00"}."""
    start, sep, end = text.partition("-")
    if not sep:
        raise ValidationError(f"quiet hours {text!r} must be START-END, e.g. 22:00-07:00",
                              field="quiet_hours")
    start, end = start.strip(), end.strip()
    if parse_wall_time(start) == parse_wall_time(end):
        raise ValidationError("quiet hours start and end are the same time",
                              field="quiet_hours")
    return {"start": start, "end": end}


def check_timezone(name: str) -> str:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationError(f"unknown time zone {name!r} (an IANA name like Europe/Paris)",
                              field="timezone") from exc
    return name


def _channels(text: str) -> list[str]:
    names = [c.strip() for c in text.split(",") if c.strip()]
    unknown = sorted(set(names) - set(CHANNELS))
    if unknown or not names:
        raise ValidationError(f"unknown channels {unknown}; known: {list(CHANNELS)}",
                              field="preferred_channels")
    return names


def check_op(op: str, value: str | None, required_categories: Sequence[str] = ()) -> None:
    """`ValidationError` unless (op, value) is a change the preferences stage can apply."""
    if op not in OPS:
        raise ValidationError(f"unknown op {op!r}; known: {list(OPS)}", field="ops")
    if op.endswith("_channel"):
        if value not in CHANNELS:
            raise ValidationError(f"{op}: unknown channel {value!r}; known: {list(CHANNELS)}",
                                  field="ops")
    elif op.endswith("_category"):
        if not isinstance(value, str) or not _ID.match(value):
            raise ValidationError(f"{op}: a category is a short identifier", field="ops")
        if op == "opt_out_category" and value in required_categories:
            raise ValidationError(f"{value} is a required category: users cannot opt out of it",
                                  field="ops")
    elif value is not None:
        if op == "set_quiet_hours":
            parse_quiet_hours(value)
        elif op == "set_timezone":
            check_timezone(value)
        elif op == "set_locale" and not _LOCALE.match(value):
            raise ValidationError(f"{value!r} is not a BCP 47 locale like fr-CA", field="ops")
        elif op == "set_preferred_channels":
            _channels(value)


def empty_state(tenant_id: str, user_id: str) -> dict[str, Any]:
    return {
        "tenant_id": tenant_id, "user_id": user_id, "kind": "state", "revision": 0,
        "channel_opt_outs": [], "category_opt_outs": [], "quiet_hours": None,
        "timezone": None, "locale": None, "preferred_channels": [], "ops": [],
        "source": "tidings", "updated_at": 0,
    }


def _add(items: list[str], value: str) -> list[str]:
    return sorted({*items, value})


def _remove(items: list[str], value: str) -> list[str]:
    return [item for item in items if item != value]


def apply_op(state: dict[str, Any], op: str, value: str | None) -> None:
    """Apply one op in place. Every op is idempotent, so folding a change twice is harmless."""
    if op == "opt_out_channel" and value:
        state["channel_opt_outs"] = _add(state["channel_opt_outs"], value)
    elif op == "opt_in_channel" and value:
        state["channel_opt_outs"] = _remove(state["channel_opt_outs"], value)
    elif op == "opt_out_category" and value:
        state["category_opt_outs"] = _add(state["category_opt_outs"], value)
    elif op == "opt_in_category" and value:
        state["category_opt_outs"] = _remove(state["category_opt_outs"], value)
    elif op == "set_quiet_hours":
        state["quiet_hours"] = parse_quiet_hours(value) if value else None
    elif op == "set_timezone":
        state["timezone"] = value or None
    elif op == "set_locale":
        state["locale"] = value or None
    elif op == "set_preferred_channels":
        state["preferred_channels"] = _channels(value) if value else []


def apply_change(state: Mapping[str, Any] | None, change: Mapping[str, Any], now: int
                 ) -> dict[str, Any]:
    """The state after `change`: its ops in order, then the next revision."""
    new = dict(state) if state else empty_state(change["tenant_id"], change["user_id"])
    for item in change["ops"]:
        apply_op(new, item["op"], item.get("value"))
    new.update(kind="state", revision=int(new["revision"]) + 1, ops=[],
               source=change.get("source") or "api", updated_at=now)
    return new


def fold(state: dict[str, Any] | None, record: Mapping[str, Any], now: int
         ) -> dict[str, Any] | None:
    """The stored state after one record of the topic; None when the record changes nothing.

    A change makes the next revision; a state replaces the stored one only if it is newer (the
    stage reads back its own writes, and a state older than what it holds must not win).
    """
    if record["kind"] == "change":
        return apply_change(state, record, now)
    if state is None or int(record["revision"]) > int(state["revision"]):
        return dict(record)
    return None


class PreferencesClient:
    """Publish preference changes; show a user's preferences as the stage will hold them."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._topic = settings.topic("preferences")
        self._serde = serde("Preferences")
        self._producer: KeyedProducer | None = None

    def change_record(self, tenant_id: str, user_id: str,
                      ops: Iterable[tuple[str, str | None]], *, source: str = "api"
                      ) -> dict[str, Any]:
        for field, value in (("tenant_id", tenant_id), ("user_id", user_id)):
            if not isinstance(value, str) or not _ID.match(value):
                raise ValidationError(f"{field} must be 1-128 characters of letters, digits "
                                      f"and ._:@-", field=field)
        items = [{"op": op, "value": value} for op, value in ops]
        if not items:
            raise ValidationError("no change given", field="ops")
        for item in items:
            check_op(str(item["op"]), item["value"],
                     self._settings.preferences_required_categories)
        return {**empty_state(tenant_id, user_id), "kind": "change", "ops": items,
                "source": source, "updated_at": now_ms()}

    def change(self, tenant_id: str, user_id: str, ops: Iterable[tuple[str, str | None]], *,
               source: str = "api") -> None:
        """Check and publish one change; returns once the broker acknowledged it."""
        record = self.change_record(tenant_id, user_id, ops, source=source)
        if self._producer is None:
            self._producer = KeyedProducer(self._settings)
        self._producer.send(self._topic, preferences_key(tenant_id, user_id),
                            self._serde.encode(record))
        self._producer.flush()

    def show(self, tenant_id: str, user_id: str) -> dict[str, Any] | None:
        """The user's state folded from the topic (pending changes included); None if none."""
        key = preferences_key(tenant_id, user_id)
        state: dict[str, Any] | None = None
        for _, value in read_records(self._settings, self._topic, only_key=key):
            if value is None:
                state = None
                continue
            state = fold(state, self._serde.decode(value), now_ms()) or state
        return state

    def __enter__(self) -> PreferencesClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._producer is not None:
            self._producer.flush()
