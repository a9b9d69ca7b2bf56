"""Rate limits with GCRA (the generic cell rate algorithm, ITU-T I.371).

GCRA keeps one number per limited key, the theoretical arrival time (TAT): the time at which
the key's bucket would be empty again. A request at `now` conforms when
`TAT - now <= tolerance`, where the tolerance is `(burst - 1)` emission intervals; conforming
moves TAT one emission interval forward. The state is one integer per key, so a table update
is one small changelog record.

Deferring instead of dropping *reserves* the next free slot: TAT still advances, and the
request is given the time it may go (`retry_at_ms`), so a burst is spread out at the limit's
rate instead of retried in a herd.

Partitioning: requests reach this stage keyed `tenant/user`, so the per-user limits are exact.
A tenant's traffic is spread over all N partitions, so the per-tenant and per-tenant-channel
limits are enforced per partition at `rate / N` (and a burst of `max(1, burst / N)`): with keys
hashed evenly the sum is the tenant's limit, without a shuffle through a tenant-keyed topic.
A tenant whose users hash unevenly gets up to a partition's share less than its limit; that is
the price of not re-keying, and the reason the split is computed in one place (`split`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limit:
    """`rate_per_min` sustained, with bursts of up to `burst` requests at once."""

    rate_per_min: float
    burst: int

    @property
    def interval_ms(self) -> float:
        return 60_000.0 / self.rate_per_min

    @property
    def tolerance_ms(self) -> float:
        return self.interval_ms * (self.burst - 1)

    def split(self, partitions: int) -> Limit:
        """This limit's share on one of `partitions` partitions."""
        return Limit(self.rate_per_min / partitions, max(1, math.ceil(self.burst / partitions)))


ALLOW, DEFER, DROP = "allow", "defer", "drop"


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: str  # ALLOW, DEFER or DROP
    at_ms: int  # when the request may go (now when allowed; the reserved slot when deferred)


def gcra_wait(tat_ms: float | None, now_ms: int, limit: Limit) -> float:
    """How long (ms) a request at `now_ms` must wait to conform; 0 when it conforms now."""
    tat = max(tat_ms if tat_ms is not None else now_ms, now_ms)
    return max(0.0, tat - now_ms - limit.tolerance_ms)


def gcra_take(tat_ms: float | None, now_ms: int, limit: Limit, wait_ms: float) -> float:
    """The new TAT after admitting one request `wait_ms` from now (reserving that slot)."""
    tat = max(tat_ms if tat_ms is not None else now_ms, now_ms + wait_ms)
    return tat + limit.interval_ms


def decide(
    states: dict[str, float | None],
    limits: dict[str, Limit],
    now_ms: int,
    *,
    defer: bool,
    max_defer_ms: float,
) -> tuple[Decision, dict[str, float]]:
    """Check every limit that applies to a request (tenant, user, channel, ...).

    Returns the decision and the new TATs to store. A request admitted now, or deferred
    within `max_defer_ms`, takes a slot in every limit; one that is dropped takes none.
    """
    wait = max(gcra_wait(states.get(key), now_ms, limit) for key, limit in limits.items())
    at_ms = now_ms + math.ceil(wait)
    if wait > 0 and (not defer or wait > max_defer_ms):
        return Decision(DROP, at_ms), {}
    updates = {
        key: gcra_take(states.get(key), now_ms, limit, wait) for key, limit in limits.items()
    }
    return Decision(ALLOW if wait == 0 else DEFER, at_ms), updates


class WriteBehind:
    """Keep TATs in memory and hand them to the table at most once per `every_ms` per
    partition, and only those that still matter.

    Every table write is a changelog record. A tenant's and a tenant-channel's TATs are
    touched by nearly every request; a user's TAT is touched once per request of that user
    and, at any realistic per-user rate, has run out (TAT <= now: the same as no state) well
    before a restarted worker could read it. So a checkpoint writes each partition's changed
    TATs that are still in the future, and forgets the ones that are not. What a crash or a
    rebalance can lose is the last `every_ms` of advances: the limits may admit up to that
    much extra traffic once, after a restart.
    """

    def __init__(self, every_ms: int) -> None:
        self.every_ms = every_ms
        self._values: dict[str, float] = {}
        self._keys: dict[int, set[str]] = {}
        self._dirty: dict[int, set[str]] = {}
        self._checkpointed_at: dict[int, int] = {}

    def __contains__(self, key: str) -> bool:
        return key in self._values

    def get(self, key: str) -> float | None:
        return self._values.get(key)

    def put(self, partition: int, key: str, tat: float) -> None:
        self._values[key] = tat
        self._keys.setdefault(partition, set()).add(key)
        self._dirty.setdefault(partition, set()).add(key)

    def due(self, partition: int, now_ms: int) -> dict[str, float]:
        """The entries of `partition` to write now: once `every_ms` has passed since its last
        checkpoint, the changed ones still in the future (the rest are dropped from memory
        too); else none."""
        if now_ms - self._checkpointed_at.get(partition, 0) < self.every_ms:
            return {}
        self._checkpointed_at[partition] = now_ms
        dirty = self._dirty.pop(partition, set())
        keys = self._keys.get(partition, set())
        for key in [k for k in keys if self._values[k] <= now_ms]:
            keys.discard(key)
            del self._values[key]
        return {k: self._values[k] for k in dirty if k in self._values}

    def forget(self) -> None:
        """Drop everything (on a rebalance): the table, recovered, is the truth again."""
        self._values.clear()
        self._keys.clear()
        self._dirty.clear()
        self._checkpointed_at.clear()
