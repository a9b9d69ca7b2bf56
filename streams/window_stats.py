"""What one window of a tenant's traffic on one channel adds up to: the value format of the
analytics stage's windowed table (agents/analytics.py), read back by `tidings insights`.

A window's value is a flat JSON object, so the table's changelog is readable without Tidings::

    {"sent": 120, "delivered": 97, "failed": 4, "retried": 3, "dead_lettered": 1, "held": 0,
     "failures": {"webhook_503": 3, "dead_letter:deliver": 1}, "latency": {"27": 40, ...}}

Rows are keyed `tenant/channel`; statuses about a whole request (accepted, held,
rate_limited, a request that failed validation) go to the row `tenant/*`. What counts as what:

    sent           a request accepted for sending (row `*`)
    held           a request the runaway guard held (row `*`)
    delivered      a delivery the provider accepted; its latency_ms goes into `latency`
    retried        a delivery parked in a retry tier (after a failed attempt or an open breaker)
    failed         a failed outcome: an attempt to retry, a dead letter, a failover
    dead_lettered  a request or delivery that ended in the dead-letter topic
    failures       the causes of the above and of suppressions and rate limiting, by class

Latency is a histogram with buckets a quarter of a power of two wide, like HDR histograms' log
buckets: small enough to keep one per window, mergeable across windows and rows. A
percentile is read as its bucket's upper bound, so it is at most 19 % (2^¼) above the truth.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

COUNTERS = ("sent", "delivered", "failed", "retried", "dead_lettered", "held")
ALL_CHANNELS = "*"
_BUCKETS_PER_OCTAVE = 4
# Statuses that are a failure cause but whose failed outcome is counted by the status that
# follows them (address_invalid → dead_lettered or failover).
_CAUSE_ONLY = {"address_invalid", "endpoint_disabled", "suppressed", "rate_limited"}


def empty() -> dict[str, Any]:
    return {**dict.fromkeys(COUNTERS, 0), "failures": {}, "latency": {}}


def row_key(tenant_id: str, channel: str | None) -> str:
    return f"{tenant_id}/{channel or ALL_CHANNELS}"


def split_row_key(key: str) -> tuple[str, str]:
    tenant, _, channel = key.rpartition("/")
    return tenant, channel


def failure_class(status: Mapping[str, Any]) -> str:
    """A short, low-cardinality name for why a status is a failure (`webhook_503`)."""
    name = str(status["status"])
    reason = (status.get("reason") or "").lower()
    if name == "retrying":
        if status.get("status_code") is not None:
            return f"{status.get('channel')}_{status['status_code']}"
        if reason.startswith("circuit open"):
            return "circuit_open"
        if "timeout" in reason or "timed out" in reason:
            return "timeout"
        return "connection"
    if name == "dead_lettered":
        # The reason is `<stage>: <message>` (agents/context.py).
        stage = reason.partition(":")[0].strip() if ":" in reason else "unknown"
        return f"dead_letter:{stage}"
    return name


def contribution(status: Mapping[str, Any]) -> dict[str, Any] | None:
    """What one DeliveryStatus adds to its window's row, or None when it counts for nothing."""
    name = status["status"]
    add = empty()
    if name == "accepted":
        add["sent"] = 1
    elif name == "held":
        add["held"] = 1
    elif name == "delivered":
        add["delivered"] = 1
        if status.get("latency_ms") is not None:
            add["latency"] = {str(latency_bucket(int(status["latency_ms"]))): 1}
    elif name == "retrying":
        add["retried"] = 1
        cause = failure_class(status)
        if cause != "circuit_open":  # an open breaker parks a message without an attempt
            add["failed"] = 1
        add["failures"] = {cause: 1}
    elif name in ("dead_lettered", "failover"):
        add["failed"] = 1
        add["dead_lettered"] = int(name == "dead_lettered")
        add["failures"] = {failure_class(status): 1}
    elif name in _CAUSE_ONLY:
        add["failures"] = {failure_class(status): 1}
    else:
        return None
    return add


def merge(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> dict[str, Any]:
    """The sum of two window values (either may be None: an empty window)."""
    out = empty()
    for value in (a, b):
        if not value:
            continue
        for counter in COUNTERS:
            out[counter] += int(value.get(counter, 0))
        for field in ("failures", "latency"):
            for key, n in value.get(field, {}).items():
                out[field][key] = out[field].get(key, 0) + int(n)
    return out


def merge_all(values: Iterable[Mapping[str, Any] | None]) -> dict[str, Any]:
    total = empty()
    for value in values:
        total = merge(total, value)
    return total


def delivery_rate(value: Mapping[str, Any]) -> float | None:
    """Delivered over delivered plus failed outcomes; None when there were none."""
    outcomes = int(value.get("delivered", 0)) + int(value.get("failed", 0))
    return int(value.get("delivered", 0)) / outcomes if outcomes else None


def latency_bucket(latency_ms: int) -> int:
    """The histogram bucket of a latency: ⌈4·log2(ms + 1)⌉, so bucket 0 is exactly 0 ms."""
    return math.ceil(_BUCKETS_PER_OCTAVE * math.log2(max(0, latency_ms) + 1))


def bucket_upper_ms(bucket: int) -> float:
    """The largest latency that falls into `bucket`."""
    return float(2 ** (bucket / _BUCKETS_PER_OCTAVE) - 1)


def percentile(histogram: Mapping[str, int], q: float) -> float | None:
    """The `q` quantile (0 < q ≤ 1) of a latency histogram, as its bucket's upper bound."""
    counts = sorted((int(bucket), int(n)) for bucket, n in histogram.items() if int(n) > 0)
    total = sum(n for _, n in counts)
    if not total:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for bucket, n in counts:
        seen += n
        if seen >= rank:
            return round(bucket_upper_ms(bucket), 1)
    return round(bucket_upper_ms(counts[-1][0]), 1)
