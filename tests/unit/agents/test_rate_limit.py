"""Tests for agents/rate_limit.py: GCRA limits, deferral, several limits at once, the split."""

from __future__ import annotations

import pytest

from agents.rate_limit import (
    ALLOW,
    DEFER,
    DROP,
    Decision,
    Limit,
    WriteBehind,
    decide,
    gcra_take,
    gcra_wait,
)

# 60 per minute: one emission interval is 1 s, so times below read as whole intervals.
PER_SECOND = Limit(rate_per_min=60, burst=3)


def offer(
    states: dict[str, float],
    limits: dict[str, Limit],
    now_ms: int,
    *,
    defer: bool = False,
    max_defer_ms: float = 0.0,
) -> Decision:
    """One request through `decide`, storing the new TATs as the dispatch agent does."""
    decision, updates = decide(
        {key: states.get(key) for key in limits}, limits, now_ms,
        defer=defer, max_defer_ms=max_defer_ms,
    )
    states.update(updates)
    return decision


# -- Limit ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate_per_min", "burst", "interval_ms", "tolerance_ms"),
    [
        (60, 1, 1000.0, 0.0),
        (60, 3, 1000.0, 2000.0),
        (1000, 10, 60.0, 540.0),
        (0.5, 2, 120_000.0, 120_000.0),
    ],
)
def test_limit_interval_and_tolerance(
    rate_per_min: float, burst: int, interval_ms: float, tolerance_ms: float
) -> None:
    limit = Limit(rate_per_min, burst)
    assert limit.interval_ms == pytest.approx(interval_ms)
    assert limit.tolerance_ms == pytest.approx(tolerance_ms)


@pytest.mark.parametrize(
    ("limit", "partitions", "expected"),
    [
        (Limit(1000, 10), 1, Limit(1000, 10)),
        (Limit(1000, 10), 8, Limit(125, 2)),  # burst 10/8 rounds up, never to nothing
        (Limit(100, 16), 4, Limit(25, 4)),
        (Limit(100, 3), 2, Limit(50, 2)),
        (Limit(60, 1), 8, Limit(7.5, 1)),  # a burst of 1 stays 1 on every partition
        (Limit(60, 4), 8, Limit(7.5, 1)),
    ],
)
def test_split_by_partitions(limit: Limit, partitions: int, expected: Limit) -> None:
    assert limit.split(partitions) == expected


@pytest.mark.parametrize("partitions", [1, 3, 8, 12])
def test_split_rates_add_up_to_the_limit(partitions: int) -> None:
    share = Limit(1000, 10).split(partitions)
    assert share.rate_per_min * partitions == pytest.approx(1000)


# -- gcra_wait / gcra_take ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tat_ms", "now_ms", "wait_ms"),
    [
        (None, 0, 0.0),  # a key never seen conforms
        (500.0, 1000, 0.0),  # TAT in the past counts as now
        (3000.0, 1000, 0.0),  # TAT - now == tolerance: still conforms
        (3000.0, 0, 1000.0),  # one interval past the tolerance
        (3500.0, 0, 1500.0),
        (10_000.0, 4000, 4000.0),
    ],
)
def test_gcra_wait(tat_ms: float | None, now_ms: int, wait_ms: float) -> None:
    assert gcra_wait(tat_ms, now_ms, PER_SECOND) == wait_ms


@pytest.mark.parametrize(
    ("tat_ms", "now_ms", "wait_ms", "new_tat_ms"),
    [
        (None, 0, 0.0, 1000.0),
        (None, 5000, 0.0, 6000.0),
        (500.0, 1000, 0.0, 2000.0),  # a TAT in the past restarts from now
        (2000.0, 0, 0.0, 3000.0),
        (3000.0, 0, 1000.0, 4000.0),  # deferred: the slot after the TAT
        (None, 0, 4000.0, 5000.0),  # a reserved slot later than the TAT
    ],
)
def test_gcra_take(
    tat_ms: float | None, now_ms: int, wait_ms: float, new_tat_ms: float
) -> None:
    assert gcra_take(tat_ms, now_ms, PER_SECOND, wait_ms) == new_tat_ms


# -- decide: one limit ------------------------------------------------------------------------


@pytest.mark.parametrize("burst", [1, 3, 10])
def test_a_burst_of_exactly_burst_requests_at_one_instant_is_allowed(burst: int) -> None:
    limits = {"u": Limit(60, burst)}
    states: dict[str, float] = {}
    outcomes = [offer(states, limits, 1_000_000).outcome for _ in range(burst + 1)]
    assert outcomes == [ALLOW] * burst + [DROP]


def test_one_more_is_allowed_after_one_emission_interval() -> None:
    limits = {"u": PER_SECOND}
    states: dict[str, float] = {}
    for _ in range(PER_SECOND.burst):
        assert offer(states, limits, 0).outcome == ALLOW
    assert offer(states, limits, 999).outcome == DROP
    assert offer(states, limits, 1000) == Decision(ALLOW, 1000)
    assert offer(states, limits, 1000).outcome == DROP
    assert offer(states, limits, 2000).outcome == ALLOW


def test_an_idle_key_gets_its_whole_burst_back() -> None:
    limits = {"u": PER_SECOND}
    states: dict[str, float] = {}
    for _ in range(PER_SECOND.burst):
        offer(states, limits, 0)
    later = 60_000
    outcomes = [offer(states, limits, later).outcome for _ in range(PER_SECOND.burst + 1)]
    assert outcomes == [ALLOW] * PER_SECOND.burst + [DROP]


@pytest.mark.parametrize(
    ("rate_per_min", "burst"),
    [(60, 1), (60, 5), (120, 3), (600, 10), (1000, 1)],
)
def test_sustained_traffic_over_a_minute_admits_rate_plus_burst_minus_one(
    rate_per_min: float, burst: int
) -> None:
    # Far more requests than the limit, one every 10 ms for a minute: the burst goes at
    # t=0, then one per emission interval at t = interval, 2*interval, ... < 60 s.
    limits = {"u": Limit(rate_per_min, burst)}
    states: dict[str, float] = {}
    admitted = sum(
        offer(states, limits, now).outcome == ALLOW for now in range(0, 60_000, 10)
    )
    assert admitted == rate_per_min + burst - 1


def test_drop_policy_takes_no_slot() -> None:
    limits = {"u": PER_SECOND}
    states: dict[str, float] = {}
    for _ in range(PER_SECOND.burst):
        offer(states, limits, 0)
    before = dict(states)
    decision, updates = decide(
        {"u": states["u"]}, limits, 0, defer=False, max_defer_ms=60_000
    )
    assert decision == Decision(DROP, 1000)  # at_ms still says when it would conform
    assert updates == {}
    assert states == before


def test_defer_reserves_increasing_slots_and_drops_beyond_max_defer() -> None:
    limits = {"u": PER_SECOND}
    states: dict[str, float] = {}
    decisions = [
        offer(states, limits, 0, defer=True, max_defer_ms=3000) for _ in range(8)
    ]
    assert decisions == [
        Decision(ALLOW, 0),
        Decision(ALLOW, 0),
        Decision(ALLOW, 0),
        Decision(DEFER, 1000),  # each deferral takes the next free slot...
        Decision(DEFER, 2000),
        Decision(DEFER, 3000),  # ...up to and including max_defer_ms
        Decision(DROP, 4000),
        Decision(DROP, 4000),  # the drop reserved nothing
    ]
    assert states == {"u": 6000.0}


def test_a_deferred_slot_conforms_when_it_comes() -> None:
    limits = {"u": Limit(60, 1)}
    states: dict[str, float] = {}
    offer(states, limits, 0)
    deferred = offer(states, limits, 0, defer=True, max_defer_ms=10_000)
    assert deferred == Decision(DEFER, 1000)
    # The deferred request holds the slot at 1 s: a new one at 1 s waits for the next.
    assert offer(states, limits, deferred.at_ms, defer=True, max_defer_ms=10_000) == Decision(
        DEFER, 2000
    )


def test_a_fractional_wait_rounds_the_slot_up() -> None:
    limits = {"u": Limit(7, 1)}  # 8571.43 ms apart
    states: dict[str, float] = {}
    offer(states, limits, 0)
    assert offer(states, limits, 0, defer=True, max_defer_ms=60_000) == Decision(DEFER, 8572)


# -- decide: several limits -----------------------------------------------------------------

TENANT = Limit(600, 2)  # 100 ms apart
USER = Limit(60, 1)  # 1 s apart


def test_the_strictest_limit_wins_and_every_limit_takes_the_slot() -> None:
    limits = {"t/acme": TENANT, "u/acme/u1": USER}
    states: dict[str, float] = {}
    assert offer(states, limits, 0, defer=True, max_defer_ms=10_000) == Decision(ALLOW, 0)
    assert states == {"t/acme": 100.0, "u/acme/u1": 1000.0}
    # The tenant limit would allow a second request now; the user limit defers it by 1 s,
    # and both limits count it at the slot it was given.
    assert offer(states, limits, 0, defer=True, max_defer_ms=10_000) == Decision(DEFER, 1000)
    assert states == {"t/acme": 1100.0, "u/acme/u1": 2000.0}


def test_the_strictest_limit_drops_and_no_limit_is_updated() -> None:
    limits = {"t/acme": TENANT, "u/acme/u1": USER}
    states: dict[str, float] = {}
    offer(states, limits, 0)
    before = dict(states)
    assert offer(states, limits, 0).outcome == DROP
    assert states == before


def test_a_tenant_limit_is_shared_by_its_users() -> None:
    tenant = Limit(60, 2)
    states: dict[str, float] = {}
    outcomes = [
        offer(states, {"t/acme": tenant, f"u/acme/{user}": Limit(600, 5)}, 0).outcome
        for user in ("u1", "u2", "u3")
    ]
    assert outcomes == [ALLOW, ALLOW, DROP]
    assert set(states) == {"t/acme", "u/acme/u1", "u/acme/u2"}


@pytest.mark.parametrize(
    ("states", "outcome"),
    [
        ({}, ALLOW),
        ({"t/acme": None, "u/acme/u1": None}, ALLOW),  # a table's default for a new key
        ({"t/acme": 0.0, "u/acme/u1": 5000.0}, DROP),  # only the user is over
        ({"t/acme": 5000.0, "u/acme/u1": 0.0}, DROP),  # only the tenant is over
    ],
)
def test_any_limit_over_drops(states: dict[str, float | None], outcome: str) -> None:
    decision, _ = decide(
        states, {"t/acme": TENANT, "u/acme/u1": USER}, 0, defer=False, max_defer_ms=0
    )
    assert decision.outcome == outcome


# --- WriteBehind: TATs in memory, checkpointed per partition ------------------------------


def test_write_behind_reads_what_was_put_before_any_checkpoint():
    tats = WriteBehind(every_ms=1_000)
    tats.put(3, "t/acme/3", 1_500.0)
    assert "t/acme/3" in tats
    assert tats.get("t/acme/3") == 1_500.0
    assert "t/other/3" not in tats


def test_write_behind_checkpoints_a_partition_once_per_interval():
    tats = WriteBehind(every_ms=1_000)
    assert tats.due(3, now_ms=10_000) == {}  # nothing changed yet; the clock starts
    tats.put(3, "t/acme/3", 20_000.0)
    tats.put(3, "t/acme/3", 21_000.0)
    tats.put(5, "c/acme/sms/5", 30_000.0)
    assert tats.due(3, now_ms=10_500) == {}  # within the interval
    assert tats.due(3, now_ms=11_000) == {"t/acme/3": 21_000.0}  # the latest value only
    assert tats.due(3, now_ms=12_500) == {}  # written; nothing new since
    assert tats.due(5, now_ms=12_500) == {"c/acme/sms/5": 30_000.0}  # partitions apart
    assert tats.get("t/acme/3") == 21_000.0  # still served from memory


def test_write_behind_neither_writes_nor_keeps_what_has_run_out():
    """A TAT at or before now is the same as no state: not worth a changelog record."""
    tats = WriteBehind(every_ms=1_000)
    tats.put(0, "u/acme/ann", 10_400.0)  # runs out before the checkpoint
    tats.put(0, "u/acme/bob", 99_000.0)
    assert tats.due(0, now_ms=11_000) == {"u/acme/bob": 99_000.0}
    assert "u/acme/ann" not in tats
    assert tats.get("u/acme/bob") == 99_000.0


def test_write_behind_forget_drops_values_and_pending_writes():
    tats = WriteBehind(every_ms=1)
    tats.put(0, "t/acme/0", 5.0)
    tats.forget()
    assert "t/acme/0" not in tats
    assert tats.due(0, now_ms=10**12) == {}
