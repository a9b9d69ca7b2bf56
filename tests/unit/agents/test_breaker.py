"""The circuit breaker's states, driven by an injected clock."""

from __future__ import annotations

import pytest

from agents.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock, **overrides) -> CircuitBreaker:
    options = {"failure_threshold": 0.5, "window_s": 10, "min_calls": 4, "cooldown_s": 5,
               "trial_calls": 2, "clock": clock} | overrides
    return CircuitBreaker(**options)


@pytest.mark.parametrize(
    ("outcomes", "state"),
    [
        ([False] * 10, CLOSED),
        ([True, True, True], CLOSED),  # fewer than min_calls: no verdict yet
        ([True, False, True, False], OPEN),  # 50 % of 4
        ([True, False, False, False], CLOSED),  # 25 %
        ([False, False, False, True, True, True], OPEN),
    ],
)
def test_failure_rate_over_the_window_opens_it(outcomes, state):
    clock = Clock()
    cb = breaker(clock)
    for failed in outcomes:
        assert cb.allows()
        cb.record(failed)
    assert cb.state == state


def test_old_failures_leave_the_window():
    clock = Clock()
    cb = breaker(clock)
    for _ in range(3):
        cb.record(True)
    clock.now += 11
    for _ in range(3):
        cb.record(False)
    cb.record(True)
    assert cb.state == CLOSED  # 1 of 4 in the window


def test_open_refuses_until_the_cooldown_then_trials_close_it():
    clock = Clock()
    cb = breaker(clock)
    for _ in range(4):
        cb.record(True)
    assert cb.state == OPEN
    assert not cb.allows()
    assert cb.retry_in_s() == pytest.approx(5)
    clock.now += 5
    assert cb.allows() and cb.state == HALF_OPEN
    assert cb.allows()
    assert not cb.allows()  # only two trials at a time
    cb.record(False)
    cb.record(False)
    assert cb.state == CLOSED
    assert cb.allows()


def test_a_failed_trial_opens_it_again():
    clock = Clock()
    cb = breaker(clock)
    for _ in range(4):
        cb.record(True)
    clock.now += 5
    assert cb.allows()
    cb.record(True)
    assert cb.state == OPEN
    assert cb.retry_in_s() == pytest.approx(5)
