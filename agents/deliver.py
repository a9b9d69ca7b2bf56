"""Deliver: one agent per enabled channel, sending through that channel's connector.

Each delivery is checked against the delivered ledger first (delivery id → when it was
delivered), so a replay, a retry that raced a late success, or reprocessing after a crash
never sends the same delivery twice. The verdict decides the rest:

    delivered        ledger entry + `delivered` status
    retry            next retry tier (or dead letter when the tiers are exhausted)
    address_invalid  dead letter + `endpoint_disabled` status (webhook 410 Gone)
    rejected         dead letter + `dead_lettered` status
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import faust
import httpx

from agents.context import Pipeline
from agents.retry import DUE_HEADER, retry_tier_for, tier_for_wait
from connectors import webhook
from connectors.verdict import ConnectorError, Outcome, Verdict
from streams.errors import ConfigError, TidingsError
from streams.requests import now_ms
from streams.settings import Settings

STAGE = "deliver"
# Deliveries due within this many ms are sent now rather than parked again.
_DUE_SLACK_MS = 50

Sender = Callable[[Mapping[str, Any]], Awaitable[Verdict]]


class RetriesExhausted(TidingsError):
    """Every retry tier was tried; the last verdict's reason says why the sends failed."""


class Rejected(TidingsError):
    """The provider refused the message for good."""


class AddressInvalid(TidingsError):
    """The address no longer takes messages (a webhook endpoint answering 410 Gone)."""


def _webhook_sender(settings: Settings, client: httpx.AsyncClient) -> Sender:
    config = webhook.WebhookConfig(settings.webhook_key(), timeout_s=settings.webhook_timeout_s)

    async def send(message: Mapping[str, Any]) -> Verdict:
        return await webhook.deliver(client, message, config)

    return send


# Channel → factory of its sender. Explicit, so what is enabled is what is listed here.
SENDERS: dict[str, Callable[[Settings, httpx.AsyncClient], Sender]] = {
    "webhook": _webhook_sender,
}


def check_channels(settings: Settings) -> None:
    missing = sorted(set(settings.enabled_channels) - set(SENDERS))
    if missing:
        raise ConfigError(f"no connector for channels {missing} yet; enable only {sorted(SENDERS)}")


class _SharedClient:
    """One HTTP client per worker, shared by every concurrent actor of every channel."""

    def __init__(self, concurrency: int) -> None:
        self._limits = httpx.Limits(max_connections=concurrency * 2,
                                    max_keepalive_connections=concurrency)
        self._client: httpx.AsyncClient | None = None
        self._users = 0

    def acquire(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(limits=self._limits, follow_redirects=False)
        self._users += 1
        return self._client

    async def release(self) -> None:
        self._users -= 1
        if self._users == 0 and self._client is not None:
            client, self._client = self._client, None
            await client.aclose()


def register(app: faust.App, pipeline: Pipeline) -> None:
    settings = pipeline.settings
    check_channels(settings)
    if "webhook" in settings.enabled_channels:
        settings.webhook_key()  # a missing secret stops the worker at start, not per message
    ledger = app.Table("delivered", default=None, partitions=settings.partitions)
    shared = _SharedClient(settings.delivery_concurrency)
    tiers = settings.retry_tiers_s

    async def park(
        event: faust.EventT[bytes], message: dict[str, Any], tier: int, due: int
    ) -> None:
        message["not_before"] = due
        await pipeline.retries[message["channel"]][tier].send(
            key=event.key, value=pipeline.message_serde.encode(message),
            headers=[(DUE_HEADER, str(due).encode())],
        )

    async def handle(event: faust.EventT[bytes], send: Sender) -> None:
        message = pipeline.message_serde.decode(event.value)
        delivery_id = message["delivery_id"]
        if ledger.get(delivery_id) is not None:
            await pipeline.emit_status(message, "duplicate", reason="already delivered")
            return
        now = now_ms()
        wait_ms = message["not_before"] - now
        if wait_ms > _DUE_SLACK_MS:
            await park(event, message, tier_for_wait(wait_ms / 1000, tiers), message["not_before"])
            return
        message["attempt"] += 1
        verdict = await send(message)
        done = now_ms()
        if verdict.outcome is Outcome.DELIVERED:
            ledger[delivery_id] = done
            await pipeline.emit_status(
                message, "delivered", status_code=verdict.status_code,
                latency_ms=max(0, done - message["created_at"]), at_ms=done,
            )
        elif verdict.outcome is Outcome.RETRY:
            tier = retry_tier_for(message["attempt"], tiers, verdict.retry_after)
            if tier is None:
                await pipeline.dead_letter(
                    STAGE, RetriesExhausted(verdict.reason), event,
                    attempts=message["attempt"], decoded=message,
                )
                return
            delay_ms = int(max(tiers[tier], verdict.retry_after or 0) * 1000)
            message["last_error"] = verdict.reason
            await park(event, message, tier, done + delay_ms)
            await pipeline.emit_status(message, "retrying", reason=verdict.reason,
                                       status_code=verdict.status_code)
        elif verdict.outcome is Outcome.ADDRESS_INVALID:
            await pipeline.emit_status(message, "endpoint_disabled", reason=verdict.reason,
                                       status_code=verdict.status_code)
            await pipeline.dead_letter(STAGE, AddressInvalid(verdict.reason), event,
                                       attempts=message["attempt"], decoded=message)
        else:
            await pipeline.dead_letter(STAGE, Rejected(verdict.reason), event,
                                       attempts=message["attempt"], decoded=message)

    for channel, topic in pipeline.channels.items():
        factory = SENDERS[channel]

        async def deliver(stream: faust.StreamT[bytes], factory: Any = factory) -> None:
            send = factory(settings, shared.acquire())
            try:
                async for event in stream.events():
                    async with pipeline.guard(STAGE, event):
                        try:
                            await handle(event, send)
                        except ConnectorError as exc:
                            message = pipeline.message_serde.decode(event.value)
                            await pipeline.dead_letter(STAGE, exc, event, decoded=message,
                                                       attempts=message["attempt"])
            finally:
                await shared.release()

        app.agent(topic, name=f"tidings.deliver.{channel}",
                  concurrency=settings.delivery_concurrency)(deliver)
