"""Dispatch: rate limit one recipient's notification, then route it to its channel topics.

Deferred messages (over a limit with the `defer` policy, or `send_at` in the future) go to a
retry tier with a due time; the delay line hands them to the channel topic when due.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import faust

from agents import preferences
from agents.context import Pipeline
from agents.enrichment.stage import EnrichStage
from agents.rate_limit import ALLOW, DEFER, Limit, WriteBehind, decide
from agents.render import Renderer
from streams.requests import now_ms
from streams.tracing import annotate

STAGE = "rate_limit"


def limits_for(request: Mapping[str, Any], settings: Any, partition: int) -> dict[str, Limit]:
    """Every limit one single-recipient request counts against, by table key.

    The tenant and tenant-channel limits are split over the partitions (agents/rate_limit.py),
    so their keys name the partition: each partition's share is its own state. (Without it,
    one key would live in every partition's store and a read could see another's.)
    """
    tenant = request["tenant_id"]
    user = request["recipients"][0]["user_id"]
    burst, partitions = settings.rate_burst, settings.partitions
    limits = {
        f"t/{tenant}/{partition}": Limit(settings.rate_tenant_per_min, burst).split(partitions),
        f"u/{tenant}/{user}": Limit(settings.rate_user_per_min, burst),
    }
    for channel in request["channels"]:
        limits[f"c/{tenant}/{channel}/{partition}"] = Limit(
            settings.rate_channel_per_min, burst
        ).split(partitions)
    return limits


def _is_shared(key: str) -> bool:
    return not key.startswith("u/")


class Dispatcher:
    """Rate limit and route one single-recipient request (the `dispatch` stage's logic)."""

    def __init__(self, app: faust.App, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.settings = pipeline.settings
        self.state = app.Table("rate-limits", default=None, partitions=self.settings.partitions)
        self.shared = WriteBehind(int(self.settings.rate_checkpoint_s * 1000))
        self.enrich = EnrichStage(app, pipeline)
        self.preferences = preferences.attach(app, pipeline)
        self.renderer = Renderer(app, pipeline)

        @app.on_partitions_revoked.connect
        async def _forget_shared(*_: Any, **__: Any) -> None:
            self.shared.forget()

    def _read(self, key: str) -> float | None:
        if key in self.shared:
            return self.shared.get(key)
        value: float | None = self.state.get(key)
        return value

    async def handle(self, key: bytes | None, request: dict[str, Any], partition: int) -> None:
        """`partition`: the partition of the event being processed; table writes go there."""
        pipeline, settings, state = self.pipeline, self.settings, self.state
        annotate(request)
        # Opt-outs and quiet hours come before the limits: a suppressed or parked message
        # takes no slot.
        if (applied := await self.preferences.apply(key, request)) is None:
            return
        request, quiet = applied
        now = now_ms()
        due = now
        if quiet is not None:
            # Parked (below, once rendered) until the user's quiet hours end.
            due = quiet.until_ms
        elif request["priority"] != "critical":
            # Critical notifications (security alerts, outages) bypass the limits.
            limits = limits_for(request, settings, partition)
            states = {k: self._read(k) for k in limits}
            decision, updates = decide(
                states, limits, now,
                defer=settings.rate_limit_policy == "defer",
                max_defer_ms=settings.retry_tiers_s[-1] * 1000,
            )
            for k, tat in updates.items():
                if _is_shared(k):
                    self.shared.put(partition, k, tat)
                else:
                    state[k] = tat
            for k, tat in self.shared.due(partition, now).items():
                state[k] = tat
            if decision.outcome != ALLOW:
                pipeline.observe.rate_limited(request["tenant_id"], states, limits, now)
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
        # Enrichment (language, sentiment, entities, spam score): `review.context` is the
        # renderer's extra template context; `review.redact` cleans insecure channels' text.
        review = await self.enrich.review(request)
        if review.quarantined:
            return
        messages = await self.renderer.channel_messages(
            request, extra=review.context,
            detected_language=review.context.get("detected_language"),
        )  # None: dead-lettered
        for message in messages or ():
            message = review.redact(message)
            if due > now:
                await pipeline.park(key, message, due)
                if quiet is not None and due == quiet.until_ms:
                    await pipeline.emit_status(message, "deferred", reason=quiet.reason,
                                               details=quiet.details)
                else:
                    await pipeline.emit_status(
                        message, "deferred",
                        reason="send_at" if due == send_at else "rate limit",
                    )
            else:
                await pipeline.send(
                    pipeline.channels[message["channel"]], key,
                    pipeline.message_serde.encode(message),
                )


def register(app: faust.App, pipeline: Pipeline) -> Dispatcher:
    dispatcher = Dispatcher(app, pipeline)

    @app.agent(pipeline.dispatch, name="tidings.dispatch")
    async def dispatch(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            async with pipeline.guard(STAGE, event):
                await dispatcher.handle(
                    event.key, pipeline.request_serde.decode(event.value), event.message.partition
                )

    return dispatcher
