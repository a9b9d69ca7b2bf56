"""Reads `<prefix>.status` and `<prefix>.api-idempotency` into the replica's StatusStore.

Every replica reads *every* partition (no consumer group): any replica must answer a `GET`
for any notification. Partitions are assigned by hand and positions come from the store
itself (stored with the records, see store.py), so a restart resumes where it stopped and a
replica with an empty volume rebuilds from the topics' retention.

Readiness (`/ready`) needs: the broker answering, every partition of both topics assigned,
and the store caught up with the high watermarks seen at start-up — until then a `GET` could
miss a status that is already on the topic.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from streams.api.store import StatusStore
from streams.errors import SerializationError
from streams.serde import serde
from streams.settings import Settings

log = logging.getLogger("tidings.api")


@dataclass
class Readiness:
    assigned: int = 0
    expected: int = 0
    caught_up: bool = False
    error: str | None = "starting"
    skipped: int = field(default=0)  # records that did not decode (logged, never fatal)


class Materializer:
    def __init__(self, settings: Settings, store: StatusStore) -> None:
        self._settings = settings
        self._store = store
        self.status_topic = settings.topic("status")
        self.idempotency_topic = settings.topic("api-idempotency")
        self._status_serde = serde("DeliveryStatus")
        self._idempotency_serde = serde("IdempotencyRecord")
        self.readiness = Readiness()
        self._consumer: AIOKafkaConsumer | None = None
        self._targets: dict[TopicPartition, int] = {}

    async def run(self) -> None:
        """Consume until cancelled; broker trouble is retried, never fatal."""
        while True:
            try:
                await self._consume()
            except asyncio.CancelledError:
                raise
            except KafkaError as exc:
                self.readiness.error = f"{type(exc).__name__}: {exc}"
                log.warning("status materializer: %s; retrying", self.readiness.error)
                await asyncio.sleep(2.0)
            except Exception as exc:  # noqa: BLE001 - a bug of ours must not end the reader
                self.readiness.error = f"{type(exc).__name__}: {exc}"
                log.exception("status materializer failed; restarting it")
                await asyncio.sleep(2.0)
            finally:
                await self._stop_consumer()

    async def broker_reachable(self, timeout_s: float = 2.0) -> bool:
        consumer = self._consumer
        if consumer is None or not self._targets:
            return False
        try:
            await asyncio.wait_for(consumer.end_offsets(list(self._targets)), timeout_s)
        except (KafkaError, TimeoutError):
            return False
        return True

    async def _consume(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._settings.kafka_bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id=f"{self._settings.app_id}-api",
        )
        self._consumer = consumer
        await consumer.start()
        partitions = await self._partitions(consumer)
        consumer.assign(partitions)
        for tp in partitions:
            position = self._store.next_offset(tp.topic, tp.partition)
            if position is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, position)
        self._targets = await consumer.end_offsets(partitions)
        self.readiness.assigned = len(consumer.assignment())
        self.readiness.expected = len(partitions)
        self.readiness.error = None
        await self._check_caught_up(consumer)
        while True:
            batches = await consumer.getmany(timeout_ms=500, max_records=2000)
            if batches:
                self._apply(batches)
            await self._check_caught_up(consumer)

    async def _partitions(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        """Every partition of both topics, waiting (not ready) while a topic is missing."""
        while True:
            # `consumer.topics()` fetches the metadata but keeps it from
            # `partitions_for_topic`, which reads the client's cache; ask the client itself.
            cluster = await consumer._client.fetch_all_metadata()
            found = {topic: cluster.partitions_for_topic(topic)
                     for topic in (self.status_topic, self.idempotency_topic)}
            missing = [topic for topic, parts in found.items() if not parts]
            if not missing:
                return [TopicPartition(topic, p) for topic, parts in found.items()
                        for p in sorted(parts or ())]
            self.readiness.error = f"topics missing: {missing} (run `tidings topics create`)"
            await asyncio.sleep(2.0)

    def _apply(self, batches: dict[TopicPartition, list[Any]]) -> None:
        statuses, idempotency, offsets = [], [], []
        for tp, records in batches.items():
            for record in records:
                try:
                    if tp.topic == self.status_topic:
                        status = self._status_serde.decode(record.value or b"")
                        statuses.append((tp.partition, record.offset, status))
                    else:
                        idempotency.append(self._idempotency_serde.decode(record.value or b""))
                except SerializationError as exc:
                    # A reader cannot dead-letter on behalf of the writer; the record stays
                    # on its topic for `tidings watch` or a dead-letter tool to look at.
                    self.readiness.skipped += 1
                    log.warning("skipping %s:%s@%s: %s", tp.topic, tp.partition,
                                record.offset, exc)
            offsets.append((tp.topic, tp.partition, records[-1].offset + 1))
        self._store.apply(statuses=statuses, idempotency=idempotency, offsets=offsets)

    async def _check_caught_up(self, consumer: AIOKafkaConsumer) -> None:
        if self.readiness.caught_up:
            return
        # The position moves past a batch as getmany returns it, and the batch is in the
        # store before we get here; a partition emptied by retention starts at its end.
        for tp, end in self._targets.items():
            if await consumer.position(tp) < end:
                return
        self.readiness.caught_up = True
        log.info("status store caught up with %d partitions", len(self._targets))

    async def _stop_consumer(self) -> None:
        consumer, self._consumer = self._consumer, None
        self.readiness.assigned = 0
        if consumer is not None:
            await consumer.stop()
