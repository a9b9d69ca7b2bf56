"""Tests for agents/retry.py: the retry schedule and when a parked record is due."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from aiokafka.structs import ConsumerRecord

from agents.retry import DUE_HEADER, TARGET_HEADER, due_ms, retry_tier_for, tier_for_wait

TIERS_S = (5.0, 30.0, 300.0, 1800.0)  # the default tiers: 5s, 30s, 5m, 30m
APPENDED_AT = 1_700_000_000_000


@pytest.mark.parametrize(
    ("attempt", "retry_after_s", "tier"),
    [
        # The n-th failure goes to tier n-1 ...
        (1, None, 0),
        (2, None, 1),
        (3, None, 2),
        (4, None, 3),
        # ... until the tiers run out.
        (5, None, None),
        (9, None, None),
        # Retry-After moves it up to the first tier at least that long.
        (1, 1, 0),
        (1, 5, 0),
        (1, 5.5, 1),
        (1, 30, 1),
        (1, 31, 2),
        (1, 1800, 3),
        (2, 120, 2),
        # A short Retry-After never moves it down.
        (3, 1, 2),
        # Longer than every tier: dead-letter it rather than retry early.
        (1, 1801, None),
        (4, 3600, None),
        (5, 1, None),
    ],
)
def test_retry_tier_for(attempt: int, retry_after_s: float | None, tier: int | None) -> None:
    assert retry_tier_for(attempt, TIERS_S, retry_after_s) == tier


def test_retry_tier_for_a_single_tier() -> None:
    assert retry_tier_for(1, [10]) == 0
    assert retry_tier_for(2, [10]) is None


@pytest.mark.parametrize(
    ("wait_s", "tier"),
    [
        (-1, 0),
        (0, 0),
        (4.9, 0),
        (5, 0),
        (5.001, 1),
        (30, 1),
        (299, 2),
        (300, 2),
        (1799, 3),
        (1800, 3),
        (10_000, 3),  # longer than every tier: the longest, and it is parked again
    ],
)
def test_tier_for_wait(wait_s: float, tier: int) -> None:
    assert tier_for_wait(wait_s, TIERS_S) == tier


def record(headers: Sequence[tuple[str, bytes]] | None) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic="tidings.retry.webhook.30s",
        partition=0,
        offset=7,
        timestamp=APPENDED_AT,
        timestamp_type=0,
        key=b"acme/u1",
        value=b"\xc3\x01",
        checksum=None,
        serialized_key_size=7,
        serialized_value_size=2,
        headers=headers,
    )


@pytest.mark.parametrize(
    ("headers", "delay_s", "due"),
    [
        pytest.param([], 30, APPENDED_AT + 30_000, id="no header: append time + delay"),
        pytest.param(None, 30, APPENDED_AT + 30_000, id="headers None"),
        pytest.param(
            [(TARGET_HEADER, b"x")], 5, APPENDED_AT + 5_000, id="other headers only"
        ),
        pytest.param(
            [(DUE_HEADER, str(APPENDED_AT + 12_000).encode())], 30, APPENDED_AT + 12_000,
            id="header earlier than the bound",
        ),
        pytest.param(
            [(DUE_HEADER, str(APPENDED_AT + 30_000).encode())], 30, APPENDED_AT + 30_000,
            id="header at the bound",
        ),
        pytest.param(
            [(DUE_HEADER, str(APPENDED_AT + 3_600_000).encode())], 30, APPENDED_AT + 30_000,
            id="header later than the bound is bounded",
        ),
        pytest.param(
            [(DUE_HEADER, str(APPENDED_AT - 1_000).encode())], 30, APPENDED_AT - 1_000,
            id="header already past",
        ),
        pytest.param(
            [(TARGET_HEADER, b"x"), (DUE_HEADER, str(APPENDED_AT + 1).encode())], 30,
            APPENDED_AT + 1, id="header among others",
        ),
        pytest.param([], 0.5, APPENDED_AT + 500, id="sub-second delay"),
    ],
)
def test_due_ms(headers: list[tuple[str, bytes]] | None, delay_s: float, due: int) -> None:
    assert due_ms(record(headers), delay_s) == due
