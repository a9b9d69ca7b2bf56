"""Every worker's copy of the templates: it follows the compacted `tidings.templates` topic.

Rendering happens on the dispatch partitions (keyed `tenant/user`), so every worker needs
every tenant's templates, not a partition's share. A Faust `Table` is partitioned like its
source; Faust's `GlobalTable` is documented to loop in recovery with several workers
(faust/tables/globaltable.py). The topic itself is the durable, compacted store, so each
worker reads all of it with a group-less consumer into a `TemplateCatalog` and keeps
following it — no changelog of a changelog.

Read-your-writes: a request may arrive right after its template was published. A lookup
that misses first catches up to the topic's current end (`sync`) and only then says the
template does not exist.

The follower starts reading with the first lookup, not with the worker: a worker that never
meets a templated request does no work for templates (and its start-up is not slowed by a
consumer that it does not need).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.errors import TidingsError
from streams.serde import serde
from streams.templates import TemplateCatalog, TemplateNotFound

log = logging.getLogger("tidings.templates")


class TemplateFollower:
    def __init__(self, bootstrap: str, topic: str, *, sync_timeout_s: float = 30.0) -> None:
        self.catalog = TemplateCatalog()
        self._bootstrap, self._topic = bootstrap, topic
        self._sync_timeout_s = sync_timeout_s
        self._consumer: AIOKafkaConsumer | None = None
        self._positions: dict[TopicPartition, int] = {}
        self._advanced = asyncio.Condition()
        self._started = asyncio.Event()
        self._needed = asyncio.Event()
        self.skipped = 0  # events on the topic that did not decode

    async def run(self) -> None:
        await self._needed.wait()
        consumer = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, group_id=None,
                                    enable_auto_commit=False, auto_offset_reset="earliest")
        await consumer.start()
        self._consumer = consumer
        events = serde("TemplateEvent")
        try:
            partitions = await self._partitions(consumer)
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            for tp in partitions:
                self._positions[tp] = await consumer.position(tp)
            self._started.set()
            while True:
                batches = await consumer.getmany(timeout_ms=500)
                for tp, records in batches.items():
                    for record in records:
                        try:
                            self.catalog.apply(events.decode(record.value or b""))
                        except TidingsError as exc:
                            self.skipped += 1
                            log.warning("skipped template event at offset %s: %s",
                                        record.offset, exc)
                        self._positions[tp] = record.offset + 1
                async with self._advanced:
                    self._advanced.notify_all()
        finally:
            self._consumer = None
            await consumer.stop()

    async def _partitions(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        # A missing topic must not stop the worker (requests without templates still flow);
        # templated requests are dead-lettered as unreadable until it exists.
        attempt = 0
        while True:
            found = consumer.partitions_for_topic(self._topic)
            if found:
                return [TopicPartition(self._topic, p) for p in sorted(found)]
            if attempt % 60 == 59:
                log.error("topic %s is missing; run `tidings topics create`", self._topic)
            attempt += 1
            await consumer._client.force_metadata_update()  # noqa: SLF001 - no public refresh
            await asyncio.sleep(0.5)

    async def sync(self) -> None:
        """Wait until everything on the topic as of now has been applied."""
        self._needed.set()
        await asyncio.wait_for(self._started.wait(), self._sync_timeout_s)
        consumer = self._consumer
        if consumer is None:
            return
        ends = await consumer.end_offsets(list(self._positions))

        def caught_up() -> bool:
            return all(self._positions.get(tp, 0) >= end for tp, end in ends.items())

        async with self._advanced:
            await asyncio.wait_for(self._advanced.wait_for(caught_up), self._sync_timeout_s)

    async def resolve(self, tenant_id: str, template_id: str, version: int | None
                      ) -> dict[str, Any]:
        if not self._started.is_set() or not self.catalog.has(tenant_id, template_id, version):
            try:
                await self.sync()
            except TimeoutError as exc:
                raise TemplateNotFound(f"templates topic not readable in time ({exc!r})"
                                       ) from exc
        return self.catalog.resolve(tenant_id, template_id, version)
