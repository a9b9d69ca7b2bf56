"""A tenant's series over closed windows: which windows close, and what gets flagged."""

from __future__ import annotations

import random
from typing import Any

from agents.tenant_series import SeriesConfig, TenantSeries
from streams import window_stats as ws

W = 10_000
CONFIG = SeriesConfig(window_ms=W, alpha=0.1, z=4.0, warmup=5, min_count=10)


class Windows:
    """A stand-in for the windowed table: (row, window start) → value."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, int], dict[str, Any]] = {}

    def add(self, window: int, channel: str | None, **counts: Any) -> None:
        value = ws.empty()
        for name, n in counts.items():
            value[name] = n
        key = (ws.row_key("acme", channel), window * W)
        self.rows[key] = ws.merge(self.rows.get(key), value)

    def lookup(self, row: str, start_ms: int) -> Any:
        return self.rows.get((row, start_ms))


def steady(windows: Windows, series: TenantSeries, count: int, rng: random.Random,
           start: int = 0) -> list[Any]:
    findings = []
    for w in range(start, start + count):
        sent = rng.randint(90, 110)
        delivered = sent - rng.randint(0, 3)
        windows.add(w, None, sent=sent)
        windows.add(w, "webhook", delivered=delivered, failed=sent - delivered,
                    failures={"webhook_503": sent - delivered})
        series.saw("webhook")
        findings += series.close_until(w * W, windows.lookup)
    return findings


def test_windows_close_when_a_later_one_opens() -> None:
    windows, series = Windows(), TenantSeries("acme", CONFIG)
    assert series.close_until(5 * W, windows.lookup) == []
    assert series.open_window_ms == 5 * W
    assert series.close_until(5 * W, windows.lookup) == []
    series.close_until(8 * W, windows.lookup)
    assert series.open_window_ms == 8 * W
    assert series.detectors["sent"].seen == 3  # windows 5, 6, 7 (6 and 7 empty)
    assert series.close_until(2 * W, windows.lookup) == []  # a late status closes nothing


def test_steady_traffic_flags_nothing() -> None:
    windows, series = Windows(), TenantSeries("acme", CONFIG)
    assert steady(windows, series, 300, random.Random(1)) == []


def test_a_send_rate_spike_a_delivery_drop_and_a_failure_surge_are_flagged() -> None:
    rng = random.Random(2)
    windows, series = Windows(), TenantSeries("acme", CONFIG)
    steady(windows, series, 30, rng)
    windows.add(30, None, sent=600)
    windows.add(30, "webhook", delivered=40, failed=60, failures={"webhook_503": 60})
    findings = series.close_until(31 * W, windows.lookup)  # closes windows 29 and 30
    kinds = {(f.kind, f.series, f.channel) for f in findings}
    assert kinds == {
        ("send_rate_spike", "sent", None),
        ("delivery_rate_drop", "delivery_rate:webhook", "webhook"),
        ("failure_surge", "failures:webhook_503", None),
    }
    assert all(f.window_start_ms == 30 * W for f in findings)
    spike = next(f for f in findings if f.kind == "send_rate_spike")
    assert spike.verdict.value == 600 and 90 < spike.verdict.expected < 110


def test_a_delivery_rate_on_a_handful_of_outcomes_is_not_judged() -> None:
    windows, series = Windows(), TenantSeries("acme", CONFIG)
    series.saw("sms")
    for w in range(20):
        windows.add(w, "sms", delivered=3)
        series.close_until(w * W, windows.lookup)
    windows.add(20, "sms", failed=3)
    assert series.close_until(21 * W, windows.lookup) == []
    assert series.close_until(22 * W, windows.lookup) == []


def test_state_survives_a_round_trip_through_a_table() -> None:
    windows, series = Windows(), TenantSeries("acme", CONFIG)
    steady(windows, series, 12, random.Random(3))
    restored = TenantSeries.from_dict("acme", CONFIG, series.to_dict())
    assert restored == series


def test_a_failure_class_never_seen_before_is_flagged_on_its_first_surge() -> None:
    windows, series = Windows(), TenantSeries("acme", CONFIG)
    for w in range(10):
        windows.add(w, None, sent=100)
        series.close_until(w * W, windows.lookup)
    windows.add(10, None, sent=100)
    windows.add(10, "webhook", failed=12, failures={"webhook_500": 12})
    series.saw("webhook")
    findings = series.close_until(12 * W, windows.lookup)
    assert [(f.kind, f.series) for f in findings] == [("failure_surge", "failures:webhook_500")]
