"""The worker's Prometheus instruments, on prometheus-client's default registry.

The default registry is deliberate: any module of the worker (another stage, analytics)
that declares its own instrument appears on the same `/metrics` page without wiring.

Names follow Prometheus' conventions (https://prometheus.io/docs/practices/naming/): base
units (seconds), `_total` on counters. Every label has a bounded set of values:

    tenant_id    the first `metrics_tenant_limit` tenants a worker sees (or an allow-list);
                 every other tenant is counted under `_other` (`TenantLabels`)
    channel      the five channels, or `none` for a request-level status (accepted, ...)
    status       the DeliveryStatus vocabulary of the stages
    stage        the stage names of `Pipeline.guard` / `dead_letter`
    error_class  our error classes (streams/errors.py, agents/deliver.py) and, for a bug,
                 a Python exception class name
    error_type   the error class, plus the top-level request field for a ValidationError
    tier         retry tier names (`5s`, `30m`), from settings
    service      breaker endpoints, capped (agents/observe.py)
"""

from __future__ import annotations

import re
import threading
from collections.abc import Collection, Iterable

from prometheus_client import Counter, Histogram, disable_created_metrics

# `*_created` series double the series count for a figure no dashboard of ours reads.
disable_created_metrics()  # type: ignore[no-untyped-call]

OTHER_TENANTS = "_other"
NO_CHANNEL = "none"

REQUESTS = Counter(
    "notification_requests_total",
    "Statuses emitted by the pipeline (accepted, duplicate, delivered, ...), "
    "by tenant, channel and status.",
    ["tenant_id", "channel", "status"],
)
DURATION = Histogram(
    "notification_duration_seconds",
    "Time from a notification's created_at (publish) to its delivery, by channel.",
    ["channel"],
    # From a fast local delivery to one that waited out the retry tiers (up to hours).
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600, 7200),
)
RATE_LIMIT_HITS = Counter(
    "notification_rate_limit_hits_total",
    "Requests over a rate limit (deferred or dropped), by tenant and limit type "
    "(tenant, user, channel).",
    ["tenant_id", "type"],
)
VALIDATION_ERRORS = Counter(
    "notification_validation_errors_total",
    "Requests the validate stage rejected, by error type.",
    ["error_type"],
)
RETRIES = Counter(
    "notification_retries_total",
    "Delivery attempts sent to a retry tier (provider errors and open breakers), "
    "by channel and tier.",
    ["channel", "tier"],
)
DEADLETTERS = Counter(
    "notification_deadletters_total",
    "Records written to the dead-letter topic, by stage and error class.",
    ["stage", "error_class"],
)
STAGE_DURATION = Histogram(
    "notification_stage_duration_seconds",
    "Time one stage spends on one record (decode, decide, produce; a delivery's send).",
    ["stage"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15,
             30),
)


class TenantLabels:
    """Bounds the `tenant_id` label: a Prometheus series per tenant is fine for tens of
    tenants and ruinous for thousands (each label value is a new series in every
    instrument that carries it: https://prometheus.io/docs/practices/instrumentation/
    #do-not-overuse-labels).

    With an allow-list, exactly those tenants are labelled. Without one, the first `limit`
    distinct tenants this process sees are, and the rest share `_other`. Per-tenant
    investigation beyond that belongs to the status topic, which has every tenant.
    """

    def __init__(self, limit: int, allow: Iterable[str] = ()) -> None:
        self._limit = limit
        self._allow = frozenset(allow)
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, tenant_id: str | None) -> str:
        tenant = tenant_id or OTHER_TENANTS
        if self._allow:
            return tenant if tenant in self._allow else OTHER_TENANTS
        if tenant in self._seen:
            return tenant
        with self._lock:
            if len(self._seen) < self._limit:
                self._seen.add(tenant)
                return tenant
        return OTHER_TENANTS


_TOP_FIELD = re.compile(r"[A-Za-z_]+")


def validation_error_type(error: BaseException, known_fields: Collection[str]) -> str:
    """`SerializationError`, or `ValidationError:<field>` for one of the request's own
    top-level fields. Field paths can carry user data (`data.<key>`, an unknown field's
    name), so only the first segment is kept, and only when it is a field of the schema."""
    name = type(error).__name__
    field = getattr(error, "field", None)
    if not isinstance(field, str):
        return name
    match = _TOP_FIELD.match(field)
    top = match.group(0) if match else ""
    return f"{name}:{top}" if top in known_fields else f"{name}:other"
