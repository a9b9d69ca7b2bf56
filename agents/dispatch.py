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
from agents.retry import DUE_HEADER, tier_for_wait
from agents.route import channel_messages
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


def register(app: faust.App, pipeline: Pipeline) -> None:
    settings = pipeline.settings
    state = app.Table("rate-limits", default=None, partitions=settings.partitions)
    tiers = settings.retry_tiers_s
    max_defer_ms = tiers[-1] * 1000

    async def defer(
        event: faust.EventT[bytes], message: dict[str, Any], due: int, now: int
    ) -> None:
        message["not_before"] = due
        tier = tier_for_wait((due - now) / 1000, tiers)
        await pipeline.retries[message["channel"]][tier].send(
            key=event.key, value=pipeline.message_serde.encode(message),
            headers=[(DUE_HEADER, str(due).encode())],
        )

    @app.agent(pipeline.dispatch, name="tidings.dispatch")
    async def dispatch(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            async with pipeline.guard(STAGE, event):
                request = pipeline.request_serde.decode(event.value)
                now = now_ms()
                due = now
                if request["priority"] != "critical":
                    # Critical notifications (security alerts, outages) bypass the limits.
                    limits = limits_for(request, settings)
                    decision, updates = decide(
                        {key: state.get(key) for key in limits}, limits, now,
                        defer=settings.rate_limit_policy == "defer", max_defer_ms=max_defer_ms,
                    )
                    for key, tat in updates.items():
                        state[key] = tat
                    if decision.outcome not in (ALLOW, DEFER):
                        await pipeline.emit_status(
                            request, "rate_limited",
                            reason=f"over the limit; dropped per policy "
                                   f"({settings.rate_limit_policy})",
                        )
                        continue
                    due = decision.at_ms
                send_at = request.get("send_at")
                if send_at and send_at > due:
                    due = send_at
                for message in channel_messages(request):
                    if due > now:
                        await defer(event, message, due, now)
                        await pipeline.emit_status(
                            message, "deferred",
                            reason="send_at" if due == send_at else "rate limit",
                        )
                    else:
                        await pipeline.channels[message["channel"]].send(
                            key=event.key, value=pipeline.message_serde.encode(message)
                        )
