"""The Python API for a tenant's templates, over the compacted `tidings.templates` topic.

    with TemplateStore(load_settings()) as store:
        version = store.publish("acme", document)      # a new immutable version
        store.activate("acme", "welcome", version)     # what requests without a version get
        store.show("acme", "welcome")                  # the active version's record

Reads replay the topic from its start into a `TemplateCatalog` (the topic is small and
compacted); writes are acknowledged by every in-sync replica before they return.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from confluent_kafka import TopicPartition as KafkaPartition

from streams.errors import TidingsError, ValidationError
from streams.requests import now_ms
from streams.serde import serde
from streams.settings import Settings
from streams.templates import (
    TemplateCatalog,
    TemplateNotFound,
    activate_record,
    active_key,
    check_ids,
    version_key,
    version_record,
)
from streams.topic_reader import watermarks


class TemplateStoreError(TidingsError):
    """The broker did not take or give back the templates topic."""


def read_catalog(settings: Settings, timeout_s: float = 30.0) -> TemplateCatalog:
    """The catalog as of now: every event on the templates topic up to its high watermark."""
    topic = settings.topic("templates")
    events = serde("TemplateEvent")
    catalog = TemplateCatalog()
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap,
                         "group.id": "tidings-templates-reader", "enable.auto.commit": False,
                         "log_level": 4})
    try:
        # A topic created a moment ago may not be in the metadata yet: look a few times.
        deadline = time.monotonic() + min(timeout_s, 10.0)
        while True:
            metadata = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
            if metadata is not None and metadata.error is None and metadata.partitions:
                break
            if time.monotonic() > deadline:
                raise TemplateStoreError(
                    f"topic {topic} is missing; run `tidings topics create`")
            time.sleep(0.2)
        ends = {}
        for partition in metadata.partitions:
            low, high = watermarks(consumer, KafkaPartition(topic, partition), timeout_s)
            if high > low:
                ends[partition] = high
        consumer.assign([KafkaPartition(topic, p, 0) for p in ends])
        positions = dict.fromkeys(ends, -1)
        while any(positions[p] < ends[p] - 1 for p in ends):
            message = consumer.poll(timeout_s)
            if message is None:
                raise TemplateStoreError(f"timed out reading {topic}")
            if message.error():
                raise TemplateStoreError(f"reading {topic}: {message.error()}")
            positions[message.partition() or 0] = message.offset() or 0
            value = message.value()
            if value:
                catalog.apply(events.decode(value))
    except KafkaException as exc:
        raise TemplateStoreError(f"reading {topic}: {exc}") from exc
    finally:
        consumer.close()
    return catalog


class TemplateStore:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._topic = settings.topic("templates")
        self._serde = serde("TemplateEvent")
        self._producer = Producer({"bootstrap.servers": settings.kafka_bootstrap,
                                   "enable.idempotence": True, "acks": "all",
                                   "log_level": 4})
        self._errors: list[str] = []

    def catalog(self) -> TemplateCatalog:
        return read_catalog(self._settings)

    def publish(self, tenant_id: str, document: Mapping[str, Any], *, author: str | None = None,
                activate: bool = False) -> int:
        """Publish `document` as the template's next version (or its `version`, if that
        number is free); return the version. With `activate`, also make it active."""
        if not isinstance(document, Mapping):
            raise ValidationError("a template is a JSON/YAML object")
        check_ids(tenant_id, document.get("template_id"))
        template_id = document["template_id"]
        catalog = self.catalog()
        wanted = document.get("version")
        if wanted is None:
            version = catalog.latest(tenant_id, template_id) + 1
        elif isinstance(wanted, int) and not isinstance(wanted, bool) and wanted >= 1:
            if catalog.has(tenant_id, template_id, wanted):
                raise ValidationError(f"{template_id} version {wanted} is already published; "
                                      "versions are immutable, publish a new one",
                                      field="version")
            version = wanted
        else:
            raise ValidationError("version must be a positive integer", field="version")
        now = now_ms()
        record = version_record(tenant_id, document, version=version, occurred_at=now,
                                author=author)
        self._send(version_key(tenant_id, template_id, version, record), record)
        if activate:
            self._send(active_key(tenant_id, template_id),
                       activate_record(tenant_id, template_id, version, occurred_at=now,
                                       author=author))
        self._flush()
        return version

    def activate(self, tenant_id: str, template_id: str, version: int, *,
                 author: str | None = None) -> None:
        check_ids(tenant_id, template_id)
        if not self.catalog().has(tenant_id, template_id, version):
            raise TemplateNotFound(f"template {template_id!r} of {tenant_id!r} has no "
                                   f"version {version}")
        self._send(active_key(tenant_id, template_id),
                   activate_record(tenant_id, template_id, version, occurred_at=now_ms(),
                                   author=author))
        self._flush()

    def list(self, tenant_id: str) -> list[dict[str, Any]]:
        return self.catalog().listing(tenant_id)

    def show(self, tenant_id: str, template_id: str, version: int | None = None
             ) -> dict[str, Any]:
        check_ids(tenant_id, template_id)
        return self.catalog().resolve(tenant_id, template_id, version)

    def _send(self, key: bytes, record: Mapping[str, Any]) -> None:
        self._producer.produce(self._topic, key=key, value=self._serde.encode(record),
                               on_delivery=self._on_delivery)

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._errors.append(f"{message.key()!r}: {error.str()}")

    def _flush(self, timeout_s: float = 30.0) -> None:
        remaining = self._producer.flush(timeout_s)
        errors, self._errors = self._errors, []
        if remaining:
            errors.append(f"{remaining} event(s) unacknowledged after {timeout_s}s")
        if errors:
            raise TemplateStoreError("; ".join(errors))

    def __enter__(self) -> TemplateStore:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._producer.flush(5.0)
