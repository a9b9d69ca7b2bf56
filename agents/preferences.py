"""The preferences stage: a table of every user's preferences, and the check the dispatch
stage makes before rate limiting (`Preferences.apply`).

The table is fed by an agent on the compacted preferences topic, keyed `tenant/user` with the
partition count of the dispatch topic: Faust assigns the same partition of both to the same
worker, so the lookup for a request is local (and the requests topic, keyed the same way, is
co-partitioned too). A `change` record is folded into the user's state and the new state is
written back to the topic (see streams/preferences.py); a `state` record newer than the
stored one replaces it.

What `apply` does with the decision (agents/preference_policy.py):
    suppressed channel  → `suppressed` status (reason, details: cause, category), not sent
    quiet hours         → the request goes on with a `QuietHours` deferral: the dispatch
                          stage renders, enriches and redacts it like any other, then parks
                          its channel messages until the window ends (retry tiers, like a
                          deferral; past the limits) with a `deferred` status and details
    the rest            → the request goes on, narrowed to the channels left, with the user's
                          locale and time zone filled into the recipient when it had none
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass
from typing import Any

import faust

from agents.context import Pipeline
from agents.preference_policy import PreferenceDecision, decide, narrowed
from agents.route import channel_messages
from streams.app import raw_topic
from streams.preferences import fold
from streams.requests import now_ms
from streams.serde import serde

STAGE = "preferences"
log = logging.getLogger("tidings.preferences")

_REASONS = {
    "category_opt_out": "the user opted out of {category}",
    "channel_opt_out": "the user opted out of {channel}",
    "not_preferred": "{channel} is not among the user's preferred channels",
}


@dataclass(frozen=True, slots=True)
class QuietHours:
    """A request to park until the user's quiet hours end (`until_ms`, epoch ms).

    Parked by the dispatch stage after rendering, not here: a templated request has no
    text before it is rendered, and what is sent at the window's end must be what the
    template, enrichment and redaction made of it."""

    until_ms: int

    @property
    def until(self) -> str:
        return datetime.datetime.fromtimestamp(self.until_ms / 1000,
                                               tz=datetime.UTC).isoformat()

    @property
    def reason(self) -> str:
        return f"quiet hours until {self.until}"

    @property
    def details(self) -> dict[str, str]:
        return {"cause": "quiet_hours", "until": self.until}


class Preferences:
    def __init__(self, app: faust.App, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        settings = pipeline.settings
        self.required = frozenset(settings.preferences_required_categories)
        # Values are the user's state as a plain dict (JSON in the changelog), so a lookup
        # decodes nothing of ours; the topic carries the same state as Avro.
        self.table = app.Table("preferences", default=None, partitions=settings.partitions)
        self.topic = raw_topic(app, settings.topic("preferences"))
        self.serde = serde("Preferences")

    def lookup(self, tenant_id: str, user_id: str) -> dict[str, Any] | None:
        value = self.table.get(f"{tenant_id}/{user_id}")
        return None if value is None else dict(value)

    async def update(self, key: bytes | None, value: bytes | None) -> None:
        """One record of the preferences topic (the agent's body)."""
        name = (key or b"").decode()
        if value is None:
            self.table.pop(name, None)
            return
        record = self.serde.decode(value)
        stored = self.table.get(name)
        state = fold(None if stored is None else dict(stored), record, now_ms())
        if state is None:
            return
        self.table[name] = state
        if record["kind"] == "change":
            await self.topic.send(key=key, value=self.serde.encode(state))

    async def apply(self, key: bytes | None, request: dict[str, Any]
                    ) -> tuple[dict[str, Any], QuietHours | None] | None:
        """The request as the user's preferences let it go on, and its quiet-hours
        deferral if any; None when nothing is left to send (every channel suppressed)."""
        recipient = request["recipients"][0]
        preferences = self.lookup(request["tenant_id"], recipient["user_id"])
        if preferences is None:
            return request, None
        now = now_ms()
        decision = decide(request, preferences, now, self.required)
        await self._suppress(request, decision)
        if not decision.channels:
            return None
        request = narrowed(request, decision)
        if decision.defer_until_ms is not None and decision.defer_until_ms > now:
            return request, QuietHours(decision.defer_until_ms)
        return request, None

    async def _suppress(self, request: dict[str, Any], decision: PreferenceDecision) -> None:
        for channel, cause in decision.suppressed.items():
            reason = _REASONS[cause].format(channel=channel, category=request["category"])
            for message in channel_messages({**request, "channels": [channel]}):
                await self.pipeline.emit_status(
                    message, "suppressed", reason=reason,
                    details={"cause": cause, "category": request["category"]},
                )


def attach(app: faust.App, pipeline: Pipeline) -> Preferences:
    """The table and the agent that feeds it, for the worker that runs the dispatch stage."""
    preferences = Preferences(app, pipeline)

    @app.agent(preferences.topic, name="tidings.preferences")
    async def update(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            async with pipeline.guard(STAGE, event):
                await preferences.update(event.key, event.value)

    return preferences
