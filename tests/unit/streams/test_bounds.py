"""Tests for streams/bounds.py: reading --from/--to, and resolving them per partition."""

from __future__ import annotations

import pytest

from streams.bounds import (
    Bound,
    BoundError,
    PartitionRange,
    check_order,
    parse_bound,
    partition_range,
    resolve,
)

NOW = 1_764_622_800_000  # 2025-12-01T21:00:00Z


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("0", Bound("offset", 0), id="offset zero"),
        pytest.param("1234", Bound("offset", 1234), id="offset"),
        pytest.param("earliest", Bound("earliest"), id="earliest"),
        pytest.param("latest", Bound("latest"), id="latest"),
        pytest.param("now", Bound("time", NOW), id="now"),
        pytest.param("@1764622800123", Bound("time", 1_764_622_800_123), id="epoch ms"),
        pytest.param("-15m", Bound("time", NOW - 15 * 60_000), id="minutes back"),
        pytest.param("-2h", Bound("time", NOW - 2 * 3_600_000), id="hours back"),
        pytest.param("-30s", Bound("time", NOW - 30_000), id="seconds back"),
        pytest.param("-1d", Bound("time", NOW - 86_400_000), id="a day back"),
        pytest.param("-1.5h", Bound("time", NOW - 5_400_000), id="fractional"),
        pytest.param("2025-12-01T21:00:00Z", Bound("time", NOW), id="ISO with Z"),
        pytest.param("2025-12-01T22:00:00+01:00", Bound("time", NOW), id="ISO with offset"),
        pytest.param("2025-12-01T21:00:00.250Z", Bound("time", NOW + 250), id="ISO with ms"),
        pytest.param(" 42 ", Bound("offset", 42), id="spaces around"),
    ],
)
def test_parse_bound(text: str, expected: Bound) -> None:
    parsed = parse_bound(text, now_ms=NOW)
    assert (parsed.kind, parsed.value) == (expected.kind, expected.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("2025-12-01T21:00:00", "has no time zone", id="naive time"),
        pytest.param("yesterday", "is not a time or an offset", id="words"),
        pytest.param("-15x", "is not a time or an offset", id="unknown unit"),
        pytest.param("-5", "is not a time or an offset", id="negative offset"),
        pytest.param("12:30", "is not a time or an offset", id="clock time"),
        pytest.param("", "is not a time or an offset", id="empty"),
    ],
)
def test_unreadable_bounds_say_what_is_accepted(text: str, message: str) -> None:
    with pytest.raises(BoundError, match=message) as caught:
        parse_bound(text, now_ms=NOW, option="--from")
    assert str(caught.value).startswith("--from:")


@pytest.mark.parametrize(
    ("start", "end"),
    [
        pytest.param("5", "2", id="offsets backwards"),
        pytest.param("2025-12-01T21:00:00Z", "2025-12-01T20:00:00Z", id="times backwards"),
        pytest.param("-1h", "-2h", id="relative backwards"),
        pytest.param("latest", "5", id="from latest"),
        pytest.param("0", "earliest", id="to earliest"),
    ],
)
def test_ranges_that_end_before_they_start_are_refused(start: str, end: str) -> None:
    with pytest.raises(BoundError):
        check_order(parse_bound(start, now_ms=NOW), parse_bound(end, now_ms=NOW))


@pytest.mark.parametrize(
    ("start", "end"),
    [("2", "5"), ("5", "5"), ("-2h", "now"), ("earliest", "latest"), ("latest", "latest"),
     ("3", "-1h")],  # an offset against a time is only known per partition
)
def test_ranges_in_order_pass(start: str, end: str) -> None:
    check_order(parse_bound(start, now_ms=NOW), parse_bound(end, now_ms=NOW))


@pytest.mark.parametrize(
    ("bound", "for_time", "expected"),
    [
        pytest.param(Bound("earliest"), None, 10, id="earliest is the log start"),
        pytest.param(Bound("latest"), None, 50, id="latest is the high watermark"),
        pytest.param(Bound("offset", 30), None, 30, id="offset inside"),
        pytest.param(Bound("offset", 3), None, 10, id="offset below the log start"),
        pytest.param(Bound("offset", 90), None, 50, id="offset past the end"),
        pytest.param(Bound("time", NOW), 25, 25, id="time found"),
        pytest.param(Bound("time", NOW), -1, 50, id="no record that late"),
        pytest.param(Bound("time", NOW), None, 50, id="no answer"),
    ],
)
def test_resolve(bound: Bound, for_time: int | None, expected: int) -> None:
    assert resolve(bound, low=10, high=50, offset_for_time=for_time) == expected


def test_a_time_range_resolves_to_half_open_offsets_per_partition() -> None:
    start, end = Bound("time", NOW - 1000), Bound("time", NOW)
    rng = partition_range(3, start, end, low=0, high=100, start_for_time=40, end_for_time=45)
    assert rng == PartitionRange(3, 40, 45)
    assert rng.count == 5


def test_an_offset_start_past_a_time_end_is_an_empty_range() -> None:
    rng = partition_range(0, Bound("offset", 60), Bound("time", NOW), low=0, high=100,
                          end_for_time=45)
    assert rng.count == 0
