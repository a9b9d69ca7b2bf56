"""Analytics: windowed statistics per tenant and channel, and anomaly detection over them.

Statuses are keyed by notification id on `<prefix>.status`, so one tenant's statuses are
spread over every partition. The first agent re-keys them by tenant onto
`<prefix>.analytics` (the same bytes, the record timestamp set to the status's
`occurred_at`), so that everything about one tenant meets on one partition: its windows and
its detectors' state are then exact, not per-partition estimates to be summed. The cost is
one more small record per status.

The second agent counts each status into its tumbling window of the windowed table
`analytics-windows` (rows `tenant/channel`, values in streams/window_stats.py; the window
is chosen by the record timestamp, i.e. event time) and, when a tenant's first status of a
later window arrives, closes the earlier ones and feeds them to that tenant's detectors
(agents/tenant_series.py), whose state lives in the `analytics-detectors` table. Each
anomaly becomes an event on `<prefix>.anomalies` and a metric (agents/alerts.py).

`tidings insights` reads the windowed table's changelog and the anomalies topic.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import faust

from agents.alerts import Alerts, anomaly_record
from agents.context import Pipeline
from agents.tenant_series import SeriesConfig, TenantSeries
from streams import window_stats as ws
from streams.app import raw_topic
from streams.serde import serde
from streams.topics import ANALYTICS_WINDOWS_TABLE
from streams.tracing import annotate

STAGE = "analytics"


def register(app: faust.App, pipeline: Pipeline) -> None:
    settings = pipeline.settings
    by_tenant = raw_topic(app, settings.topic("analytics"))
    alerts = Alerts(app, settings)
    statuses = serde("DeliveryStatus")
    size_s = int(settings.analytics_window_s)
    windows = app.Table(
        ANALYTICS_WINDOWS_TABLE, default=None, partitions=settings.partitions,
    ).tumbling(size_s, expires=timedelta(seconds=settings.analytics_retention_s)
               ).relative_to_stream()
    window = windows.table.window
    assert window is not None  # set by .tumbling()
    detectors = app.Table("analytics-detectors", default=None, partitions=settings.partitions)
    config = SeriesConfig(
        window_ms=size_s * 1000, alpha=settings.analytics_alpha, z=settings.analytics_z,
        warmup=settings.analytics_warmup_windows, min_count=settings.analytics_min_count,
    )
    # Each tenant's series, read from its table once and then kept here: the table is only
    # written when a window closes. Forgotten when partitions move, so a tenant that comes
    # back to this worker is read again from the table.
    tenants: dict[str, TenantSeries] = {}

    def _forget(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        tenants.clear()

    app.on_partitions_revoked.connect(_forget)

    def lookup(row: str, start_ms: int) -> Any:
        return windows.table.get((row, window.current(float(start_ms // 1000))))

    @app.agent(pipeline.status, name="tidings.analytics.by-tenant")
    async def rekey(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            async with pipeline.guard(STAGE, event):
                status = statuses.decode(event.value)
                annotate(status)  # a status rides in its notification's trace
                await by_tenant.send(key=status["tenant_id"].encode(), value=event.value,
                                     timestamp=status["occurred_at"] / 1000)

    @app.agent(by_tenant, name="tidings.analytics")
    async def analytics(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            async with pipeline.guard(STAGE, event):
                status = statuses.decode(event.value)
                annotate(status)
                tenant = status["tenant_id"]
                series = tenants.get(tenant)
                if series is None:
                    series = tenants[tenant] = TenantSeries.from_dict(
                        tenant, config, detectors.get(tenant))
                current = window.current(event.message.timestamp)
                window_ms = int(current[0]) * 1000
                before = series.open_window_ms
                findings = series.close_until(window_ms, lookup)
                added = ws.contribution(status)
                changed = series.saw(status["channel"]) if added else False
                if added is not None:
                    row = ws.row_key(tenant, status["channel"])
                    windows[row] = ws.merge(windows.table.get((row, current)), added)
                if changed or series.open_window_ms != before:
                    detectors[tenant] = series.to_dict()
                for finding in findings:
                    verdict = finding.verdict
                    await alerts.emit(anomaly_record(
                        tenant_id=tenant, kind=finding.kind, series=finding.series,
                        channel=finding.channel, observed=verdict.value,
                        expected=verdict.expected, score=verdict.score, threshold=config.z,
                        window_start_ms=finding.window_start_ms,
                        window_end_ms=finding.window_start_ms + config.window_ms,
                    ))
