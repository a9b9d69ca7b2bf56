"""Anomaly detection on a series of per-window values: an EWMA baseline and a z-score.

The baseline is an exponentially weighted mean and variance, updated one window at a time
(Tony Finch, "Incremental calculation of weighted mean and variance", 2009, §9):

    diff = x - mean;  mean += α·diff;  var = (1 - α)·(var + α·diff²)

A window is anomalous when its value is more than `z` standard deviations from the mean in
the watched direction, and at least `min_delta` away from it. Three guards keep a detector
quiet on ordinary traffic:

- a warm-up: no verdict until `warmup` windows have built a baseline;
- a floor under the standard deviation: `min_sigma`, and for counts √mean as well — a
  Poisson process with mean λ has standard deviation √λ, so a steady series whose EWMA
  variance happens to be tiny does not turn its ordinary noise into huge z-scores;
- anomalous windows do not move the baseline, so a sustained spike stays flagged instead of
  becoming the new normal at once; after `adapt_after` anomalous windows in a row the
  detector accepts the new level and learns from it again.

The state is a small dict of floats, so it can live in a table and survive a restart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

Direction = Literal["up", "down", "both"]


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    alpha: float = 0.1
    z: float = 4.0
    warmup: int = 10
    direction: Direction = "up"
    min_sigma: float = 1.0
    poisson: bool = True  # the series counts events: σ is at least √mean
    min_delta: float = 0.0
    adapt_after: int = 6


@dataclass(frozen=True, slots=True)
class Verdict:
    anomalous: bool
    onset: bool  # the first anomalous window of a run
    score: float  # z-score; 0 during the warm-up
    expected: float  # the baseline the value was compared with
    value: float


@dataclass(slots=True)
class EwmaDetector:
    """One series' baseline. `observe` each window's value in order."""

    config: DetectorConfig
    mean: float = 0.0
    var: float = 0.0
    seen: int = 0
    streak: int = 0  # anomalous windows in a row

    def sigma(self) -> float:
        sigma = max(math.sqrt(self.var), self.config.min_sigma)
        if self.config.poisson:
            sigma = max(sigma, math.sqrt(max(self.mean, 0.0)))
        return sigma

    def score(self, value: float) -> float:
        return (value - self.mean) / self.sigma() if self.seen else 0.0

    def is_anomalous(self, value: float) -> bool:
        """Whether `value` would be flagged now (without learning from it)."""
        config = self.config
        if self.seen < config.warmup:
            return False
        score = self.score(value)
        if abs(value - self.mean) < config.min_delta:
            return False
        if config.direction == "up":
            return score >= config.z
        if config.direction == "down":
            return score <= -config.z
        return abs(score) >= config.z

    def observe(self, value: float) -> Verdict:
        expected, score = self.mean, self.score(value)
        anomalous = self.is_anomalous(value)
        if anomalous:
            self.streak += 1
            if self.streak > self.config.adapt_after:
                self.learn(value)
        else:
            self.streak = 0
            self.learn(value)
        return Verdict(anomalous, anomalous and self.streak == 1, score, expected, value)

    def learn(self, value: float) -> None:
        if self.seen == 0:
            self.mean, self.var = value, 0.0
        else:
            diff = value - self.mean
            increment = self.config.alpha * diff
            self.mean += increment
            self.var = (1 - self.config.alpha) * (self.var + diff * increment)
        self.seen += 1

    def accept_level(self, value: float) -> None:
        """Take `value` as the new normal (an operator said this traffic is legitimate)."""
        self.mean = value
        self.var = max(self.var, value)
        self.streak = 0

    def to_dict(self) -> dict[str, Any]:
        return {"m": self.mean, "v": self.var, "n": self.seen, "s": self.streak}

    @classmethod
    def from_dict(cls, config: DetectorConfig, state: dict[str, Any] | None) -> EwmaDetector:
        if not state:
            return cls(config)
        return cls(config, float(state["m"]), float(state["v"]), int(state["n"]),
                   int(state["s"]))
