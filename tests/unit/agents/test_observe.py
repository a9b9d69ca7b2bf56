"""agents/observe.py: pipeline events become the right samples on the default registry."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry

from agents.breaker import CircuitBreaker
from agents.observe import BreakerStates, Observer
from agents.rate_limit import Limit
from streams.errors import SerializationError, ValidationError
from streams.requests import now_ms
from streams.settings import Settings


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def observer(**overrides: object) -> Observer:
    return Observer(Settings(retry_tiers_s=(5, 30, 300), **overrides))  # type: ignore[arg-type]


def test_statuses_are_counted_by_tenant_channel_and_status() -> None:
    obs = observer(metrics_tenants=("obs-a",))
    before = sample("notification_requests_total", tenant_id="obs-a", channel="none",
                    status="accepted")
    other = sample("notification_requests_total", tenant_id="_other", channel="sms",
                   status="rejected")
    obs.status({"tenant_id": "obs-a", "channel": None, "status": "accepted"}, {})
    obs.status({"tenant_id": "obs-b", "channel": "sms", "status": "rejected"}, {})
    assert sample("notification_requests_total", tenant_id="obs-a", channel="none",
                  status="accepted") == before + 1
    assert sample("notification_requests_total", tenant_id="_other", channel="sms",
                  status="rejected") == other + 1


def test_a_delivery_observes_its_latency() -> None:
    obs = observer()
    count = sample("notification_duration_seconds_count", channel="slack")
    total = sample("notification_duration_seconds_sum", channel="slack")
    le_1s = sample("notification_duration_seconds_bucket", channel="slack", le="1.0")
    obs.status({"tenant_id": "t", "channel": "slack", "status": "delivered",
                "latency_ms": 750}, {})
    assert sample("notification_duration_seconds_count", channel="slack") == count + 1
    assert sample("notification_duration_seconds_sum", channel="slack") == total + 0.75
    assert sample("notification_duration_seconds_bucket", channel="slack",
                  le="1.0") == le_1s + 1


def test_a_retry_is_counted_in_the_tier_park_chose() -> None:
    obs = observer()
    rows = [(4_000, "5s"), (20_000, "30s"), (31_000, "5m"), (3_600_000, "5m")]
    for wait_ms, tier in rows:
        before = sample("notification_retries_total", channel="email", tier=tier)
        message = {"not_before": now_ms() + wait_ms}
        obs.status({"tenant_id": "t", "channel": "email", "status": "retrying"}, message)
        assert sample("notification_retries_total", channel="email", tier=tier) == before + 1


def test_dead_letters_and_validation_errors() -> None:
    obs = observer()
    dead = sample("notification_deadletters_total", stage="validate",
                  error_class="ValidationError")
    invalid = sample("notification_validation_errors_total",
                     error_type="ValidationError:channels")
    undecodable = sample("notification_validation_errors_total", error_type="SerializationError")
    obs.dead_letter("validate", ValidationError("no channel", field="channels"))
    obs.dead_letter("validate", SerializationError("not Avro"))
    # A record that does not decode at delivery is a dead letter, not a validation error.
    obs.dead_letter("deliver", SerializationError("not Avro"))
    assert sample("notification_deadletters_total", stage="validate",
                  error_class="ValidationError") == dead + 1
    assert sample("notification_validation_errors_total",
                  error_type="ValidationError:channels") == invalid + 1
    assert sample("notification_validation_errors_total",
                  error_type="SerializationError") == undecodable + 1


def test_rate_limit_hits_name_the_limits_that_were_over() -> None:
    obs = observer(metrics_tenants=("rl-tenant",))
    # Keys as agents/dispatch.py `limits_for` names them: the scope, then the tenant.
    limits = {
        "t/rl-tenant/0": Limit(6000, 1),
        "u/rl-tenant/u": Limit(60, 1),
        "c/rl-tenant/sms/0": Limit(6000, 1),
    }
    now = now_ms()
    # The user's slot is taken for the next second; the tenant and channel limits are free.
    states = {key: (now + 1000.0 if key.startswith("u/") else None) for key in limits}
    user = sample("notification_rate_limit_hits_total", tenant_id="rl-tenant", type="user")
    tenant = sample("notification_rate_limit_hits_total", tenant_id="rl-tenant", type="tenant")
    obs.rate_limited("rl-tenant", states, limits, now)
    assert sample("notification_rate_limit_hits_total", tenant_id="rl-tenant",
                  type="user") == user + 1
    assert sample("notification_rate_limit_hits_total", tenant_id="rl-tenant",
                  type="tenant") == tenant


def test_breaker_states_put_the_open_ones_first_within_the_limit() -> None:
    clock = [0.0]
    breakers = {name: CircuitBreaker(min_calls=1, clock=lambda: clock[0])
                for name in ("webhook:a", "webhook:b", "webhook:c", "sms:twilio")}
    for _ in range(3):
        breakers["webhook:c"].record(failed=True)
    registry = CollectorRegistry()
    states = BreakerStates()
    registry.register(states)
    states.track(breakers, limit=2)
    reported = {s.labels["service"]: s.value
                for metric in registry.collect() for s in metric.samples}
    assert reported == {"webhook:c": 2, "sms:twilio": 0}
