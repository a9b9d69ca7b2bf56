"""Dispatch: rate limit one recipient's notification, then route it to its channel topics.

Deferred messages (over a limit with the `defer` policy, or `send_at` in the future) go to a
retry tier with a due time; the delay line hands them to the channel topic when due.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import faust

from agents.context import Pipeline
from agents.rate_limit import ALLOW, DEFER, Limit, decide
from agents.render import Renderer
from streams.requests import now_ms

STAGE = "rate_limit"


def limits_for(request: Mapping[str, Any], settings: Any) -> dict[str, Limit]:
    """Every limit one single-recipient request counts against, by table key."""
    tenant = request["tenant_id"]
    user = request["recipients"][0]["user_id"]
    burst, partitions = settings.rate_burst, settings.partitions
    limits = {
        f"t/{tenant}": Limit(settings.rate_tenant_per_min, burst).split(partitions),
        f"u/{tenant}/{user}": Limit(settings.rate_user_per_min, burst),
    }
    for channel in request["channels"]:
        limits[f"c/{tenant}/{channel}"] = Limit(
            settings.rate_channel_per_min, burst
        ).split(partitions)
    return limits


class Dispatcher:
    """Rate limit and route one single-recipient request (the `dispatch` stage's logic)."""

    def __init__(self, app: faust.App, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.settings = pipeline.settings
        self.state = app.Table("rate-limits", default=None, partitions=self.settings.partitions)
        self.renderer = Renderer(app, pipeline)

    async def handle(self, key: bytes | None, request: dict[str, Any]) -> None:
        pipeline, settings, state = self.pipeline, self.settings, self.state
        now = now_ms()
        due = now
        if request["priority"] != "critical":
            # Critical notifications (security alerts, outages) bypass the limits.
            limits = limits_for(request, settings)
            decision, updates = decide(
                {k: state.get(k) for k in limits}, limits, now,
                defer=settings.rate_limit_policy == "defer",
                max_defer_ms=settings.retry_tiers_s[-1] * 1000,
            )
            for k, tat in updates.items():
                state[k] = tat
            if decision.outcome not in (ALLOW, DEFER):
                await pipeline.emit_status(
                    request, "rate_limited",
                    reason=f"over the limit; dropped per policy ({settings.rate_limit_policy})",
                )
                return
            due = decision.at_ms
        send_at = request.get("send_at")
        if send_at and send_at > due:
            due = send_at
        messages = await self.renderer.channel_messages(request)  # None: dead-lettered
        for message in messages or ():
            if due > now:
                await pipeline.park(key, message, due)
                await pipeline.emit_status(
                    message, "deferred", reason="send_at" if due == send_at else "rate limit"
                )
            else:
                await pipeline.channels[message["channel"]].send(
                    key=key, value=pipeline.message_serde.encode(message)
                )


def register(app: faust.App, pipeline: Pipeline) -> Dispatcher:
    dispatcher = Dispatcher(app, pipeline)

    @app.agent(pipeline.dispatch, name="tidings.dispatch")
    async def dispatch(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            async with pipeline.guard(STAGE, event):
                await dispatcher.handle(event.key, pipeline.request_serde.decode(event.value))

    return dispatcher
