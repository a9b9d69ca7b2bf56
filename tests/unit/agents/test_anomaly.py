"""The EWMA + z-score detector on synthetic series: injected spikes and drops are flagged,
steady noisy traffic is not (its false-positive rate is printed)."""

from __future__ import annotations

import math
import random

import pytest

from agents.anomaly import DetectorConfig, EwmaDetector

COUNTS = DetectorConfig(alpha=0.1, z=4.0, warmup=10, direction="up")
RATIO = DetectorConfig(alpha=0.1, z=4.0, warmup=10, direction="down", poisson=False,
                       min_sigma=0.02)


def poisson(rng: random.Random, lam: float) -> int:
    """A Poisson draw: Knuth's method for small means, the normal approximation above 30."""
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p < limit:
            return k
        k += 1


def binomial_share(rng: random.Random, n: int, p: float) -> float:
    return sum(rng.random() < p for _ in range(n)) / n


def run(config: DetectorConfig, values: list[float]) -> list[bool]:
    detector = EwmaDetector(config)
    return [detector.observe(v).anomalous for v in values]


def steady_series(rng: random.Random) -> dict[str, tuple[DetectorConfig, list[float]]]:
    """Steady traffic with the noise real traffic has: Poisson counts at several rates,
    over-dispersed counts (normal noise wider than Poisson), and delivery ratios."""
    series: dict[str, tuple[DetectorConfig, list[float]]] = {}
    for lam in (3, 20, 50, 200, 1000):
        series[f"poisson λ={lam}"] = (COUNTS, [poisson(rng, lam) for _ in range(2000)])
    for mu, sd in ((100, 20), (1000, 100)):
        series[f"normal {mu}±{sd}"] = (
            COUNTS, [max(0.0, rng.gauss(mu, sd)) for _ in range(2000)]
        )
    for p in (0.99, 0.95, 0.9):
        series[f"delivery ratio {p}"] = (
            RATIO, [binomial_share(rng, 200, p) for _ in range(1000)]
        )
    return series


def test_steady_noisy_traffic_stays_quiet(capsys: pytest.CaptureFixture[str]) -> None:
    rng = random.Random(20261201)
    flagged = total = 0
    lines = []
    for name, (config, values) in steady_series(rng).items():
        hits = sum(run(config, values))
        flagged, total = flagged + hits, total + len(values)
        lines.append(f"  steady {name:22} {hits:3} false positives in {len(values)} windows")
    rate = flagged / total
    lines.append(f"  false-positive rate on steady traffic: {rate:.4%} ({flagged}/{total} windows)")
    with capsys.disabled():  # the figure belongs in the test output, passed or not
        print("\n" + "\n".join(lines))
    assert rate < 0.002


def test_injected_spikes_are_flagged_and_reported_with_the_false_positive_rate(
        capsys: pytest.CaptureFixture[str]) -> None:
    rng = random.Random(7)
    lam, length = 50, 3000
    values = [float(poisson(rng, lam)) for _ in range(length)]
    spikes = set(range(100, length, 97))  # away from the warm-up, not periodic with anything
    for i in spikes:
        values[i] = lam * 3  # 3x the usual send rate for one window: ~14 σ
    verdicts = run(COUNTS, values)
    found = {i for i, anomalous in enumerate(verdicts) if anomalous}
    false_positives = found - spikes
    with capsys.disabled():
        print(f"\n  spikes: {len(found & spikes)}/{len(spikes)} found, "
              f"{len(false_positives)} false positives in {length - len(spikes)} normal "
              f"windows ({len(false_positives) / (length - len(spikes)):.4%})")
    assert found & spikes == spikes
    assert len(false_positives) / (length - len(spikes)) < 0.002


def test_a_drop_in_delivery_rate_is_flagged() -> None:
    rng = random.Random(11)
    values = [binomial_share(rng, 200, 0.97) for _ in range(300)]
    values += [binomial_share(rng, 200, 0.6) for _ in range(5)]  # a provider half down
    detector = EwmaDetector(RATIO)
    verdicts = [detector.observe(v) for v in values]
    assert not any(v.anomalous for v in verdicts[:300])
    assert all(v.anomalous for v in verdicts[300:])
    assert verdicts[300].onset and not verdicts[301].onset
    assert verdicts[300].score < -RATIO.z
    assert verdicts[300].expected == pytest.approx(0.97, abs=0.02)


def test_a_surge_of_a_failure_class_from_nothing_is_flagged() -> None:
    rng = random.Random(5)
    config = DetectorConfig(alpha=0.1, z=4.0, warmup=10, min_delta=5)
    values = [float(poisson(rng, 0.5)) for _ in range(200)] + [25.0]
    verdicts = run(config, values)
    assert not any(verdicts[:200])
    assert verdicts[200]


def test_small_absolute_changes_are_not_anomalies_with_min_delta() -> None:
    config = DetectorConfig(alpha=0.1, z=4.0, warmup=3, min_delta=5)
    detector = EwmaDetector(config)
    for _ in range(20):
        detector.observe(0.0)
    assert not detector.observe(4.0).anomalous  # 4 σ over an empty baseline, but only 4
    assert detector.observe(6.0).anomalous


def test_nothing_is_flagged_during_the_warm_up() -> None:
    assert run(DetectorConfig(warmup=5), [10, 10, 10, 10, 10000]) == [False] * 5
    assert run(DetectorConfig(warmup=5), [10, 10, 10, 10, 10, 10000])[-1]


def test_a_sustained_spike_stays_flagged_then_becomes_the_new_level() -> None:
    config = DetectorConfig(alpha=0.5, z=4.0, warmup=5, adapt_after=3)
    detector = EwmaDetector(config)
    for _ in range(20):
        detector.observe(10.0)
    verdicts = [detector.observe(100.0) for _ in range(12)]
    assert [v.anomalous for v in verdicts[:4]] == [True] * 4
    assert [v.onset for v in verdicts[:4]] == [True, False, False, False]
    assert verdicts[0].expected == verdicts[2].expected == 10.0  # the baseline held still
    assert not verdicts[-1].anomalous  # learned after adapt_after windows


def test_drops_are_not_spikes_and_both_watches_both() -> None:
    def flagged(direction: str, value: float) -> bool:
        detector = EwmaDetector(DetectorConfig(warmup=3, direction=direction))  # type: ignore[arg-type]
        for _ in range(10):
            detector.observe(100.0)
        return detector.observe(value).anomalous

    assert flagged("up", 200) and not flagged("up", 0)
    assert flagged("down", 0) and not flagged("down", 200)
    assert flagged("both", 0) and flagged("both", 200)


def test_state_survives_a_round_trip_through_a_table() -> None:
    detector = EwmaDetector(COUNTS)
    for value in (5.0, 7.0, 6.0, 9.0):
        detector.observe(value)
    restored = EwmaDetector.from_dict(COUNTS, detector.to_dict())
    assert restored == detector
    assert EwmaDetector.from_dict(COUNTS, None) == EwmaDetector(COUNTS)


def test_accepting_a_level_makes_it_normal() -> None:
    detector = EwmaDetector(DetectorConfig(warmup=3))
    for _ in range(10):
        detector.observe(10.0)
    assert detector.is_anomalous(500.0)
    detector.accept_level(500.0)
    assert not detector.is_anomalous(520.0)
