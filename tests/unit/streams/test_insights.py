"""`tidings insights`: the summary of windows and anomalies, its text, and its arguments."""

from __future__ import annotations

import click
import pytest

from streams import window_stats as ws
from streams.cli_analytics import parse_duration
from streams.insights import render, summarize


def window(**counts: object) -> dict[str, object]:
    value = ws.empty()
    value.update(counts)
    return value


def latency(*values_ms: int) -> dict[str, int]:
    histogram: dict[str, int] = {}
    for ms in values_ms:
        key = str(ws.latency_bucket(ms))
        histogram[key] = histogram.get(key, 0) + 1
    return histogram


WINDOWS = {
    ("acme/*", 0): window(sent=60, held=5),
    ("acme/*", 60_000): window(sent=40, failures={"rate_limited": 2}),
    ("acme/webhook", 0): window(delivered=50, failed=5, retried=4, dead_lettered=1,
                                failures={"webhook_503": 4, "dead_letter:deliver": 1},
                                latency=latency(*[20] * 45, *[900] * 5)),
    ("acme/sms", 60_000): window(delivered=45, failures={"sms_429": 7}),
    ("other/*", 0): window(sent=3),
    ("other/webhook", 0): window(delivered=3, latency=latency(10, 10, 10)),
}
ANOMALY = {"anomaly_id": "anm_1", "tenant_id": "acme", "channel": None,
           "kind": "runaway_hold", "series": "guard:sent", "observed": 70.0, "expected": 9.5,
           "score": 13.2, "threshold": 6.0, "window_start": 0, "window_end": 10_000,
           "detected_at": 4_000, "action": "hold", "details": {}}


def test_totals_rates_latency_and_top_failures_per_tenant() -> None:
    report = summarize(WINDOWS, [ANOMALY])
    acme = report["acme"]
    assert (acme["sent"], acme["held"], acme["delivered"], acme["failed"]) == (100, 5, 95, 5)
    assert acme["delivery_rate"] == pytest.approx(95 / 100)
    assert acme["top_failures"][:2] == [{"cause": "sms_429", "count": 7},
                                         {"cause": "webhook_503", "count": 4}]
    webhook = acme["channels"]["webhook"]
    assert webhook["windows"] == 1 and webhook["retried"] == 4
    assert webhook["delivery_rate"] == pytest.approx(50 / 55)
    assert 20 <= webhook["latency_ms"]["p50"] <= 24
    assert 900 <= webhook["latency_ms"]["p99"] <= 900 * 2 ** 0.25 + 1
    assert acme["channels"]["sms"]["latency_ms"]["p50"] is None
    assert [a["anomaly_id"] for a in acme["anomalies"]] == ["anm_1"]
    assert report["other"]["anomalies"] == []


def test_one_tenant() -> None:
    assert set(summarize(WINDOWS, [ANOMALY], "other")) == {"other"}
    assert summarize(WINDOWS, [ANOMALY], "nobody") == {}


def test_a_tenant_with_anomalies_but_no_windows_in_range_is_shown() -> None:
    report = summarize({}, [ANOMALY])
    assert report["acme"]["anomalies"][0]["kind"] == "runaway_hold"
    assert "anomaly runaway_hold guard:sent: 70 (expected 9.5, z 13.2) → hold" in render(report)


def test_the_text_an_operator_reads() -> None:
    text = render(summarize(WINDOWS, [ANOMALY]))
    lines = text.splitlines()
    assert lines[0].startswith("acme: sent 100, held 5, delivered 95, failed 5, "
                               "dead-lettered 1, delivery rate 95.0%")
    assert any(line.strip().startswith("webhook  delivered 50, failed 5") for line in lines)
    assert "top failures: sms_429 ×7, webhook_503 ×4" in text
    assert render({}) == "no traffic in this range"


@pytest.mark.parametrize(("text", "seconds"), [
    ("90", 90), ("90s", 90), ("15m", 900), ("1h", 3600), ("1.5h", 5400), ("7d", 604800),
])
def test_durations(text, seconds) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "-5m", "1w", "h", "5 minutes"])
def test_bad_durations_are_refused_with_an_example(text) -> None:
    with pytest.raises(click.BadParameter, match="like 90s, 15m"):
        parse_duration(text)
