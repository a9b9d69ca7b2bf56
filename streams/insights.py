"""`tidings insights`: delivery rate, latency percentiles, top failure causes and recent
anomalies per tenant, from the analytics stage's windowed table and the anomalies topic.

The command runs outside the worker, so it reads the windowed table's changelog topic
(`<app id>-analytics-windows-changelog`): the latest value of every window of every
`tenant/channel` row, in the format of streams/window_stats.py, exactly what the worker's
table holds. Faust writes a window's key as JSON `[row, [start_s, end_s]]`. Only windows
that start inside the asked time range count. Anomalies come from `<prefix>.anomalies`,
read from the offset of the range's start.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from streams import window_stats as ws
from streams.requests import now_ms
from streams.serde import serde
from streams.settings import Settings
from streams.topic_reader import offsets_at, read_to_end
from streams.topics import ANALYTICS_WINDOWS_TABLE, changelog_topic

TOP_FAILURES = 5
RECENT_ANOMALIES = 10


def read_windows(settings: Settings, since_ms: int) -> dict[tuple[str, int], dict[str, Any]]:
    """(row, window start ms) → the window's latest value, for windows from `since_ms`."""
    topic = changelog_topic(settings, ANALYTICS_WINDOWS_TABLE)
    partitions = range(settings.partitions)
    # A window is written while it is open, so its records are no older than its start.
    starts = offsets_at(settings, topic, partitions, since_ms - int(settings.analytics_window_s
                                                                    * 1000))
    windows: dict[tuple[str, int], dict[str, Any]] = {}
    for message in read_to_end(settings, topic, starts):
        row, (start_s, _end_s) = orjson.loads(message.key())
        start_ms = int(round(float(start_s) * 1000))
        if start_ms < since_ms:
            continue
        if message.value() is None:
            windows.pop((row, start_ms), None)
        else:
            windows[(row, start_ms)] = orjson.loads(message.value())
    return windows


def read_anomalies(settings: Settings, since_ms: int, tenant_id: str | None = None
                   ) -> list[dict[str, Any]]:
    topic = settings.topic("anomalies")
    decode = serde("Anomaly").decode
    starts = offsets_at(settings, topic, range(settings.partitions), since_ms)
    found = [decode(m.value()) for m in read_to_end(settings, topic, starts)]
    return sorted((a for a in found if tenant_id in (None, a["tenant_id"])),
                  key=lambda a: a["detected_at"])


def summarize(windows: Mapping[tuple[str, int], Mapping[str, Any]],
              anomalies: Iterable[Mapping[str, Any]], tenant_id: str | None = None
              ) -> dict[str, Any]:
    """Per tenant: totals, per-channel delivery rate and latency, top failures, anomalies."""
    rows: dict[str, list[Mapping[str, Any]]] = {}
    for (row, _start), value in windows.items():
        rows.setdefault(row, []).append(value)
    tenants: dict[str, Any] = {}
    for row, values in sorted(rows.items()):
        tenant, channel = ws.split_row_key(row)
        if tenant_id is not None and tenant != tenant_id:
            continue
        total = ws.merge_all(values)
        entry = tenants.setdefault(tenant, {"channels": {}, "_all": ws.empty()})
        entry["_all"] = ws.merge(entry["_all"], total)
        if channel != ws.ALL_CHANNELS:
            entry["channels"][channel] = _channel_summary(total, len(values))
    for entry in tenants.values():
        everything = entry.pop("_all")
        failures = sorted(everything["failures"].items(), key=lambda kv: (-kv[1], kv[0]))
        entry.update(
            sent=everything["sent"], held=everything["held"],
            delivered=everything["delivered"], failed=everything["failed"],
            dead_lettered=everything["dead_lettered"],
            delivery_rate=ws.delivery_rate(everything),
            latency_ms=_percentiles(everything["latency"]),
            top_failures=[{"cause": cause, "count": n} for cause, n in failures[:TOP_FAILURES]],
            anomalies=[],
        )
    for anomaly in anomalies:
        if tenant_id is not None and anomaly["tenant_id"] != tenant_id:
            continue
        entry = tenants.setdefault(anomaly["tenant_id"], {"channels": {}, "anomalies": []})
        entry.setdefault("anomalies", []).append(dict(anomaly))
    for entry in tenants.values():
        entry["anomalies"] = entry.get("anomalies", [])[-RECENT_ANOMALIES:]
    return tenants


def _channel_summary(total: Mapping[str, Any], windows: int) -> dict[str, Any]:
    return {
        "windows": windows,
        **{counter: total[counter] for counter in ws.COUNTERS if counter not in ("sent", "held")},
        "delivery_rate": ws.delivery_rate(total),
        "latency_ms": _percentiles(total["latency"]),
    }


def _percentiles(histogram: Mapping[str, int]) -> dict[str, float | None]:
    return {name: ws.percentile(histogram, q)
            for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))}


def insights(settings: Settings, tenant_id: str | None, since_s: float) -> dict[str, Any]:
    since_ms = now_ms() - int(since_s * 1000)
    return summarize(read_windows(settings, since_ms), read_anomalies(settings, since_ms),
                     tenant_id)


def render(report: Mapping[str, Any]) -> str:
    """The report as an operator reads it in a terminal."""
    lines = []
    for tenant, entry in sorted(report.items()):
        rate = entry.get("delivery_rate")
        latency = entry.get("latency_ms") or {}
        lines.append(
            f"{tenant}: sent {entry.get('sent', 0)}, held {entry.get('held', 0)}, "
            f"delivered {entry.get('delivered', 0)}, failed {entry.get('failed', 0)}, "
            f"dead-lettered {entry.get('dead_lettered', 0)}, delivery rate {_pct(rate)}, "
            f"latency p50/p95/p99 {_ms(latency.get('p50'))}/{_ms(latency.get('p95'))}/"
            f"{_ms(latency.get('p99'))}"
        )
        for channel, c in sorted(entry["channels"].items()):
            cl = c["latency_ms"]
            lines.append(
                f"  {channel:8} delivered {c['delivered']}, failed {c['failed']}, retried "
                f"{c['retried']}, dead-lettered {c['dead_lettered']}, delivery rate "
                f"{_pct(c['delivery_rate'])}, p50/p95/p99 {_ms(cl['p50'])}/{_ms(cl['p95'])}/"
                f"{_ms(cl['p99'])}"
            )
        if entry.get("top_failures"):
            causes = ", ".join(f"{f['cause']} ×{f['count']}" for f in entry["top_failures"])
            lines.append(f"  top failures: {causes}")
        for a in entry.get("anomalies", []):
            where = f"/{a['channel']}" if a["channel"] else ""
            action = f" → {a['action']}" if a["action"] else ""
            lines.append(
                f"  anomaly {a['kind']}{where} {a['series']}: {a['observed']:.4g} "
                f"(expected {a['expected']:.4g}, z {a['score']:.1f}){action}"
            )
    return "\n".join(lines) if lines else "no traffic in this range"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"
