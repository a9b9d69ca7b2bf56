"""What the stages tell Prometheus: one `Observer` per pipeline, fed from `Pipeline`'s
status, dead-letter and guard paths, so the stages themselves carry almost no metric code.

The instruments are declared in `streams/metrics/instruments.py`; this module turns the
pipeline's events (a status record, a dead letter, a rate-limit decision, the breakers'
states) into their label values.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

from agents.breaker import CLOSED, STATE_VALUES, CircuitBreaker
from agents.rate_limit import Limit, gcra_wait
from agents.retry import tier_for_wait
from streams.errors import SerializationError, ValidationError
from streams.metrics.instruments import (
    DEADLETTERS,
    DURATION,
    NO_CHANNEL,
    RATE_LIMIT_HITS,
    REQUESTS,
    RETRIES,
    VALIDATION_ERRORS,
    TenantLabels,
    validation_error_type,
)
from streams.requests import now_ms
from streams.serde import serde
from streams.settings import Settings
from streams.topics import tier_name

VALIDATE_STAGE = "validate"  # agents/intake.py
# Rate-limit table keys (agents/dispatch.py `limits_for`) start with the limit's scope.
_LIMIT_TYPES = {"t": "tenant", "u": "user", "c": "channel"}


class Observer:
    def __init__(self, settings: Settings) -> None:
        self.tenant = TenantLabels(settings.metrics_tenant_limit, settings.metrics_tenants)
        self._tiers = settings.retry_tiers_s
        self._requests: dict[tuple[str, str, str], Any] = {}
        self._request_fields = frozenset(
            field["name"] for field in serde("NotificationRequest").schema["fields"]
        )

    def status(self, record: Mapping[str, Any], message: Mapping[str, Any]) -> None:
        """Count one DeliveryStatus; a delivery's latency; a retry's tier."""
        channel = record.get("channel") or NO_CHANNEL
        status = record["status"]
        labels = (self.tenant(record.get("tenant_id")), channel, status)
        counter = self._requests.get(labels)
        if counter is None:  # .labels() costs more than the increment; keep the children
            counter = self._requests[labels] = REQUESTS.labels(*labels)
        counter.inc()
        if status == "delivered" and record.get("latency_ms") is not None:
            DURATION.labels(channel).observe(record["latency_ms"] / 1000)
        elif status == "retrying":
            RETRIES.labels(channel, self.retry_tier(message)).inc()

    def retry_tier(self, message: Mapping[str, Any]) -> str:
        """The tier a retry was parked in. `Pipeline.park` sets `not_before` to the due time
        and picks the tier from the wait until then; the same rule gives the same tier."""
        wait_s = max(0, int(message.get("not_before") or 0) - now_ms()) / 1000
        return tier_name(self._tiers[tier_for_wait(wait_s, self._tiers)])

    def dead_letter(self, stage: str, error: BaseException) -> None:
        DEADLETTERS.labels(stage, type(error).__name__).inc()
        if stage == VALIDATE_STAGE and isinstance(error, SerializationError | ValidationError):
            VALIDATION_ERRORS.labels(validation_error_type(error, self._request_fields)).inc()

    def rate_limited(self, tenant_id: str, states: Mapping[str, float | None],
                     limits: Mapping[str, Limit], now: int) -> None:
        """Count each limit a request was over (tenant, user, per-tenant channel)."""
        over = {_LIMIT_TYPES.get(key.split("/", 1)[0], "other")
                for key, limit in limits.items() if gcra_wait(states.get(key), now, limit) > 0}
        for limit_type in sorted(over):
            RATE_LIMIT_HITS.labels(self.tenant(tenant_id), limit_type).inc()


class BreakerStates(Collector):
    """`notification_circuit_breaker_state{service}`: 0 closed, 1 half-open, 2 open.

    Read from the deliver stage's breakers when Prometheus scrapes. Webhook breakers are
    one per receiving host, so their number follows the tenants' endpoints: at most
    `limit` series are reported, the least healthy first (open, then half-open, then by
    name), so an open breaker is never the one left out.
    """

    def __init__(self) -> None:
        self._breakers: Mapping[str, CircuitBreaker] = {}
        self._limit = 50
        self._lock = threading.Lock()

    def track(self, breakers: Mapping[str, CircuitBreaker], limit: int) -> None:
        with self._lock:
            self._breakers, self._limit = breakers, limit

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily(
            "notification_circuit_breaker_state",
            "Circuit breaker state per provider endpoint: 0 closed, 1 half-open, 2 open.",
            labels=["service"],
        )
        with self._lock:
            states = [(STATE_VALUES.get(b.state, 0), name)
                      for name, b in list(self._breakers.items())]
            limit = self._limit
        states.sort(key=lambda item: (-item[0], item[1]))
        for value, name in states[:limit]:
            gauge.add_metric([name], value)
        yield gauge


BREAKERS = BreakerStates()
REGISTRY.register(BREAKERS)

__all__ = ["BREAKERS", "CLOSED", "BreakerStates", "Observer"]
