"""The publisher other services use to hand Tidings a notification.

    with Publisher(load_settings()) as publisher:
        notification_id = publisher.publish({...})

Idempotent producer with acks=all: a request is validated and encoded before anything is
sent (a bad one raises `ValidationError`/`SerializationError` and nothing reaches Kafka), and
`publish` returns only once the broker has acknowledged the write.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from streams.errors import TidingsError
from streams.requests import normalize_request, request_key
from streams.serde import serde
from streams.settings import Settings
from streams.tracing import publish_span


class PublishError(TidingsError):
    """The broker did not acknowledge a request; it may or may not have been written."""


def producer_config(settings: Settings, *, linger_ms: float = 5) -> dict[str, Any]:
    """librdkafka settings of every producer: the publisher's, the CLI's and the worker's
    (streams/transport.py)."""
    return {
        "bootstrap.servers": settings.kafka_bootstrap,
        # Idempotence implies acks=all and at most 5 in-flight requests, so a retried batch is
        # never duplicated or reordered (KIP-98). Spelled out for the reader.
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": linger_ms,
        "compression.type": "lz4",
        # Faust's own key placement (aiokafka, like the Java client) is murmur2; librdkafka's
        # default is CRC32. The same key must land on the same partition whoever writes it:
        # per-user limits, dedup, preferences and the delivered ledger are partition-local.
        "partitioner": "murmur2_random",
    }


class Publisher:
    def __init__(self, settings: Settings, *, linger_ms: int = 5) -> None:
        self._topic = settings.topic("requests")
        self._serde = serde("NotificationRequest")
        self._producer = Producer(producer_config(settings, linger_ms=linger_ms))
        self._errors: list[str] = []

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._errors.append(f"{message.key()!r}: {error.str()}")

    def send(self, request: Mapping[str, Any]) -> str:
        """Validate, encode and enqueue one request; `flush` waits for the broker's ack."""
        record = normalize_request(request)
        value = self._serde.encode(record)
        # The notification's trace starts here; its context rides in the record's headers.
        with publish_span(record) as trace_headers:
            headers: list[tuple[str, str | bytes | None]] = list(trace_headers)
            self._producer.produce(
                self._topic, value=value, key=request_key(record), headers=headers,
                on_delivery=self._on_delivery,
            )
        self._producer.poll(0)
        return str(record["notification_id"])

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until every enqueued request is acknowledged; raise if any was not."""
        remaining = self._producer.flush(timeout_s)
        errors, self._errors = self._errors, []
        if remaining:
            errors.append(f"{remaining} request(s) still unacknowledged after {timeout_s}s")
        if errors:
            raise PublishError("; ".join(errors))

    def publish(self, request: Mapping[str, Any]) -> str:
        """Send one request and return its notification id once the broker acked it."""
        notification_id = self.send(request)
        self.flush()
        return notification_id

    def publish_many(self, requests: Iterable[Mapping[str, Any]]) -> list[str]:
        """Validate all first, then send all and wait for every ack."""
        records = [normalize_request(r) for r in requests]
        ids = [self.send(r) for r in records]
        self.flush()
        return ids

    def __enter__(self) -> Publisher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.flush()
        else:
            self._producer.flush(5.0)
