"""Anomaly events and metrics: what the analytics stage and the runaway guard report.

An anomaly is an `Anomaly` record on `<prefix>.anomalies`, keyed by tenant, and a count in
the Prometheus default registry (served on /metrics with the worker's other metrics). The
guard also keeps a gauge of the partitions that hold each tenant, which an alert rule can
watch: `sum by (tenant_id) (notification_guard_holding_partitions) > 0`
(deploy/prometheus/analytics.rules.yml).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from typing import Any

import faust
from prometheus_client import Counter, Gauge

from streams.app import raw_topic
from streams.requests import now_ms
from streams.serde import serde
from streams.settings import Settings

# Names and labels follow the worker's other instruments (`notification_*`, `tenant_id`). The
# tenant label stays bounded without a cap: only tenants with an anomaly get a series.
ANOMALIES = Counter(
    "notification_anomalies_total",
    "Anomalies detected in tenants' traffic, by tenant and kind (send_rate_spike, "
    "delivery_rate_drop, failure_surge, runaway_hold, runaway_release).",
    ["tenant_id", "kind"],
)
GUARD_HOLDING = Gauge(
    "notification_guard_holding_partitions",
    "Partitions on this worker whose runaway guard holds the tenant's new requests.",
    ["tenant_id"],
)
GUARD_HELD = Counter(
    "notification_guard_held_total", "Requests the runaway guard held, by tenant.",
    ["tenant_id"],
)
GUARD_RELEASED = Counter(
    "notification_guard_released_total",
    "Held requests that came back through intake, by tenant and who released them "
    "(operator, auto).",
    ["tenant_id", "by"],
)


def anomaly_record(
    *,
    tenant_id: str,
    kind: str,
    series: str,
    observed: float,
    expected: float,
    score: float,
    threshold: float,
    window_start_ms: int,
    window_end_ms: int,
    channel: str | None = None,
    action: str | None = None,
    details: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """An `Anomaly` record (schemas/anomaly.avsc)."""
    return {
        "anomaly_id": f"anm_{secrets.token_hex(8)}",
        "tenant_id": tenant_id,
        "channel": channel,
        "kind": kind,
        "series": series,
        "observed": float(observed),
        "expected": float(expected),
        "score": float(score),
        "threshold": float(threshold),
        "window_start": int(window_start_ms),
        "window_end": int(window_end_ms),
        "detected_at": now_ms(),
        "action": action,
        "details": dict(details or {}),
    }


class Alerts:
    """Writes anomaly events to `<prefix>.anomalies` and counts them."""

    def __init__(self, app: faust.App, settings: Settings) -> None:
        self.topic = raw_topic(app, settings.topic("anomalies"))
        self.serde = serde("Anomaly")
        self.log = logging.getLogger("tidings.anomalies")

    async def emit(self, record: Mapping[str, Any]) -> None:
        await self.topic.send(key=record["tenant_id"].encode(), value=self.serde.encode(record))
        ANOMALIES.labels(record["tenant_id"], record["kind"]).inc()
        self.log.warning("anomaly %s tenant=%s channel=%s series=%s observed=%.3g "
                         "expected=%.3g z=%.1f action=%s", record["kind"], record["tenant_id"],
                         record["channel"], record["series"], record["observed"],
                         record["expected"], record["score"], record["action"])
