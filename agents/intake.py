"""Intake: validate → dedup → fan out one record per recipient to the dispatch topic."""

from __future__ import annotations

from typing import Any

import faust

from agents.context import Pipeline
from agents.dedup import DedupWindow
from agents.dispatch import Dispatcher
from agents.route import fan_out
from agents.runaway import RunawayGuard
from streams.requests import now_ms, validate_request
from streams.tracing import annotate, child_span

STAGE = "validate"


def register(app: faust.App, pipeline: Pipeline, dispatcher: Dispatcher | None = None
             ) -> None:
    """`dispatcher`, when this worker also runs the dispatch stage, handles single-recipient
    requests in place: they are already keyed `tenant/user`, so they sit on the partition
    the dispatch topic would send them to, and the hop through it would only cost time."""
    settings = pipeline.settings
    window = DedupWindow(int(settings.dedup_window_s * 1000))
    seen = app.Table("dedup", default=None, partitions=settings.partitions)
    runaway = RunawayGuard(app, pipeline)

    @app.agent(pipeline.requests, name="tidings.intake",
               concurrency=settings.routing_concurrency())
    async def intake(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            async with pipeline.guard(STAGE, event):
                request = pipeline.request_serde.decode(event.value)
                annotate(request)
                validate_request(request)
                now = now_ms()
                key = window.key(request["tenant_id"], request["idempotency_key"])
                first: Any = seen.get(key)
                if window.is_duplicate(first, request["notification_id"], now):
                    await pipeline.emit_status(
                        request, "duplicate",
                        reason=f"idempotency key already used by {first[0]}",
                    )
                    continue
                seen[key] = window.remember(first, request["notification_id"], now)
                if await runaway.check(event, request):  # held: a tenant's runaway flood
                    continue
                await pipeline.emit_status(request, "accepted")
                if dispatcher is not None and len(request["recipients"]) == 1:
                    with child_span("rate_limit"):
                        await dispatcher.handle(event.key, request, event.message.partition)
                    continue
                for recipient_key, single in fan_out(request):
                    await pipeline.send(
                        pipeline.dispatch, recipient_key, pipeline.request_serde.encode(single)
                    )
