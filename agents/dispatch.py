"""Dispatch: rate limit one recipient's notification, then route it to its channel topics.

Deferred messages (over a limit with the `defer` policy, or `send_at` in the future) go to a
retry tier with a due time; the delay line hands them to the channel topic when due.
"""

from __future__ import annotations

import datetime
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


class Dispatcher:
    """Rate limit and route one single-recipient request (the `dispatch` stage's logic)."""

    def __init__(self, app: faust.App, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.settings = pipeline.settings
        self.state = app.Table("rate-limits", default=None, partitions=self.settings.partitions)
        self.tats = WriteBehind(int(self.settings.rate_checkpoint_s * 1000))
        self.enrich = EnrichStage(app, pipeline)
        self.preferences = preferences.attach(app, pipeline)
        self.renderer = Renderer(app, pipeline)

        @app.on_partitions_revoked.connect
        async def _forget_tats(*_: Any, **__: Any) -> None:
            self.tats.forget()

    def _read(self, key: str) -> float | None:
        if key in self.tats:
            return self.tats.get(key)
        value: float | None = self.state.get(key)
        return value

    async def handle(self, key: bytes | None, request: dict[str, Any], partition: int) -> None:
        """`partition`: the partition of the event being processed; table writes go there."""
        pipeline, settings, state = self.pipeline, self.settings, self.state
        annotate(request)
        # Opt-outs and quiet hours come before the limits: a suppressed message, or one
        # that waits for the end of the user's quiet hours, takes no slot.
        if (applied := await self.preferences.apply(request)) is None:
            return
        request, quiet_until = applied.request, applied.defer_until_ms
        now = now_ms()
        due = now
        if quiet_until is None and request["priority"] != "critical":
            # Critical notifications (security alerts, outages) bypass the limits.
            limits = limits_for(request, settings, partition)
            states = {k: self._read(k) for k in limits}
            decision, updates = decide(
                states, limits, now,
                defer=settings.rate_limit_policy == "defer",
                max_defer_ms=settings.retry_tiers_s[-1] * 1000,
            )
            for k, tat in updates.items():
                self.tats.put(partition, k, tat)
            for k, tat in self.tats.due(partition, now).items():
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
        if quiet_until is not None and quiet_until > due:
            due = quiet_until
        # Enrichment (language, sentiment, entities, spam score): `review.context` is the
        # renderer's extra template context; `review.redact` cleans insecure channels' text.
        review = await self.enrich.review(request)
        if review.quarantined:
            return
        messages = await self.renderer.channel_messages(
            request, extra=review.context, preferred_locale=applied.locale,
            detected_language=review.context.get("detected_language"),
        )  # None: dead-lettered
        for message in messages or ():
            message = review.redact(message)
            if due > now:
                await pipeline.park(key, message, due)
                await pipeline.emit_status(message, "deferred", **_deferral(due, send_at,
                                                                            quiet_until))
            else:
                await pipeline.send(
                    pipeline.channels[message["channel"]], key,
                    pipeline.message_serde.encode(message),
                )


def _deferral(due: int, send_at: int | None, quiet_until: int | None) -> dict[str, Any]:
    """The reason (and details) of a `deferred` status."""
    if due == quiet_until:
        until = datetime.datetime.fromtimestamp(due / 1000, tz=datetime.UTC).isoformat()
        return {"reason": f"quiet hours until {until}",
                "details": {"cause": "quiet_hours", "until": until}}
    return {"reason": "send_at" if due == send_at else "rate limit"}


def register(app: faust.App, pipeline: Pipeline) -> Dispatcher:
    dispatcher = Dispatcher(app, pipeline)

    @app.agent(pipeline.dispatch, name="tidings.dispatch",
               concurrency=pipeline.settings.routing_concurrency())
    async def dispatch(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            async with pipeline.guard(STAGE, event):
                await dispatcher.handle(
                    event.key, pipeline.request_serde.decode(event.value), event.message.partition
                )

    return dispatcher
