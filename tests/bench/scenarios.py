"""The Tidings runs: pipeline throughput, delivery throughput, and latency at a steady rate.

Each run gets its own topic prefix and app id (so its consumer group and changelogs are
new), creates its topics with `streams.topics.create_topics`, and starts its worker(s) only
after its input is on the broker, so a rate measured from the output's first record to its
last is the worker's steady pace, not its start-up.
"""

from __future__ import annotations

import math
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kafka_io
import processes
import profiling
import workload

from streams.publisher import Publisher
from streams.serde import serde
from streams.settings import Settings, load_settings
from streams.topics import channel_topic, create_topics

PARTITIONS = 8


@dataclass
class Context:
    bootstrap: str
    monitor: processes.Monitor
    workdir: Path
    say: Callable[[str], None]
    broker_names: list[str]

    def new_run(self, kind: str) -> tuple[str, Settings]:
        prefix = f"bench-{kind}-{uuid.uuid4().hex[:8]}"
        settings = load_settings(kafka_bootstrap=self.bootstrap, topic_prefix=prefix,
                                 app_id=prefix, partitions=PARTITIONS,
                                 webhook_secret=processes.SECRET)
        create_topics(settings)  # the tables' changelogs too (streams/topics.py)
        return prefix, settings

    def other_cores(self, start: float, end: float, ours: list[str]) -> float | None:
        value = self.monitor.other_cores(start, end, [*ours, *self.broker_names])
        return round(value, 2) if value is not None else None


def start_workers(ctx: Context, prefix: str, count: int, stages: list[str] | None,
                   **extra: str) -> list[processes.Child]:
    workers = []
    for index in range(count):
        data_dir = ctx.workdir / prefix / f"data-{index}"
        data_dir.mkdir(parents=True)
        env = processes.worker_env(ctx.bootstrap, prefix, data_dir, stages=stages, **extra)
        name = f"{prefix}-worker-{index}"
        worker = processes.start_worker(name, env, ctx.workdir / "logs")
        ctx.monitor.watch(name, worker.pid)
        workers.append(worker)
    return workers


def stop_workers(ctx: Context, children: list[processes.Child]) -> None:
    for child in children:
        code = child.stop()
        if code not in (0, -15):
            ctx.say(f"  {child.name} exited {code}; log: {child.log_path}")


def _check_alive(workers: list[processes.Child]) -> None:
    for worker in workers:
        if not worker.alive():
            raise RuntimeError(f"{worker.name} exited {worker.process.returncode}:\n"
                               f"{worker.log_tail()}")


def wait_for(ctx: Context, watch: kafka_io.Watermarks, count: int, timeout_s: float,
          workers: list[processes.Child], what: str) -> int:
    deadline = time.monotonic() + timeout_s
    total = 0
    last_said = time.monotonic()
    while time.monotonic() < deadline:
        _check_alive(workers)
        total = watch.total()
        if total >= count:
            return total
        if time.monotonic() - last_said >= 5:
            last_said = time.monotonic()
            ctx.say(f"  … {total:,}/{count:,} {what}")
        time.sleep(0.2)
    return total


def _measure(ctx: Context, watch: kafka_io.Watermarks, count: int, budget_s: float,
             procs: list[processes.Child], what: str, profile_to: Path | None,
             trigger: kafka_io.Watermarks | None = None
             ) -> tuple[int, profiling.Recording | None]:
    """Wait for `count` records, at most `budget_s` from now. With `profile_to`, py-spy
    records the first worker from the first record on `trigger` (the first stage's output;
    default `watch`) to the end of the wait: the measured run is the profiled run."""
    deadline = time.monotonic() + budget_s
    recording = None
    if profile_to is not None:
        wait_for(ctx, trigger or watch, 1, budget_s, procs, f"first {what}")
        recording = profiling.Recording(procs[0].pid, profile_to)
    try:
        total = wait_for(ctx, watch, count, max(0.0, deadline - time.monotonic()), procs, what)
    finally:
        if recording is not None:
            recording.stop()
    return total, recording


def _first_seen(records: list[kafka_io.Record], decode: Callable[[bytes], Any],
                into: dict[str, int]) -> None:
    """Delivery id → timestamp of the first record routing it."""
    into.clear()
    for record in sorted(records, key=lambda r: r.timestamp_ms):
        into.setdefault(decode(record.value)["delivery_id"], record.timestamp_ms)


def _per_second(timestamps_ms: list[int]) -> list[int]:
    start = min(timestamps_ms)
    counts = Counter((t - start) // 1000 for t in timestamps_ms)
    return [counts.get(second, 0) for second in range(max(counts) + 1)]


def _rate(timestamps_ms: list[int]) -> tuple[float | None, float]:
    span_s = (max(timestamps_ms) - min(timestamps_ms)) / 1000
    return (len(timestamps_ms) / span_s if span_s > 0 else None), span_s


def _steady_rate(timestamps_ms: list[int]) -> float | None:
    """The rate between the 5th and the 95th percentile record: without the ramp at start
    (the first records trickle out while the worker's producer warms up) and the tail."""
    ordered = sorted(timestamps_ms)
    low, high = int(0.05 * len(ordered)), int(0.95 * len(ordered)) - 1
    span_s = (ordered[high] - ordered[low]) / 1000 if high > low else 0
    return round((high - low) / span_s, 1) if span_s > 0 else None


def publish_requests(settings: Settings, count: int, webhook_base: str) -> float:
    """Publish `count` requests with the project's Publisher; return requests/s."""
    started = time.monotonic()
    with Publisher(settings, linger_ms=20) as publisher:
        for request in workload.requests(count, webhook_base):
            while True:
                try:
                    publisher.send(request)
                    break
                except BufferError:
                    publisher._producer.poll(0.05)  # noqa: SLF001 - a bench backs off
    return count / (time.monotonic() - started)


# -- pipeline: requests → intake → dispatch → channel.webhook --------------------------------


def pipeline(ctx: Context, events: int, *, workers: int = 1, budget_s: float = 60.0,
             profile_to: Path | None = None, **worker_settings: str) -> dict[str, Any]:
    """Requests published first, then the worker(s) started; the rate is the channel topic's
    record timestamps (CreateTime, stamped by the worker's producer), first to last. A run
    that has not routed every request `budget_s` after the workers start is cut there and
    measured on what was routed."""
    prefix, settings = ctx.new_run("pipe")
    ctx.say(f"  publishing {events:,} requests to {prefix}.requests …")
    # Delivery does not run here; the URL only has to be valid.
    publish_rate = publish_requests(settings, events, "http://127.0.0.1:9/none")
    ctx.say(f"  published ({publish_rate:,.0f}/s); starting {workers} worker(s) "
            "with stages intake, dispatch")
    channel = channel_topic(settings, "webhook")
    watch = kafka_io.Watermarks(ctx.bootstrap, channel)
    started = time.time()
    deadline = time.monotonic() + budget_s
    procs = start_workers(ctx, prefix, workers, ["intake", "dispatch"],
                           **{**processes.loopback_delivery_env(), **worker_settings})
    decode = serde("ChannelMessage").decode
    first_routed: dict[str, int] = {}  # delivery id → when first routed (a rebalance repeats)
    # Intake's first output is its `accepted` status (it routes single-recipient requests in
    # place, without the dispatch topic, when the worker runs both stages).
    intake_out = kafka_io.Watermarks(ctx.bootstrap, settings.topic("status"))
    try:
        total, recording = _measure(ctx, watch, events, budget_s, procs, "routed", profile_to,
                                    trigger=intake_out)
        records = kafka_io.read_all(ctx.bootstrap, channel)
        _first_seen(records, decode, first_routed)
        # At-least-once: records processed again after a rebalance are routed again. Wait
        # (within the budget) until every request has been routed once.
        while recording is None and len(first_routed) < events and time.monotonic() < deadline:
            wait_for(ctx, watch, len(records) + events - len(first_routed),
                  deadline - time.monotonic(), procs, "routed")
            records = kafka_io.read_all(ctx.bootstrap, channel)
            _first_seen(records, decode, first_routed)
        finished = time.time()
    finally:
        watch.close()
        intake_out.close()
        stop_workers(ctx, procs)
    cut = len(first_routed) < events
    dead_letters = kafka_io.count(ctx.bootstrap, settings.topic("deadletter"))
    if not records:
        raise RuntimeError(f"nothing routed within {budget_s:g} s; {dead_letters} dead letters;"
                           f" worker log {procs[0].log_path}")
    routed = list(first_routed.values())
    rate, span_s = _rate(routed)
    unique = len(first_routed)
    status_decode = serde("DeliveryStatus").decode
    accepted = [r.timestamp_ms for r in kafka_io.read_all(ctx.bootstrap, settings.topic("status"))
                if status_decode(r.value)["status"] == "accepted"]
    intake_rate = _rate(accepted)[0] if accepted else None
    first_s, last_s = min(routed) / 1000, max(routed) / 1000
    names = [p.name for p in procs]
    result: dict[str, Any] = {
        "events": events,
        "workers": workers,
        "routed": unique,
        "routed_again": len(records) - unique,
        "dead_letters": dead_letters,
        # Every request routed (at least once), unless the run was cut; none dead-lettered.
        "complete": (unique == events or unique < events and cut) and dead_letters == 0,
        "cut": cut,
        "events_per_s": round(rate, 1) if rate else None,
        "events_per_s_per_worker": round(rate / workers, 1) if rate else None,
        "steady_events_per_s": _steady_rate(routed),
        "span_s": round(span_s, 2),
        "intake_events_per_s": round(intake_rate, 1) if intake_rate else None,
        "publish_per_s": round(publish_rate, 1),
        "startup_s": round(first_s - started, 2),
        "per_second": _per_second(routed),
        "worker_cores": [rounded(ctx.monitor.cores(n, first_s, last_s)) for n in names],
        "worker_peak_rss_mb": [rounded(ctx.monitor.peak_rss_mb(n)) for n in names],
        "other_cores": ctx.other_cores(first_s, last_s, names),
        "topic_prefix": prefix,
        "waited_for_total": total,
        "wait_s": round(finished - started, 1),
    }
    if recording is not None:
        result["profile"] = recording.summary()
        result["profile"]["raw"] = str(profile_to)
    return result


# -- delivery: channel.webhook → deliver → receiver ------------------------------------------


def delivery(ctx: Context, events: int, *, budget_s: float = 60.0,
             profile_to: Path | None = None, **worker_settings: str) -> dict[str, Any]:
    """ChannelMessages produced first, then a deliver-only worker started; the rate is the
    `delivered` statuses' occurred_at, first to last, cut at `budget_s` like `pipeline`."""
    prefix, settings = ctx.new_run("dlv")
    receiver, base = processes.start_receiver(ctx.workdir / "logs" / prefix)
    ctx.monitor.watch(f"{prefix}-receiver", receiver.pid)
    procs: list[processes.Child] = []
    try:
        channel = channel_topic(settings, "webhook")
        ctx.say(f"  producing {events:,} ChannelMessages to {channel} …")
        kafka_io.produce_all(ctx.bootstrap, channel,
                             workload.channel_message_records(events, base))
        status = settings.topic("status")
        watch = kafka_io.Watermarks(ctx.bootstrap, status)
        ctx.say("  starting 1 worker with stage deliver")
        started = time.time()
        procs = start_workers(ctx, prefix, 1, ["deliver"],
                               **{**processes.loopback_delivery_env(), **worker_settings})
        try:
            total, recording = _measure(ctx, watch, events, budget_s, procs, "statuses",
                                        profile_to)
        finally:
            watch.close()
            stop_workers(ctx, procs)
    finally:
        receiver.stop()
    decode = serde("DeliveryStatus").decode
    statuses = [decode(r.value) for r in kafka_io.read_all(ctx.bootstrap, status)]
    kinds = Counter(s["status"] for s in statuses)
    delivered = [s["occurred_at"] for s in statuses if s["status"] == "delivered"]
    if not delivered:
        raise RuntimeError(f"nothing delivered within {budget_s:g} s; statuses {dict(kinds)};"
                           f" worker log {procs[0].log_path if procs else '-'}")
    unique = len({s["delivery_id"] for s in statuses if s["status"] == "delivered"})
    rate, span_s = _rate(delivered) if delivered else (None, 0.0)
    first_s = min(delivered) / 1000 if delivered else started
    last_s = max(delivered) / 1000 if delivered else time.time()
    name = procs[0].name if procs else ""
    result: dict[str, Any] = {
        "events": events,
        "delivered": len(delivered),
        "delivered_unique": unique,
        "complete": unique == len(delivered) and (unique == events or total < events),
        "cut": total < events,
        "statuses": dict(kinds),
        "deliveries_per_s": round(rate, 1) if rate else None,
        "steady_deliveries_per_s": _steady_rate(delivered) if delivered else None,
        "span_s": round(span_s, 2),
        "startup_s": round(first_s - started, 2),
        "per_second": _per_second(delivered) if delivered else [],
        "worker_cores": rounded(ctx.monitor.cores(name, first_s, last_s)),
        "receiver_cores": rounded(ctx.monitor.cores(f"{prefix}-receiver", first_s, last_s)),
        "worker_peak_rss_mb": rounded(ctx.monitor.peak_rss_mb(name)),
        "other_cores": ctx.other_cores(first_s, last_s, [name, f"{prefix}-receiver"]),
        "concurrency": settings.delivery_concurrency,
        "topic_prefix": prefix,
    }
    if recording is not None:
        result["profile"] = recording.summary()
        result["profile"]["raw"] = str(profile_to)
    return result


def percentile(values: list[int], pct: float) -> int:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(pct / 100 * len(ordered)) - 1))
    return ordered[index]


def rounded(value: float | None, digits: int = 2) -> float | None:
    return round(value, digits) if value is not None else None
