"""The rules stage: domain events in, NotificationRequests out.

Partitioning. Events are keyed `tenant/subject_id`: one subject's events stay in order, and a
busy tenant's events spread over every partition and worker. Rules are keyed `tenant/rule_id`
on a compacted topic, so the rules a worker needs (all of its tenants' rules) are on other
partitions than its events. Rather than re-key events by tenant (one partition, one worker
per tenant), every worker keeps a *global* view of the rules topic: a plain consumer with no
group reads every partition from the start and keeps each rule compiled in a `RuleBook`.
Rules are few and small, so the copy costs little; the topic itself is the table's durable
state (compacted, so it holds the latest version of each rule), and a restart rebuilds it.
Events wait until the view has read up to the end the topic had at start-up, so no event is
judged against half the rules.

Each request goes to the requests topic keyed `tenant/user` like any published request; the
intake stage validates and de-duplicates it (its idempotency key is derived from the event and
rule ids) and the rest of the pipeline treats it like any other.
"""

from __future__ import annotations

import asyncio
import logging

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition

from agents.context import Pipeline
from agents.rule_eval import RuleBook
from streams.app import raw_topic
from streams.errors import SerializationError, ValidationError
from streams.records import dead_letter_record
from streams.requests import now_ms, request_key
from streams.serde import serde

STAGE = "rules"
log = logging.getLogger("tidings.rules")


class RulesView:
    """Every rule of every tenant, read from the compacted rules topic into a `RuleBook`."""

    def __init__(self, pipeline: Pipeline, book: RuleBook | None = None) -> None:
        self.pipeline = pipeline
        self.book = book or RuleBook()
        self.ready = asyncio.Event()
        self._topic = pipeline.settings.topic("rules")
        self._serde = serde("Rule")

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """One record of the rules topic: a rule to (re)compile, or a tombstone."""
        name = (key or b"").decode(errors="replace")
        if value is None:
            self.book.remove(name)
            return
        self.book.put(self._serde.decode(value))

    async def run(self) -> None:
        settings = self.pipeline.settings
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                                    group_id=None, enable_auto_commit=False)
        await consumer.start()
        try:
            partitions = consumer.partitions_for_topic(self._topic)
            while partitions is None:
                # The consumer has no public call to refresh metadata for a topic it is not
                # subscribed to; its client's is what subscribe() uses.
                await consumer._client.force_metadata_update()
                partitions = consumer.partitions_for_topic(self._topic)
                if partitions is None:
                    log.warning("waiting for topic %s (run `tidings topics create`)",
                                self._topic)
                    await asyncio.sleep(1.0)
            assigned = [TopicPartition(self._topic, p) for p in sorted(partitions)]
            consumer.assign(assigned)
            await consumer.seek_to_beginning(*assigned)
            ends = {tp: end for tp, end in (await consumer.end_offsets(assigned)).items()}
            while True:
                if not self.ready.is_set() and all(
                        await asyncio.gather(*(self._at(consumer, tp, end)
                                               for tp, end in ends.items()))):
                    log.info("rules view ready: %d rules", len(self.book))
                    self.ready.set()
                batches = await consumer.getmany(timeout_ms=500)
                for tp, records in batches.items():
                    for record in records:
                        await self._load(tp, record.offset, record.key, record.value)
        finally:
            await consumer.stop()

    @staticmethod
    async def _at(consumer: AIOKafkaConsumer, tp: TopicPartition, end: int) -> bool:
        return int(await consumer.position(tp)) >= end

    async def _load(self, tp: TopicPartition, offset: int, key: bytes | None,
                    value: bytes | None) -> None:
        try:
            self.apply(key, value)
        except (SerializationError, ValidationError) as exc:
            # A rule that no worker can use: keep the previous version out too, and say so
            # where operators look. (The CLI and RulesClient refuse such a rule at the edge.)
            self.book.remove((key or b"").decode(errors="replace"))
            record = dead_letter_record(stage="rules.load", error=exc, topic=tp.topic,
                                        partition=tp.partition, offset=offset, key=key,
                                        value=value or b"")
            await self.pipeline.deadletter.send(
                key=key, value=serde("DeadLetter").encode(record))
            log.warning("rule %r refused: %s", key, exc)


def register(app: faust.App, pipeline: Pipeline) -> RulesView:
    view = RulesView(pipeline)
    events = raw_topic(app, pipeline.settings.topic("events"))
    event_serde = serde("DomainEvent")

    @app.task  # type: ignore[untyped-decorator]
    async def rules_view() -> None:
        while True:
            try:
                await view.run()
            except asyncio.CancelledError:
                raise
            # A broker error must not leave the worker without rules for good: log, start over
            # (re-reading the topic from the start rebuilds the same book).
            except Exception:  # noqa: BLE001
                log.exception("rules view failed; restarting it")
                await asyncio.sleep(1.0)

    @app.agent(events, name="tidings.rules")
    async def rules(stream: faust.StreamT[bytes]) -> None:
        await view.ready.wait()
        async for event in stream.events():
            async with pipeline.guard(STAGE, event):
                domain_event = event_serde.decode(event.value)
                outcome = view.book.evaluate(domain_event, now_ms())
                for failure in outcome.failures:
                    await pipeline.dead_letter(
                        STAGE, failure.error, event, reason=str(failure.error),
                        decoded={"tenant_id": domain_event["tenant_id"]},
                    )
                for rule_id, request in outcome.requests:
                    await pipeline.requests.send(
                        key=request_key(request),
                        value=pipeline.request_serde.encode(request),
                    )
                    await pipeline.emit_status(
                        request, "triggered", reason=f"rule {rule_id}",
                        details={"rule_id": rule_id, "event_id": domain_event["event_id"],
                                 "event_type": domain_event["event_type"]},
                    )

    return view
