"""Tests for agents/dedup.py: the idempotency-key window."""

from __future__ import annotations

from typing import Any

import pytest

from agents.dedup import DedupWindow

WINDOW_MS = 60_000
SEEN_AT = 1_700_000_000_000
FIRST = "ntf_first"


@pytest.mark.parametrize(
    ("seen", "notification_id", "now_ms", "duplicate"),
    [
        pytest.param(None, FIRST, SEEN_AT, False, id="first time"),
        pytest.param([FIRST, SEEN_AT], "ntf_other", SEEN_AT, True, id="same instant"),
        pytest.param([FIRST, SEEN_AT], "ntf_other", SEEN_AT + 1, True, id="inside window"),
        pytest.param(
            [FIRST, SEEN_AT], "ntf_other", SEEN_AT + WINDOW_MS - 1, True, id="last ms of window"
        ),
        pytest.param(
            [FIRST, SEEN_AT], "ntf_other", SEEN_AT + WINDOW_MS, False, id="exactly at window"
        ),
        pytest.param(
            [FIRST, SEEN_AT], "ntf_other", SEEN_AT + 10 * WINDOW_MS, False, id="long after"
        ),
        pytest.param([FIRST, SEEN_AT], FIRST, SEEN_AT + 1, False, id="replay of the same id"),
        pytest.param([FIRST, SEEN_AT], FIRST, SEEN_AT + WINDOW_MS, False, id="late replay"),
    ],
)
def test_is_duplicate(seen: Any, notification_id: str, now_ms: int, duplicate: bool) -> None:
    assert DedupWindow(WINDOW_MS).is_duplicate(seen, notification_id, now_ms) is duplicate


def test_an_entry_is_what_is_duplicate_reads() -> None:
    window = DedupWindow(WINDOW_MS)
    entry = window.entry(FIRST, SEEN_AT)
    assert entry == [FIRST, SEEN_AT]
    assert window.is_duplicate(entry, "ntf_other", SEEN_AT + 1)
    assert not window.is_duplicate(entry, FIRST, SEEN_AT + 1)


def test_an_expired_key_is_overwritten_and_starts_a_new_window() -> None:
    window = DedupWindow(WINDOW_MS)
    table: dict[str, list[Any]] = {}
    key = window.key("acme", "order-1")
    table[key] = window.entry(FIRST, SEEN_AT)
    later = SEEN_AT + WINDOW_MS
    assert not window.is_duplicate(table.get(key), "ntf_second", later)
    table[key] = window.entry("ntf_second", later)
    assert window.is_duplicate(table.get(key), "ntf_third", later + 1)
    assert window.is_duplicate(table.get(key), FIRST, later + 1)


@pytest.mark.parametrize(
    ("tenant_id", "idempotency_key", "expected"),
    [
        ("acme", "order-1", "acme/order-1"),
        ("globex", "order-1", "globex/order-1"),
    ],
)
def test_key_is_scoped_by_tenant(tenant_id: str, idempotency_key: str, expected: str) -> None:
    assert DedupWindow.key(tenant_id, idempotency_key) == expected


@pytest.mark.parametrize(
    ("seen", "notification_id", "now_ms", "stored"),
    [
        pytest.param(None, FIRST, SEEN_AT, [FIRST, SEEN_AT], id="first sighting"),
        pytest.param([FIRST, SEEN_AT], FIRST, SEEN_AT + 5_000, [FIRST, SEEN_AT],
                     id="replay keeps the first sighting"),
        pytest.param([FIRST, SEEN_AT], FIRST, SEEN_AT + WINDOW_MS, [FIRST, SEEN_AT + WINDOW_MS],
                     id="replay after the window starts a new one"),
        pytest.param([FIRST, SEEN_AT], "ntf_second", SEEN_AT + WINDOW_MS,
                     ["ntf_second", SEEN_AT + WINDOW_MS], id="expired key taken over"),
    ],
)
def test_remember(seen: Any, notification_id: str, now_ms: int, stored: list[Any]) -> None:
    assert DedupWindow(WINDOW_MS).remember(seen, notification_id, now_ms) == stored


def test_a_replay_does_not_stretch_the_window_for_a_later_request() -> None:
    """The original at t0, a replay of it at t0 + 50 s, a new request with the same key at
    t0 + 60 s: the window counts from t0, so the new request is not a duplicate."""
    window = DedupWindow(WINDOW_MS)
    entry = window.remember(None, FIRST, SEEN_AT)
    entry = window.remember(entry, FIRST, SEEN_AT + 50_000)
    assert not window.is_duplicate(entry, "ntf_new", SEEN_AT + WINDOW_MS)
