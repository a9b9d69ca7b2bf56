"""The runaway-trigger guard's decisions for one tenant on one partition (pure).

The failure mode it guards against: a bug in a customer's service (a retry loop, a trigger
that fires on its own output) floods that customer's users. The guard counts the tenant's
accepted requests per window and holds its new requests while the count is anomalous.

Where the count comes from: requests are keyed `tenant/user`, so a tenant's requests are
spread over the partitions, and the intake stage on each partition sees a slice of them. The
guard judges each slice against that slice's own baseline (EWMA + z-score, agents/anomaly.py)
instead of re-keying requests by tenant first: the check is then synchronous with intake (the
first anomalous request is already held, not those after a round trip through another
topic) and costs no extra record per request. A flood spread over many users trips every
partition; a flood aimed at one user trips the one partition it lands on, which is where it
must be held. The absolute bound is on the tenant's rate estimated from the slice (count ×
partitions ÷ window): with few users the slices are uneven, so the estimate can be high on
one partition, which only makes the z-score the deciding test there.

A window's count is anomalous when it exceeds both

    mean + z·σ                                 (σ floored at max(1, √mean): Poisson noise)
    min_rate_per_s · window_s ÷ partitions     (an absolute floor: small tenants are noisy)

and the count is judged as it grows, so the request that crosses the bound is the first held.
While holding, windows do not teach the baseline; after `clear_windows` windows back under
the bound the held requests are due for release (`release_due`). An operator's release
accepts the current level as normal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Any

from agents.anomaly import DetectorConfig, EwmaDetector


class Decision(Enum):
    ALLOW = "allow"
    TRIP = "trip"  # this request crossed the bound: hold it, raise the alert
    HOLD = "hold"  # already holding: hold it too


@dataclass(frozen=True, slots=True)
class GuardConfig:
    window_ms: int
    partitions: int
    alpha: float = 0.1
    z: float = 6.0
    min_rate_per_s: float = 20.0
    warmup: int = 6
    clear_windows: int = 3

    @property
    def detector(self) -> DetectorConfig:
        return DetectorConfig(alpha=self.alpha, z=self.z, warmup=self.warmup, direction="up")

    @property
    def min_count(self) -> int:
        """The absolute bound as a count per window on one partition."""
        return max(1, math.ceil(self.min_rate_per_s * self.window_ms / 1000 / self.partitions))


@dataclass(slots=True)
class GuardState:
    config: GuardConfig
    detector: EwmaDetector
    window_ms: int = 0  # start of the window being counted
    count: int = 0
    holding: bool = False
    held_since_ms: int = 0
    calm_windows: int = 0  # closed windows under the bound while holding
    last_count: int = 0  # the count of the last closed window
    peak: int = 0  # the highest count of a window while holding

    @classmethod
    def new(cls, config: GuardConfig) -> GuardState:
        return cls(config, EwmaDetector(config.detector))

    def bound(self) -> float:
        """The count above which the current window is anomalous; inf during warm-up."""
        if self.detector.seen < self.config.warmup:
            return math.inf
        d = self.detector
        return max(d.mean + self.config.z * d.sigma(), float(self.config.min_count))

    def roll(self, now_ms: int) -> bool:
        """Close the windows that ended before `now_ms`; True when any did."""
        size = self.config.window_ms
        start = now_ms - now_ms % size
        if self.window_ms == 0:
            self.window_ms = start
            return False
        if start <= self.window_ms:
            return False
        closed = [self.count] + [0] * min((start - self.window_ms) // size - 1,
                                          2 * self.config.warmup)
        for value in closed:
            if self.holding:
                self.calm_windows = self.calm_windows + 1 if value <= self.bound() else 0
            else:
                self.detector.observe(float(value))
            self.last_count = value
        self.window_ms, self.count = start, 0
        return True

    def on_request(self, now_ms: int) -> Decision:
        self.roll(now_ms)
        self.count += 1
        if self.holding:
            self.peak = max(self.peak, self.count)
            return Decision.HOLD
        if self.count > self.bound():
            self.holding, self.held_since_ms, self.calm_windows = True, now_ms, 0
            self.peak = self.count
            return Decision.TRIP
        return Decision.ALLOW

    def release_due(self, now_ms: int) -> bool:
        """Holding, and back under the bound for `clear_windows` windows (0: never)."""
        self.roll(now_ms)
        clear = self.config.clear_windows
        return self.holding and clear > 0 and self.calm_windows >= clear

    def release(self, *, accept_level: bool) -> None:
        """Stop holding. `accept_level`: an operator judged the traffic legitimate, so its
        current rate becomes the baseline rather than tripping the guard again at once."""
        if accept_level:
            self.detector.accept_level(float(max(self.peak, self.count)))
        self.holding, self.calm_windows = False, 0

    def to_dict(self) -> dict[str, Any]:
        return {"w": self.window_ms, "c": self.count, "h": self.holding,
                "hs": self.held_since_ms, "cw": self.calm_windows, "lc": self.last_count,
                "p": self.peak, "d": self.detector.to_dict()}

    @classmethod
    def from_dict(cls, config: GuardConfig, state: dict[str, Any] | None) -> GuardState:
        if not state:
            return cls.new(config)
        return cls(config, EwmaDetector.from_dict(config.detector, state["d"]), int(state["w"]),
                   int(state["c"]), bool(state["h"]), int(state["hs"]), int(state["cw"]),
                   int(state["lc"]), int(state.get("p", 0)))
