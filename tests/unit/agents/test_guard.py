"""The runaway guard's decisions for one tenant on one partition, on synthetic traffic."""

from __future__ import annotations

import random

import pytest

from agents.guard import Decision, GuardConfig, GuardState

WINDOW = 1000
CONFIG = GuardConfig(window_ms=WINDOW, partitions=4, alpha=0.1, z=6.0, min_rate_per_s=20.0,
                     warmup=5, clear_windows=3)


def feed(state: GuardState, counts: list[int], start_window: int = 1) -> list[Decision]:
    """`counts[i]` requests spread over window `start_window + i`; every decision in order."""
    decisions = []
    for i, count in enumerate(counts):
        base = (start_window + i) * WINDOW
        for j in range(count):
            decisions.append(state.on_request(base + j * (WINDOW // max(count, 1))))
    return decisions


def test_the_absolute_bound_is_per_partition() -> None:
    # 20/s over 4 partitions in 1 s windows: 5 per window per partition.
    assert CONFIG.min_count == 5
    assert GuardConfig(window_ms=10_000, partitions=8, min_rate_per_s=20).min_count == 25


def test_a_flood_trips_the_guard_at_the_request_that_crosses_the_bound() -> None:
    state = GuardState.new(CONFIG)
    steady = feed(state, [8, 10, 9, 11, 10, 9, 10, 12])
    assert set(steady) == {Decision.ALLOW}
    state.roll(9 * WINDOW)
    bound = state.bound()
    assert CONFIG.min_count < bound < 40
    decisions = [state.on_request(9 * WINDOW + j) for j in range(200)]
    first_hold = decisions.index(Decision.TRIP)
    assert first_hold == int(bound)  # the (⌊bound⌋ + 1)-th request of the window
    assert decisions[:first_hold] == [Decision.ALLOW] * first_hold
    assert set(decisions[first_hold + 1:]) == {Decision.HOLD}
    assert state.holding


def test_nothing_trips_during_the_warm_up() -> None:
    state = GuardState.new(CONFIG)
    assert set(feed(state, [2, 3, 500])) == {Decision.ALLOW}


def test_a_small_tenant_under_the_absolute_bound_is_left_alone() -> None:
    state = GuardState.new(CONFIG)
    feed(state, [0, 1, 0, 1, 1, 0, 1, 0])
    # 5 in one window is many σ above a baseline under 1, but only 20/s tenant-wide.
    assert set(feed(state, [5], start_window=9)) == {Decision.ALLOW}
    assert Decision.TRIP in feed(state, [30], start_window=10)


def test_release_is_due_after_calm_windows_and_not_while_the_flood_goes_on() -> None:
    state = GuardState.new(CONFIG)
    feed(state, [10] * 8)
    feed(state, [300], start_window=9)
    assert state.holding
    feed(state, [300, 300], start_window=10)
    assert not state.release_due(12 * WINDOW)
    feed(state, [10, 9, 11], start_window=12)
    assert not state.release_due(14 * WINDOW + 500)  # two calm windows closed so far
    assert state.release_due(15 * WINDOW + 1)
    state.release(accept_level=False)
    assert not state.holding
    assert state.on_request(15 * WINDOW + 2) is Decision.ALLOW


def test_silence_after_a_flood_counts_as_calm() -> None:
    state = GuardState.new(CONFIG)
    feed(state, [10] * 8)
    feed(state, [300], start_window=9)
    assert not state.release_due(10 * WINDOW + 1)
    assert state.release_due(13 * WINDOW + 1)  # windows 10, 11 and 12 were empty


def test_without_clear_windows_only_an_operator_releases() -> None:
    config = GuardConfig(window_ms=WINDOW, partitions=4, warmup=5, clear_windows=0)
    state = GuardState.new(config)
    feed(state, [10] * 8)
    feed(state, [300], start_window=9)
    assert not state.release_due(100 * WINDOW)
    assert state.holding


def test_an_operator_release_makes_the_flood_level_normal() -> None:
    state = GuardState.new(CONFIG)
    feed(state, [10] * 8)
    feed(state, [300], start_window=9)
    state.roll(12 * WINDOW)  # the operator releases after the flood has paused
    state.release(accept_level=True)
    assert state.peak == 300
    assert set(feed(state, [300, 310], start_window=12)) == {Decision.ALLOW}


def test_held_windows_do_not_teach_the_baseline() -> None:
    state = GuardState.new(CONFIG)
    feed(state, [10] * 8)
    mean = state.detector.mean
    feed(state, [300, 300, 300], start_window=9)
    assert state.detector.mean == mean


def test_state_survives_a_round_trip_through_a_table() -> None:
    state = GuardState.new(CONFIG)
    feed(state, [10] * 8)
    feed(state, [300], start_window=9)
    assert GuardState.from_dict(CONFIG, state.to_dict()) == state
    assert GuardState.from_dict(CONFIG, None) == GuardState.new(CONFIG)


def test_steady_noisy_traffic_never_trips(capsys: pytest.CaptureFixture[str]) -> None:
    rng = random.Random(42)
    trips = windows = 0
    lines = []
    for mean in (2, 10, 40, 150):
        state = GuardState.new(CONFIG)
        counts = [max(0, round(rng.gauss(mean, (mean ** 0.5) * 1.3))) for _ in range(1500)]
        decisions = feed(state, counts)
        tripped = decisions.count(Decision.TRIP)
        trips, windows = trips + tripped, windows + len(counts)
        lines.append(f"  guard on steady traffic of ~{mean}/window: {tripped} trips in "
                     f"{len(counts)} windows")
    lines.append(f"  guard false-trip rate: {trips / windows:.4%}")
    with capsys.disabled():  # the figure belongs in the test output, passed or not
        print("\n" + "\n".join(lines))
    assert trips == 0
