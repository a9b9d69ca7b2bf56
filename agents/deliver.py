"""Deliver: one agent per enabled channel, sending through that channel's connector.

Before a send: the delivered ledger (delivery id → when) stops a replay, a retry that raced a
late success, or reprocessing after a crash from sending twice; the suppression table
(tenant + channel + address) stops sends to an address a provider already called dead; the
endpoint's circuit breaker keeps an unwell provider from being hammered. The verdict decides
the rest:

    delivered        ledger entry + `delivered` status
    retry            next retry tier of this channel (dead letter when the tiers run out)
    address_invalid  suppression entry + `address_invalid` status, then failover or dead letter
    rejected         failover to the next fallback channel, or dead letter

Ledger and suppression tables are written on the partition of the channel topic, which has
the same key (`tenant/user`) and partition count as the dispatch topic.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import faust
import httpx
from httpx_aiohttp import AiohttpTransport

from agents.breaker import CircuitBreaker
from agents.channels import CHANNELS, Channel, check_channels
from agents.context import Pipeline
from agents.observe import BREAKERS
from agents.retry import retry_tier_for
from agents.route import failover_message
from connectors.verdict import ConnectorError, Outcome, Verdict
from streams.errors import TidingsError
from streams.requests import CHANNEL_ADDRESS, now_ms
from streams.settings import Settings
from streams.tracing import annotate, delivery_attempt

STAGE = "deliver"
# Deliveries due within this many ms are sent now rather than parked again.
_DUE_SLACK_MS = 50


class RetriesExhausted(TidingsError):
    """Every retry tier was tried; the last verdict's reason says why the sends failed."""


class Rejected(TidingsError):
    """The provider refused the message for good."""


class AddressInvalid(TidingsError):
    """The address no longer takes messages (410 Gone, an unregistered token, ...)."""


def suppression_key(message: Mapping[str, Any]) -> str:
    channel = message["channel"]
    address = message["recipient"].get(CHANNEL_ADDRESS[channel])
    if isinstance(address, list):  # push: one token per message
        address = address[0] if address else ""
    return f"{message['tenant_id']}/{channel}/{address}"


class _Connectors:
    """One connector per channel and one HTTP client per worker, shared by every concurrent
    actor: connection pools, OAuth and provider tokens are per worker, not per actor."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        concurrency = settings.delivery_concurrency
        self._limits = httpx.Limits(max_connections=concurrency * 2,
                                    max_keepalive_connections=concurrency)
        self._client: httpx.AsyncClient | None = None
        self._channels: dict[str, Channel] = {}
        self._users = 0

    def acquire(self, name: str) -> Channel:
        if self._client is None:
            # httpx's API over aiohttp's connection pool: measured ~10x the requests/s of
            # httpcore's pool at 64 in flight on this machine (tests/bench).
            self._client = httpx.AsyncClient(
                transport=AiohttpTransport(limits=self._limits, trust_env=False),
                limits=self._limits, follow_redirects=False,
            )
        if name not in self._channels:
            self._channels[name] = CHANNELS[name].build(self._settings, self._client)
        self._users += 1
        return self._channels[name]

    async def release(self) -> None:
        self._users -= 1
        if self._users == 0 and self._client is not None:
            channels, self._channels = self._channels, {}
            for channel in channels.values():
                await channel.aclose()
            client, self._client = self._client, None
            await client.aclose()


class Deliverer:
    """The decisions of one delivery attempt, over the tables and topics of the pipeline."""

    def __init__(self, app: faust.App, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.settings = settings = pipeline.settings
        self.ledger = app.Table("delivered", default=None, partitions=settings.partitions)
        self.suppressed = app.Table("suppressed", default=None, partitions=settings.partitions)
        self.breakers: dict[str, CircuitBreaker] = {}
        # Attempts under way, by delivery id. The stage runs `delivery_concurrency` attempts
        # at once, so two copies of one delivery (a replay or a redrive racing the original)
        # could both pass the ledger check before either is recorded; the second waits here
        # for the first to finish and then finds it in the ledger.
        self._in_flight: dict[str, asyncio.Event] = {}

    def breaker(self, endpoint: str) -> CircuitBreaker:
        breaker = self.breakers.get(endpoint)
        if breaker is None:
            s = self.settings
            breaker = self.breakers[endpoint] = CircuitBreaker(
                failure_threshold=s.breaker_failure_threshold, window_s=s.breaker_window_s,
                min_calls=s.breaker_min_calls, cooldown_s=s.breaker_cooldown_s,
            )
        return breaker

    async def handle(self, event: faust.EventT[bytes], channel: Channel, channel_name: str
                     ) -> None:
        pipeline = self.pipeline
        message = pipeline.message_serde.decode(event.value)
        annotate(message)
        delivery_id = message["delivery_id"]
        while (under_way := self._in_flight.get(delivery_id)) is not None:
            await under_way.wait()
        self._in_flight[delivery_id] = done = asyncio.Event()
        try:
            await self._attempt(event, message, channel, channel_name)
        finally:
            del self._in_flight[delivery_id]
            done.set()

    async def _attempt(self, event: faust.EventT[bytes], message: dict[str, Any],
                       channel: Channel, channel_name: str) -> None:
        pipeline = self.pipeline
        delivery_id = message["delivery_id"]
        if self.ledger.get(delivery_id) is not None:
            await pipeline.emit_status(message, "duplicate", reason="already delivered")
            return
        now = now_ms()
        if message["not_before"] - now > _DUE_SLACK_MS:
            await self.pipeline.park(event.key, message, message["not_before"])
            return
        if self.suppressed.get(suppression_key(message)) is not None:
            await pipeline.emit_status(message, "suppressed", reason="address is suppressed")
            await self.give_up(event, message, AddressInvalid("address is suppressed"))
            return
        breaker = self.breaker(CHANNELS[channel_name].endpoint(message))
        if not breaker.allows():
            await self.breaker_open(event, message, breaker, now)
            return

        message["attempt"] += 1
        verdict = await delivery_attempt(message, channel.send)
        breaker.record(failed=verdict.outcome is Outcome.RETRY)
        await self.act_on(event, message, verdict)

    async def breaker_open(self, event: faust.EventT[bytes], message: dict[str, Any],
                           breaker: CircuitBreaker, now: int) -> None:
        reason = f"circuit open for {CHANNELS[message['channel']].endpoint(message)}"
        waited_s = (now - message["created_at"]) / 1000
        if message.get("fallback_channels") and waited_s > self.settings.failover_after_s:
            await self.give_up(event, message, Rejected(f"{reason} for {waited_s:.0f}s"))
            return
        due = now + int(max(breaker.retry_in_s(), 1) * 1000)
        await self.pipeline.park(event.key, message, due)
        await self.pipeline.emit_status(message, "retrying", reason=reason)

    async def act_on(self, event: faust.EventT[bytes], message: dict[str, Any],
                     verdict: Verdict) -> None:
        pipeline, done = self.pipeline, now_ms()
        if verdict.outcome is Outcome.DELIVERED:
            self.ledger[message["delivery_id"]] = done
            await pipeline.emit_status(
                message, "delivered", status_code=verdict.status_code,
                latency_ms=max(0, done - message["created_at"]), at_ms=done,
            )
        elif verdict.outcome is Outcome.RETRY:
            tiers = self.settings.retry_tiers_s
            tier = retry_tier_for(message["attempt"], tiers, verdict.retry_after)
            if tier is None:
                await pipeline.dead_letter(
                    STAGE, RetriesExhausted(verdict.reason), event,
                    attempts=message["attempt"], decoded=message,
                )
                return
            message["last_error"] = verdict.reason
            delay_s = max(tiers[tier], verdict.retry_after or 0)
            await self.pipeline.park(event.key, message, done + int(delay_s * 1000))
            await pipeline.emit_status(message, "retrying", reason=verdict.reason,
                                       status_code=verdict.status_code)
        elif verdict.outcome is Outcome.ADDRESS_INVALID:
            self.suppressed[suppression_key(message)] = done
            status = "endpoint_disabled" if message["channel"] == "webhook" else "address_invalid"
            await pipeline.emit_status(message, status, reason=verdict.reason,
                                       status_code=verdict.status_code)
            await self.give_up(event, message, AddressInvalid(verdict.reason))
        else:
            await self.give_up(event, message, Rejected(verdict.reason))

    async def give_up(self, event: faust.EventT[bytes], message: dict[str, Any],
                      error: TidingsError) -> None:
        """This channel ended without a delivery: the next fallback channel, or a dead letter."""
        following = failover_message(message)
        if following is not None and following["channel"] in self.pipeline.channels:
            await self.pipeline.send(
                self.pipeline.channels[following["channel"]], event.key,
                self.pipeline.message_serde.encode(following),
            )
            await self.pipeline.emit_status(
                message, "failover",
                reason=f"{message['channel']} → {following['channel']}: {error}",
            )
            return
        await self.pipeline.dead_letter(STAGE, error, event, attempts=message["attempt"],
                                        decoded=message)


def register(app: faust.App, pipeline: Pipeline) -> None:
    settings = pipeline.settings
    check_channels(settings)
    deliverer = Deliverer(app, pipeline)
    BREAKERS.track(deliverer.breakers, settings.metrics_breaker_limit)
    connectors = _Connectors(settings)

    for channel_name, topic in pipeline.channels.items():

        async def deliver(stream: faust.StreamT[bytes], channel_name: str = channel_name
                          ) -> None:
            channel = connectors.acquire(channel_name)
            try:
                async for event in stream.events():
                    async with pipeline.guard(STAGE, event):
                        try:
                            await deliverer.handle(event, channel, channel_name)
                        except ConnectorError as exc:
                            # The message can never be sent as it is (no valid address, too
                            # large, header injection): this channel is done with it.
                            message = pipeline.message_serde.decode(event.value)
                            await deliverer.give_up(event, message, Rejected(str(exc)))
            finally:
                await connectors.release()

        # Each channel is its own agent (its own consumer of its topic and its own retry
        # tiers), so a slow provider never delays another channel's deliveries.
        app.agent(topic, name=f"tidings.deliver.{channel_name}",
                  concurrency=settings.delivery_concurrency)(deliver)
