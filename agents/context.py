"""What every stage shares: its topics, serdes, and the status and dead-letter outputs."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import faust

from agents.observe import Observer
from agents.retry import DUE_HEADER, tier_for_wait
from connectors.verdict import ConnectorError
from streams.app import App, raw_topic
from streams.errors import TidingsError
from streams.metrics.instruments import STAGE_DURATION
from streams.records import dead_letter_record, status_record
from streams.requests import now_ms
from streams.serde import serde
from streams.settings import Settings
from streams.topics import channel_topic, retry_topic
from streams.tracing import record_error, record_status, stage_span

log = logging.getLogger("tidings.agents")


class Pipeline:
    """Topic handles and the two outputs every stage writes to."""

    def __init__(self, app: App, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.requests = raw_topic(app, settings.topic("requests"))
        self.dispatch = raw_topic(app, settings.topic("dispatch"))
        self.status = raw_topic(app, settings.topic("status"))
        self.deadletter = raw_topic(app, settings.topic("deadletter"))
        self.channels = {c: raw_topic(app, channel_topic(settings, c))
                         for c in settings.enabled_channels}
        self.retries = {
            c: [raw_topic(app, retry_topic(settings, c, d)) for d in settings.retry_tiers_s]
            for c in settings.enabled_channels
        }
        self.request_serde = serde("NotificationRequest")
        self.message_serde = serde("ChannelMessage")
        self._status_serde = serde("DeliveryStatus")
        self._dead_letter_serde = serde("DeadLetter")
        self.observe = Observer(settings)
        self._producer = app.fast_producer

    async def send(self, topic: faust.TopicT, key: bytes | None, value: bytes,
                   headers: list[tuple[str, bytes]] | None = None) -> None:
        """Hand one record to the producer (partitioned by key, like Topic.send).

        This skips Faust's per-message wrappers around the same producer call (futures,
        callbacks, sensors), which cost more than the send itself on the hot path. Nothing is
        lost by it: Faust flushes the producer before it commits offsets, and the flush
        fails if a record was refused (streams/transport.py).
        """
        await self._producer.produce(topic.get_topic_name(), key, value, headers)

    async def emit_status(self, message: Mapping[str, Any], status: str, **fields: Any) -> None:
        record_status(message, status, fields.get("reason"))
        record = status_record(message, status, **fields)
        await self.send(
            self.status, record["notification_id"].encode(), self._status_serde.encode(record)
        )
        self.observe.status(record, message)

    async def park(self, key: bytes | None, message: dict[str, Any], due_ms: int) -> None:
        """Send `message` to the shortest retry tier of its channel that covers the wait
        until `due_ms`; the delay line hands it back to the channel topic when it is due."""
        tiers = self.settings.retry_tiers_s
        tier = tier_for_wait(max(0, due_ms - now_ms()) / 1000, tiers)
        message["not_before"] = due_ms
        await self.send(
            self.retries[message["channel"]][tier], key, self.message_serde.encode(message),
            headers=[(DUE_HEADER, str(due_ms).encode())],
        )

    async def dead_letter(
        self,
        stage: str,
        error: BaseException,
        event: faust.EventT[bytes],
        *,
        attempts: int = 0,
        reason: str | None = None,
        decoded: Mapping[str, Any] | None = None,
    ) -> None:
        message = event.message
        record_error(error, stage)
        record = dead_letter_record(
            stage=stage, error=error, topic=message.topic, partition=message.partition,
            offset=message.offset, key=message.key, value=message.value or b"",
            attempts=attempts, reason=reason, decoded=decoded,
        )
        await self.send(self.deadletter, message.key, self._dead_letter_serde.encode(record))
        if decoded and decoded.get("notification_id"):
            await self.emit_status(decoded, "dead_lettered", reason=f"{stage}: {record['message']}")
        self.observe.dead_letter(stage, error)
        log.warning(
            "dead-lettered %s:%s@%s at %s: %s: %s", message.topic, message.partition,
            message.offset, stage, record["error_class"], record["message"],
        )

    @functools.cache  # noqa: B019 - one Pipeline per worker, a handful of stages
    def _stage_duration(self, stage: str) -> Any:
        return STAGE_DURATION.labels(stage)

    @asynccontextmanager
    async def guard(self, stage: str, event: faust.EventT[bytes]) -> AsyncIterator[None]:
        """Dead-letter whatever one event raises, so one bad message never stops a stage.

        Our own errors (a record that does not decode or breaks a rule) are expected; any
        other exception is a bug of ours and is logged with its traceback, but the record
        still lands in the dead-letter topic and the stream moves past it.
        """
        started = time.perf_counter()
        with stage_span(stage, event):  # the event's span, its trace from its headers
            try:
                yield
            except (TidingsError, ConnectorError) as exc:
                await self.dead_letter(stage, exc, event)
            except Exception as exc:  # noqa: BLE001 - the last line of defence, see docstring
                log.exception("unexpected error at %s", stage)
                await self.dead_letter(stage, exc, event)
            finally:
                self._stage_duration(stage).observe(time.perf_counter() - started)
