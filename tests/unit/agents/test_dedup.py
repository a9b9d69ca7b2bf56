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
