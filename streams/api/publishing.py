"""The API's two writes: the request (through streams/publisher.py) and its idempotency record.

`Publisher.publish` blocks until the broker acknowledges (acks=all); the API runs it on one
dedicated thread so the event loop keeps serving. One thread also keeps the publisher's
per-flush error list to one request at a time. With `linger_ms=0` a publish costs one
produce round trip, so a replica's POST rate is bounded by that round trip; more replicas
scale it (the API is stateless apart from its rebuildable store).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from streams.api.idempotency import record_key
from streams.publisher import Publisher, PublishError
from streams.serde import serde
from streams.settings import Settings

log = logging.getLogger("tidings.api")


class ApiPublisher:
    def __init__(self, settings: Settings) -> None:
        self._publisher = Publisher(settings, linger_ms=0)
        self._timeout_s = settings.api_publish_timeout_s
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="tidings-api-publish")
        self._idempotency_topic = settings.topic("api-idempotency")
        self._idempotency_serde = serde("IdempotencyRecord")
        self._producer = Producer({
            "bootstrap.servers": settings.kafka_bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "log_level": 4,
        })

    async def publish(self, request: dict[str, Any]) -> str:
        """Publish a normalized request; returns once the broker acknowledged it."""
        loop = asyncio.get_running_loop()
        # Carry the caller's context (a trace span, say) onto the publishing thread.
        context = contextvars.copy_context()
        return await loop.run_in_executor(self._executor, context.run, self._send, request)

    def _send(self, request: dict[str, Any]) -> str:
        notification_id = self._publisher.send(request)
        self._publisher.flush(self._timeout_s)  # raises PublishError when not acknowledged
        return notification_id

    def record_idempotency(self, record: dict[str, Any]) -> None:
        """Tell the other replicas; not awaited, since the request itself is already safe
        (a lost record only means another replica derives the same id on a retry)."""
        self._producer.produce(
            self._idempotency_topic,
            key=record_key(record["tenant_id"], record["idempotency_key"]).encode(),
            value=self._idempotency_serde.encode(record),
            on_delivery=self._on_delivery,
        )
        self._producer.poll(0)

    @staticmethod
    def _on_delivery(error: KafkaError | None, message: Message) -> None:
        if error is not None:
            log.warning("idempotency record %r not written: %s", message.key(), error.str())

    def close(self) -> None:
        self._producer.flush(5.0)
        self._executor.shutdown(wait=True)
        try:
            self._publisher.flush(5.0)
        except PublishError as exc:  # every POST already waited for its own ack
            log.warning("on close: %s", exc)
