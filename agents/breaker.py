"""A circuit breaker per provider endpoint, held in the worker.

    closed ──(failure rate ≥ threshold over the window, with enough calls)──▶ open
    open ──(cool-down elapsed)──▶ half-open: up to `trial_calls` calls go through
    half-open ──(a trial fails)──▶ open        half-open ──(all trials succeed)──▶ closed

Failures are the answers that say the provider is unwell (timeouts, 5xx, 429): a rejected
message or a dead address is the provider working correctly. While a breaker is open the
deliver stage does not call the provider; it parks the message in a retry tier, so an outage
costs no attempts and no partition waits.

Written here rather than taken from pybreaker/aiobreaker/purgatory: those trip on a count of
consecutive failures and wrap the call; we need a failure *rate* over a time window and a
side-effect-free `allows()` the agent can ask before deciding where a message goes.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
STATE_VALUES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}  # for a gauge


@dataclass
class CircuitBreaker:
    failure_threshold: float = 0.5  # share of failed calls that opens the breaker
    window_s: float = 30.0
    min_calls: int = 10  # no verdict on fewer calls than this in the window
    cooldown_s: float = 15.0
    trial_calls: int = 3
    clock: Callable[[], float] = time.monotonic
    state: str = CLOSED
    _calls: deque[tuple[float, bool]] = field(default_factory=deque)
    _failures: int = 0  # failed calls in `_calls`, kept as they come and go
    _opened_at: float = 0.0
    _trials_started: int = 0
    _trials_passed: int = 0

    def allows(self) -> bool:
        """May a call go to the provider now? (Counts a half-open trial when it says yes.)"""
        if self.state == OPEN:
            if self.clock() - self._opened_at < self.cooldown_s:
                return False
            self.state, self._trials_started, self._trials_passed = HALF_OPEN, 0, 0
        if self.state == HALF_OPEN:
            if self._trials_started >= self.trial_calls:
                return False
            self._trials_started += 1
        return True

    def record(self, failed: bool) -> None:
        now = self.clock()
        if self.state == HALF_OPEN:
            if failed:
                self._open(now)
            else:
                self._trials_passed += 1
                if self._trials_passed >= self.trial_calls:
                    self.state = CLOSED
                    self._calls.clear()
                    self._failures = 0
            return
        if self.state == OPEN:
            return  # a late answer to a call made before it opened
        self._calls.append((now, failed))
        self._failures += failed
        while self._calls and now - self._calls[0][0] > self.window_s:
            self._failures -= self._calls.popleft()[1]
        if len(self._calls) >= self.min_calls:
            if self._failures / len(self._calls) >= self.failure_threshold:
                self._open(now)

    def retry_in_s(self) -> float:
        """How long until an open breaker lets a trial through."""
        if self.state != OPEN:
            return 0.0
        return max(0.0, self.cooldown_s - (self.clock() - self._opened_at))

    def _open(self, now: float) -> None:
        self.state, self._opened_at = OPEN, now
        self._calls.clear()
        self._failures = 0
