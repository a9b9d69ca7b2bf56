"""What each status adds to its window, merging windows, and latency percentiles."""

from __future__ import annotations

import random

import pytest

from streams import window_stats as ws


def status(name: str, channel: str | None = "webhook", **fields: object) -> dict[str, object]:
    return {"tenant_id": "acme", "notification_id": "ntf_1", "channel": channel,
            "status": name, "reason": None, "status_code": None, "latency_ms": None, **fields}


# One row per status a stage emits: the counters it adds and its failure class.
ROWS = [
    (status("accepted", None), {"sent": 1}, {}),
    (status("held", None), {"held": 1}, {}),
    (status("delivered", latency_ms=40), {"delivered": 1}, {}),
    (status("retrying", status_code=503, reason="HTTP 503"), {"retried": 1, "failed": 1},
     {"webhook_503": 1}),
    (status("retrying", reason="connect timeout"), {"retried": 1, "failed": 1},
     {"timeout": 1}),
    (status("retrying", reason="connection refused"), {"retried": 1, "failed": 1},
     {"connection": 1}),
    (status("retrying", reason="circuit open for 127.0.0.1:80"), {"retried": 1},
     {"circuit_open": 1}),
    (status("dead_lettered", reason="deliver: HTTP 400"),
     {"failed": 1, "dead_lettered": 1}, {"dead_letter:deliver": 1}),
    (status("dead_lettered", None, reason="validate: priority must be"),
     {"failed": 1, "dead_lettered": 1}, {"dead_letter:validate": 1}),
    (status("failover", reason="push → sms: gone"), {"failed": 1}, {"failover": 1}),
    (status("address_invalid", status_code=410), {}, {"address_invalid": 1}),
    (status("endpoint_disabled", status_code=410), {}, {"endpoint_disabled": 1}),
    (status("suppressed"), {}, {"suppressed": 1}),
    (status("rate_limited", None), {}, {"rate_limited": 1}),
]


@pytest.mark.parametrize(("record", "counters", "failures"), ROWS,
                         ids=[f"{r[0]['status']}-{i}" for i, r in enumerate(ROWS)])
def test_what_a_status_adds(record, counters, failures) -> None:
    added = ws.contribution(record)
    assert added is not None
    assert {k: added[k] for k in ws.COUNTERS if added[k]} == counters
    assert added["failures"] == failures


@pytest.mark.parametrize("name", ["duplicate", "deferred", "rendered", "quarantined"])
def test_statuses_that_count_for_nothing(name) -> None:
    assert ws.contribution(status(name)) is None


def test_the_latency_of_a_delivery_goes_into_the_histogram() -> None:
    added = ws.contribution(status("delivered", latency_ms=100))
    assert added is not None
    assert added["latency"] == {str(ws.latency_bucket(100)): 1}


def test_rows_are_tenant_and_channel() -> None:
    assert ws.row_key("acme", "sms") == "acme/sms"
    assert ws.row_key("acme", None) == "acme/*"
    assert ws.split_row_key("acme/*") == ("acme", "*")


def test_merge_adds_counters_and_maps() -> None:
    a = ws.merge(ws.contribution(status("retrying", status_code=503)),
                 ws.contribution(status("delivered", latency_ms=5)))
    b = ws.merge(a, ws.contribution(status("retrying", status_code=503)))
    assert b["retried"] == 2 and b["delivered"] == 1 and b["failed"] == 2
    assert b["failures"] == {"webhook_503": 2}
    assert ws.merge(None, None) == ws.empty()
    assert ws.merge_all([a, None, a])["retried"] == 2


def test_delivery_rate() -> None:
    assert ws.delivery_rate({"delivered": 9, "failed": 1}) == 0.9
    assert ws.delivery_rate(ws.empty()) is None


def test_buckets_are_within_a_tenth_of_the_latency() -> None:
    for ms in (1, 2, 3, 10, 99, 100, 1234, 60000):
        upper = ws.bucket_upper_ms(ws.latency_bucket(ms))
        assert ms <= upper + 1e-9 <= ms * 1.2 + 1
    assert ws.latency_bucket(0) == 0 and ws.bucket_upper_ms(0) == 0


def test_percentiles_of_a_known_distribution() -> None:
    rng = random.Random(3)
    latencies = [rng.randint(1, 1000) for _ in range(5000)]
    histogram: dict[str, int] = {}
    for ms in latencies:
        key = str(ws.latency_bucket(ms))
        histogram[key] = histogram.get(key, 0) + 1
    latencies.sort()
    for q in (0.5, 0.95, 0.99):
        exact = latencies[int(q * len(latencies)) - 1]
        estimate = ws.percentile(histogram, q)
        assert estimate is not None
        assert exact <= estimate <= exact * 1.2 + 1, (q, exact, estimate)
    assert ws.percentile({}, 0.5) is None
