"""Latency at a steady, unsaturated rate through a worker running every stage.

Requests are published at a fixed pace with the project's Publisher (confluent-kafka), each
stamped `created_at` = the moment it is sent; the worker's `delivered` status carries
`latency_ms` = delivered at - created_at. Latencies go into an HDR histogram (p50, p99,
p99.9, max) and into one bucket per second of publishing, so periodic spikes (the offset
commit every TIDINGS_COMMIT_INTERVAL_S) show, and are tested for (`_alignment`).
"""

from __future__ import annotations

import math
import statistics
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import kafka_io
import processes
import workload
from hdrh.histogram import HdrHistogram
from scenarios import Context, percentile, rounded, start_workers, stop_workers, wait_for

from streams.publisher import Publisher
from streams.requests import now_ms
from streams.serde import serde

# A run is saturated when the worker falls this far behind the publisher: what it measures
# from then on is the queue, not the latency, so publishing stops there.
_SATURATED_BACKLOG_S = 5.0
# The stages a notification passes through from publish to delivery.
PATH_STAGES = ["intake", "dispatch", "deliver", "delay_line"]


def latency(ctx: Context, seconds: float, rate: float, *, commit_interval_s: float = 1.0,
            warmup: int = 50, drain_s: float = 30.0) -> dict[str, Any]:
    """Publish `rate` requests/s for `seconds` through one worker running the stages on the
    publish → delivered path (intake, dispatch, deliver, delay line: not rules or analytics,
    which a deployment runs where it likes, TIDINGS_STAGES); the
    latency of each is its `delivered` status's latency_ms (delivered at - created_at, the
    publish time). A request not delivered by the end of the drain counts with the latency
    it had reached then, so the percentiles of a saturated run are lower bounds."""
    prefix, settings = ctx.new_run("lat")
    receiver, base = processes.start_receiver(ctx.workdir / "logs" / prefix)
    ctx.monitor.watch(f"{prefix}-receiver", receiver.pid)
    status = settings.topic("status")
    watch = kafka_io.Watermarks(ctx.bootstrap, status)
    ctx.say(f"  starting 1 worker with the stages {', '.join(PATH_STAGES)} (commit interval "
            f"{commit_interval_s:g} s); warming up")
    procs = start_workers(ctx, prefix, 1, PATH_STAGES,
                           TIDINGS_COMMIT_INTERVAL_S=str(commit_interval_s),
                           **processes.loopback_delivery_env())
    name = procs[0].name
    try:
        with Publisher(settings) as publisher:
            for request in workload.requests(warmup, base, seed=7, tenant_prefix="warmup"):
                publisher.send(request)
            publisher.flush()
            # accepted + delivered for each warm-up request
            wait_for(ctx, watch, 2 * warmup, 120, procs, "warm-up statuses")
            ctx.say(f"  publishing {rate:,.0f}/s for {seconds:g} s")
            paced = _paced(publisher, workload.requests(int(seconds * rate) + 1, base, seed=11),
                           seconds, rate, watch, statuses_before=watch.total())
            if paced.saturated_at_s is not None:
                ctx.say(f"  saturated: the worker was {_SATURATED_BACKLOG_S:g} s behind after "
                        f"{paced.saturated_at_s:.1f} s; stopped publishing")
        published_at = time.time()
        expected = 2 * warmup + 2 * len(paced.created)
        wait_for(ctx, watch, expected, drain_s, procs, "statuses")
        drained_at = time.time()
    finally:
        watch.close()
        stop_workers(ctx, procs)
        receiver.stop()
    decode = serde("DeliveryStatus").decode
    statuses = [decode(r.value) for r in kafka_io.read_all(ctx.bootstrap, status)]
    measured = [s for s in statuses if not s["tenant_id"].startswith("warmup")]
    delivered = {s["notification_id"]: s for s in measured if s["status"] == "delivered"}
    kinds = Counter(s["status"] for s in measured)
    if not delivered:
        raise RuntimeError(f"no delivered statuses; statuses: {dict(kinds)}")
    # Every published request, delivered or not: (created_at, latency, delivered?)
    samples = []
    for notification_id, created_at in paced.created.items():
        s = delivered.get(notification_id)
        if s is not None:
            samples.append((created_at, int(s["latency_ms"]), True))
        else:
            samples.append((created_at, int(drained_at * 1000) - created_at, False))
    histogram = HdrHistogram(1, 600_000, 3)
    for _created, latency_ms, _ok in samples:
        histogram.record_value(min(600_000, max(1, latency_ms)))
    t0 = min(created for created, _, _ in samples)
    buckets: dict[int, list[int]] = defaultdict(list)
    for created, latency_ms, _ok in samples:
        buckets[(created - t0) // 1000].append(latency_ms)
    per_second = [
        {"second": second, "count": len(values), "p50": percentile(values, 50),
         "p99": percentile(values, 99), "max": max(values)}
        for second, values in sorted(buckets.items())
    ]
    occurred = [s["occurred_at"] for s in delivered.values()]
    first_s, last_s = t0 / 1000, max(occurred) / 1000
    missing = sum(1 for _, _, ok in samples if not ok)
    saturated = paced.saturated_at_s is not None or missing > 0
    return {
        "rate": rate,
        "seconds": seconds,
        "published": len(paced.created),
        "published_s": round(paced.elapsed_s, 1),
        "publish_lag_max_ms": round(paced.worst_lag_s * 1000, 1),
        "delivered": len(delivered),
        "not_delivered_by_end": missing,
        "saturated": saturated,
        "saturated_at_s": paced.saturated_at_s,
        # A saturated run is cut short and counted by design; only a run that kept up is
        # expected to deliver everything.
        "complete": True if saturated else missing == 0,
        "delivered_per_s": round(len(occurred) / max(0.001, last_s - first_s), 1),
        "statuses": dict(kinds),
        "p50_ms": histogram.get_value_at_percentile(50),
        "p99_ms": histogram.get_value_at_percentile(99),
        "p999_ms": histogram.get_value_at_percentile(99.9),
        "max_ms": histogram.get_max_value(),
        "mean_ms": round(histogram.get_mean_value(), 1),
        "lower_bounds": missing > 0,
        "per_second": per_second,
        "commit_alignment": _alignment([(c, lat) for c, lat, ok in samples if ok],
                                       commit_interval_s),
        "worker_cores": rounded(ctx.monitor.cores(name, first_s, last_s)),
        "worker_peak_rss_mb": rounded(ctx.monitor.peak_rss_mb(name)),
        "other_cores": ctx.other_cores(first_s, last_s, [name, f"{prefix}-receiver"]),
        "drained_s": round(drained_at - published_at, 2),
        "commit_interval_s": commit_interval_s,
        "topic_prefix": prefix,
    }


@dataclass
class _Paced:
    created: dict[str, int]  # notification id → created_at (ms)
    elapsed_s: float
    worst_lag_s: float
    saturated_at_s: float | None


def _paced(publisher: Publisher, requests: Any, seconds: float, rate: float,
           watch: kafka_io.Watermarks, *, statuses_before: int) -> _Paced:
    """Send at `rate`/s for `seconds`, each stamped created_at = now; stop early when the
    worker falls `_SATURATED_BACKLOG_S` behind (two statuses per request: accepted,
    delivered)."""
    total = int(seconds * rate)
    start = time.monotonic()
    created: dict[str, int] = {}
    worst_lag = 0.0
    next_check = start + 1.0
    saturated_at: float | None = None
    for request in requests:
        if len(created) >= total:
            break
        now = time.monotonic()
        if now >= next_check:
            next_check = now + 0.5
            done = (watch.total() - statuses_before) / 2
            if len(created) - done > max(_SATURATED_BACKLOG_S * rate, 200):
                saturated_at = round(now - start, 1)
                break
        due = start + len(created) / rate
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        else:
            worst_lag = max(worst_lag, -wait)
        request["created_at"] = now_ms()
        created[publisher.send(request)] = request["created_at"]
    publisher.flush()
    return _Paced(created, time.monotonic() - start, worst_lag, saturated_at)


def _alignment(samples: list[tuple[int, int]], period_s: float) -> dict[str, Any]:
    """Do the slowest deliveries recur at the commit interval?

    Takes the (created_at, latency) of the deliveries at or above the p99 and measures how
    tightly the times they were published at cluster at one phase of a period: the mean
    resultant length R of the phases (Rayleigh's test; 0 = spread evenly over the period,
    1 = all at one phase). R at the commit interval is compared with R at periods that are
    not the commit interval; spikes driven by the commit timer show as R(commit) well above
    the others.
    """
    if not samples:
        return {}
    created = [c for c, _ in samples]
    latencies = [latency for _, latency in samples]
    threshold = percentile(latencies, 99)
    slow = [c for c, latency in zip(created, latencies, strict=True) if latency >= threshold]

    def resultant(period_ms: float) -> float:
        if not slow:
            return 0.0
        xs = [math.cos(2 * math.pi * c / period_ms) for c in slow]
        ys = [math.sin(2 * math.pi * c / period_ms) for c in slow]
        return round(math.hypot(sum(xs), sum(ys)) / len(slow), 2)

    controls = {f"{p:g}s": resultant(p * 1000) for p in (0.7, 1.3, 1.7, 2.3)}
    # The other view: p90 latency of every delivery by phase of the commit period (10 bins).
    # Commit stalls make one phase slow (peak well above the median bin); no periodic cost
    # leaves the bins level.
    period_ms = period_s * 1000
    bins: dict[int, list[int]] = defaultdict(list)
    for c, latency in samples:
        bins[int((c % period_ms) / period_ms * 10)].append(latency)
    by_phase = [percentile(bins[b], 90) if bins[b] else 0 for b in range(10)]
    level = statistics.median(by_phase) or 1
    return {
        "p90_by_phase_ms": by_phase,
        "phase_peak_over_median": round(max(by_phase) / level, 2),
        "slow_threshold_ms": threshold,
        "slow_count": len(slow),
        "r_at_commit_interval": resultant(period_s * 1000),
        "r_at_other_periods": controls,
        "r_other_mean": round(statistics.fmean(controls.values()), 2),
    }
