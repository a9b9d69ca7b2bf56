"""One tenant's series over closed windows, and the detectors that watch them (pure).

The analytics stage counts each status into its window of the windowed table
(agents/analytics.py). When a tenant's first status of a later window arrives, the windows
before it are closed: `TenantSeries.close_until` reads each one's rows back through a
`lookup`, turns them into the values of the watched series and feeds each to its detector:

    sent                   requests accepted per window             spike  → send_rate_spike
    delivery_rate:<ch>     delivered / (delivered + failed)         drop   → delivery_rate_drop
    failures:<class>       failures of one class, all channels      surge  → failure_surge

A delivery rate is only judged in windows with at least `min_count` outcomes, and a count
must also move by `min_count` to be an anomaly: a handful of events is not a trend. Windows
in which the tenant sent nothing count as zeros (up to a limit: after that many empty
windows the baseline has forgotten the past anyway), and so do the windows before a failure
class first appeared.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agents.anomaly import DetectorConfig, EwmaDetector, Verdict
from streams import window_stats as ws

Lookup = Callable[[str, int], "Mapping[str, Any] | None"]  # (row key, window start ms)
MAX_FAILURE_CLASSES = 32  # per tenant: a flood of odd error texts cannot grow state unbounded


@dataclass(frozen=True, slots=True)
class SeriesConfig:
    window_ms: int
    alpha: float = 0.1
    z: float = 4.0
    warmup: int = 10
    min_count: int = 10

    def detector(self, series: str) -> DetectorConfig:
        if series.startswith("delivery_rate"):
            return DetectorConfig(alpha=self.alpha, z=self.z, warmup=self.warmup,
                                  direction="down", poisson=False, min_sigma=0.02)
        return DetectorConfig(alpha=self.alpha, z=self.z, warmup=self.warmup, direction="up",
                              min_delta=self.min_count)


@dataclass(frozen=True, slots=True)
class Finding:
    """A series' first anomalous window."""

    kind: str
    series: str
    channel: str | None
    window_start_ms: int
    verdict: Verdict


@dataclass(slots=True)
class TenantSeries:
    tenant_id: str
    config: SeriesConfig
    open_window_ms: int | None = None
    channels: list[str] = field(default_factory=list)
    detectors: dict[str, EwmaDetector] = field(default_factory=dict)

    def saw(self, channel: str | None) -> bool:
        """Note a row the tenant has; True when it is new (the state changed)."""
        if channel and channel not in self.channels:
            self.channels.append(channel)
            return True
        return False

    def close_until(self, window_ms: int, lookup: Lookup) -> list[Finding]:
        """Close every window before `window_ms` not closed yet, oldest first."""
        if self.open_window_ms is None or window_ms <= self.open_window_ms:
            if self.open_window_ms is None:
                self.open_window_ms = window_ms
            return []
        size = self.config.window_ms
        first = self.open_window_ms
        # Beyond this many windows back, zeros only pull a baseline further towards zero.
        first = max(first, window_ms - size * 2 * max(self.config.warmup, 1))
        findings = []
        for start in range(first, window_ms, size):
            findings += self._close(start, lookup)
        self.open_window_ms = window_ms
        return findings

    def _close(self, start: int, lookup: Lookup) -> list[Finding]:
        rows = {ch: lookup(ws.row_key(self.tenant_id, ch), start)
                for ch in (ws.ALL_CHANNELS, *self.channels)}
        failures = ws.merge_all(rows.values())["failures"]
        findings = []
        whole = rows[ws.ALL_CHANNELS] or {}
        findings += self._observe("sent", None, float(whole.get("sent", 0)), start,
                                  "send_rate_spike")
        for channel in self.channels:
            value = rows[channel] or {}
            outcomes = int(value.get("delivered", 0)) + int(value.get("failed", 0))
            rate = ws.delivery_rate(value)
            if rate is not None and outcomes >= self.config.min_count:
                findings += self._observe(f"delivery_rate:{channel}", channel, rate, start,
                                          "delivery_rate_drop")
        watched = {s.partition(":")[2] for s in self.detectors if s.startswith("failures:")}
        for cause in sorted(watched | set(failures)):
            if cause not in watched and len(watched) >= MAX_FAILURE_CLASSES:
                continue
            watched.add(cause)
            findings += self._observe(f"failures:{cause}", None, float(failures.get(cause, 0)),
                                      start, "failure_surge")
        return findings

    def _observe(self, series: str, channel: str | None, value: float, start: int, kind: str
                 ) -> list[Finding]:
        detector = self.detectors.get(series)
        if detector is None:
            detector = self.detectors[series] = EwmaDetector(self.config.detector(series))
            sent = self.detectors.get("sent")
            if series.startswith("failures:") and sent is not None:
                # A cause never seen before counted 0 in every window watched so far: its
                # first surge is judged against that, not lost in a warm-up.
                detector.seen = sent.seen - 1
        verdict = detector.observe(value)
        return [Finding(kind, series, channel, start, verdict)] if verdict.onset else []

    def to_dict(self) -> dict[str, Any]:
        return {"open": self.open_window_ms, "channels": list(self.channels),
                "detectors": {name: d.to_dict() for name, d in self.detectors.items()}}

    @classmethod
    def from_dict(cls, tenant_id: str, config: SeriesConfig, state: Mapping[str, Any] | None
                  ) -> TenantSeries:
        if not state:
            return cls(tenant_id, config)
        return cls(
            tenant_id, config, state.get("open"), list(state.get("channels", [])),
            {name: EwmaDetector.from_dict(config.detector(name), value)
             for name, value in state.get("detectors", {}).items()},
        )
