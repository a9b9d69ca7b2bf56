"""Faust's Kafka transport, with two hot paths replaced (issue 6, `make bench`).

**Producing through librdkafka.** Faust's aiokafka producer builds every record, batch and
produce request in Python; with three records per request (a dedup changelog entry, a status,
a channel message) it was the largest cost of a worker. `Producer` hands records to
confluent-kafka (librdkafka), which partitions, batches, compresses and sends them in C on its
own threads. At-least-once is kept the way Faust keeps it: Faust flushes the producer before
it commits offsets (faust/transport/consumer.py, `_commit`), and `flush` here waits until
librdkafka has every record acknowledged, and raises if any was refused, so no offset is
committed past a record that did not reach the broker. Idempotence is on (no duplicates or
reordering from retries, KIP-98) and keys are placed with murmur2 like the Java client and
aiokafka, so the same key lands on the same partition whoever writes it. Faust's aiokafka
producer still runs for what librdkafka does not do for Faust: creating its changelog topics
and transactional sends.

**Delivering fetched records without four tasks each.** Faust's consumer hands each fetched
record to the streams inside `wait_first(callback, suspend_flow)`, so a rebalance can interrupt
a hand-off that is blocked on a full stream queue. That costs four tasks and an
`asyncio.wait` per record: half of a worker's time with nothing else to do. `Consumer` keeps
that path for the records that could block, and hands the rest over with a plain await: while
flow is not suspended, the conductor is not being re-indexed, the changelog buffer is below
its limit and every stream queue has room for another record (`_QueueRoom`), the hand-off
cannot block.

**Never committing past a record still being processed.** Faust 0.15.3 computes the offset to
commit from the run of acknowledged offsets, and lets one missing offset at its head pass as
a gap (faust/transport/consumer.py, `_new_offset`; faust-streaming issue 606). With
concurrent actors that missing offset is usually a record an actor is still working on, such
as a webhook send waiting for its answer: the commit skipped it, and a worker killed before it
finished lost it. `Consumer` withholds every acknowledged offset at or above the lowest record
a stream has taken and not yet acknowledged, so a commit never passes it.

**Losing nothing fetched while a rebalance resumes the partitions.** Records handed over
between Faust's resuming the stream partitions and its emptying the stream queues were
dropped, and a partition without a committed offset was never sought back over them
(`Consumer.perform_seek`, `Consumer.seek_to_committed`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, cast

from confluent_kafka import KafkaError, KafkaException, Message
from confluent_kafka import Producer as RdProducer
from faust.exceptions import ProducerSendError
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as driver
from faust.types import TP
from faust.types.transports import ConsumerT
from faust.types.tuples import RecordMetadata, ack_lock
from mode import ServiceT
from mode.utils.queues import FlowControlEvent

from streams import tracing

log = logging.getLogger("tidings.transport")

#: How long the poll thread blocks in librdkafka waiting for delivery reports.
_POLL_S = 0.05


class Producer(driver.Producer):
    """Faust's producer, sending through librdkafka (see the module docstring)."""

    _rd: RdProducer | None = None
    _poller: threading.Thread | None = None
    _polling = False

    def _rd_config(self) -> dict[str, Any]:
        config: dict[str, Any] = dict(cast(Any, self.app).producer_config)
        config["client.id"] = self.client_id
        return config

    async def on_start(self) -> None:
        await super().on_start()
        # Faust queues table changelog records here and pauses the streams whenever more
        # than 100 wait (with a warning each time). A stream that runs a few hundred events
        # between two turns of the drain task passes that at every turn; the buffer is
        # emptied on the next turn anyway, and flushed before every commit.
        self.buffer.max_messages = 10_000
        self._failed: list[str] = []
        # Delivery reports land here from whichever thread serves them (the poll thread, or
        # a flush); the poll thread hands them to the event loop.
        self._resolved: deque[tuple[asyncio.Future[RecordMetadata], Any]] = deque()
        self._rd_loop = asyncio.get_running_loop()
        self._rd = RdProducer(self._rd_config())
        self._polling = True
        self._poller = threading.Thread(target=self._poll, name="tidings-producer", daemon=True)
        self._poller.start()

    async def on_stop(self) -> None:
        if self._rd is not None:
            await self._flush_rd()
            self._polling = False
            if self._poller is not None:
                await asyncio.to_thread(self._poller.join)
            self._rd = None
        await super().on_stop()

    def _poll(self) -> None:
        """Serve librdkafka's delivery reports; futures resolve on the event loop, a batch
        of them per wake-up (one call_soon_threadsafe per poll, not per record)."""
        assert self._rd is not None
        resolved = self._resolved
        while self._polling:
            self._rd.poll(_POLL_S)
            if resolved:
                batch = [resolved.popleft() for _ in range(len(resolved))]
                self._rd_loop.call_soon_threadsafe(_resolve_all, batch)

    def _report_failure(self, error: KafkaError | None, message: Message) -> None:
        """The delivery report of a record sent without a future: only a failure matters."""
        if error is not None:
            self._reported(None, error, message)

    def _reported(self, future: asyncio.Future[RecordMetadata] | None,
                  error: KafkaError | None, message: Message) -> None:
        # Runs on the thread serving librdkafka's reports: the poll thread, or a flush.
        if error is not None:
            failure = f"{message.topic()}: {error.str()}"
            log.error("the broker refused a record for %s; the next commit fails", failure)
            self._failed.append(failure)
            if future is not None:
                self._resolved.append((future, ProducerSendError(failure)))
        elif future is not None:
            tp = TP(cast(str, message.topic()), cast(int, message.partition()))
            _, timestamp = message.timestamp()
            self._resolved.append((future, RecordMetadata(
                topic=tp.topic, partition=tp.partition, topic_partition=tp,
                offset=cast(int, message.offset()), timestamp=timestamp, timestamp_type=0,
            )))

    async def produce(self, topic: str, key: bytes | None, value: bytes | None,
                      headers: list[tuple[str, bytes]] | None = None,
                      partition: int | None = None, timestamp: float | None = None,
                      future: asyncio.Future[RecordMetadata] | None = None) -> None:
        """Hand one record to librdkafka; partitioned by key when `partition` is None.

        No future is made unless one is given: a stage's outputs need only the flush before
        the commit, and a failed record fails that flush.
        """
        rd = self._rd
        if rd is None:
            raise ProducerSendError("the producer is not running")
        if tracing.is_enabled():
            headers = tracing.traced_headers(topic, headers)
        while True:
            try:
                rd.produce(
                    topic, value, key,
                    partition=-1 if partition is None else partition,
                    timestamp=int(timestamp * 1000) if timestamp else 0,
                    headers=cast(Any, headers),
                    on_delivery=self._report_failure if future is None else
                    functools.partial(self._reported, future),
                )
                return
            except BufferError:
                # librdkafka's queue is full: the broker is slower than us. Wait for room.
                await asyncio.sleep(_POLL_S)
            except KafkaException as exc:  # refused before sending, e.g. a record too large
                raise ProducerSendError(f"{topic}: {exc.args[0].str()}") from None

    async def send(self, topic: str, key: bytes | None, value: bytes | None,
                   partition: int | None, timestamp: float | None, headers: Any,
                   *, transactional_id: str | None = None) -> Awaitable[RecordMetadata]:
        if transactional_id:  # exactly-once sends stay on Faust's transactional producers
            return await super().send(topic, key, value, partition, timestamp, headers,
                                      transactional_id=transactional_id)
        if isinstance(headers, dict):
            headers = list(headers.items())
        future: asyncio.Future[RecordMetadata] = asyncio.get_running_loop().create_future()
        await self.produce(topic, key, value, headers, partition, timestamp, future)
        return future

    async def flush(self) -> None:
        await super().flush()
        await self._flush_rd()

    async def _flush_rd(self) -> None:
        if self._rd is None:
            return
        left = await asyncio.to_thread(self._rd.flush, self.app.conf.producer_request_timeout)
        if left:
            raise ProducerSendError(f"{left} records not acknowledged by the broker in time")
        if self._failed:
            failed, self._failed = self._failed, []
            raise ProducerSendError(f"{len(failed)} records refused, first: {failed[0]}")


def _resolve_all(resolved: list[tuple[asyncio.Future[RecordMetadata], Any]]) -> None:
    for future, outcome in resolved:
        if future.done():
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


class _QueueRoom:
    """How many more records can be handed to the streams without any queue filling up.

    Each record adds at most one event to each stream queue, and only the fetcher adds to
    them, so after `n` hand-offs no queue has grown by more than `n`: a count of the
    smallest free space, taken when it runs out, is a safe bound.
    """

    def __init__(self, flow_control: FlowControlEvent) -> None:
        self._flow_control = flow_control
        self._left = 0

    def take(self) -> bool:
        if self._left <= 0:
            queues = self._flow_control._queues  # every stream queue (clear_on_resume)
            self._left = min(
                (q.maxsize - q.qsize() for q in queues if q.maxsize > 0), default=1 << 30
            )
            if self._left <= 0:
                return False
        self._left -= 1
        return True


class Consumer(driver.Consumer):
    """Faust's aiokafka consumer, handing fetched records over without a task per record.

    _hand_over_directly: the conductor's hand-off (faust/transport/conductor.py,
    `on_message`) waits only for flow control, for the changelog buffer to ebb, for its
    index lock and for room in a full stream queue. A record is handed over with a plain
    await when none of those can wait; otherwise through Faust's own `wait_first`, which a
    rebalance can interrupt.
    """

    #: `_lowest_unacked`, taken once for each commit.
    _processing_floor: dict[TP, int] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._not_seeking = asyncio.Event()
        self._not_seeking.set()

    async def _drain_messages(self, fetcher: ServiceT) -> None:
        deliver = cast(Callable[[Any], Awaitable[None]], self.callback)
        suspended = self.suspend_flow.is_set
        flowing = self.app.flow_control.is_active
        conductor_lock = self.app.topics._tp_to_callback_lock  # type: ignore[attr-defined]
        changelog = self.app.producer.buffer
        room = _QueueRoom(self.app.flow_control)
        read_offsets = self._read_offset
        acks_enabled_for = self.app.topics.acks_enabled_for
        stopped = cast(Any, self)._stopped.is_set
        fetcher_stopped = cast(Any, fetcher)._stopped.is_set
        try:
            while not (stopped() or fetcher_stopped()):
                self.diag.set_flag(CONSUMER_FETCHING)
                records = self.getmany(timeout=1.0)
                await asyncio.sleep(0)  # getmany can return at once, again and again
                if self.should_stop:
                    continue
                handed = 0
                async for tp, message in records:
                    if not self._not_seeking.is_set():
                        await self._not_seeking.wait()  # see perform_seek
                    handed += 1
                    if handed % 100 == 0:
                        await asyncio.sleep(0)  # let the streams run during a long batch
                    previous = read_offsets.get(tp)
                    if previous is not None and message.offset < previous:
                        continue  # handed over already (a seek went back)
                    if previous and message.offset - previous > 1 and \
                            acks_enabled_for(message.topic):
                        # Offsets skipped (compaction, transaction markers) count as acked.
                        await self._add_gap(tp, previous + 1, message.offset)
                    if self._commit_every is not None and self._n_acked >= self._commit_every:
                        self._n_acked = 0
                        await self.commit()
                    if (not suspended() and flowing() and not conductor_lock.locked()
                            and changelog.size <= changelog.max_messages and room.take()):
                        await deliver(message)  # cannot block, see _hand_over_directly
                    else:
                        await self.wait_first(deliver(message), self.suspend_flow.wait())
                    read_offsets[tp] = message.offset
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)

    async def perform_seek(self) -> None:
        """Seek the stream partitions to their committed offsets, handing nothing over
        meanwhile.

        Faust resumes the stream partitions, seeks them, then resumes flow control, which
        empties every stream queue (faust/tables/recovery.py, `_resume_streams`). A record
        fetched after the seek and handed over before that would be dropped with nothing to
        fetch it again, so hand-offs wait here; the records dropped were fetched before the
        seek, which goes back over them.
        """
        self._not_seeking.clear()
        try:
            await super().perform_seek()
        finally:
            self._not_seeking.set()

    async def seek_to_committed(self) -> Mapping[TP, int]:
        """aiokafka leaves a partition with no committed offset (or 0) where it is: after
        records were fetched and then dropped (see `perform_seek`), past them. Such stream
        partitions go back to their first record, as `auto_offset_reset=earliest` means."""
        committed: Mapping[TP, int] = await super().seek_to_committed()
        if self.app.conf.consumer_auto_offset_reset == "earliest":
            changelogs = self.app.tables.changelog_topics
            unset = [tp for tp, offset in committed.items()
                     if not offset and tp.topic not in changelogs]
            if unset:
                await self._thread.seek_to_beginning(*unset)
        return committed

    def _filter_committable_offsets(self, tps: Iterable[TP]) -> dict[TP, int]:
        self._processing_floor = self._lowest_unacked()
        try:
            return super()._filter_committable_offsets(tps)
        finally:
            self._processing_floor = {}

    def _lowest_unacked(self) -> dict[TP, int]:
        """The lowest offset, by partition, of the records streams took and have not acked."""
        with ack_lock:  # acks may come from other threads
            unacked = list(self._unacked_messages)
        floor: dict[TP, int] = {}
        for message in unacked:
            if not message.acked:
                lowest = floor.get(message.tp)
                if lowest is None or message.offset < lowest:
                    floor[message.tp] = message.offset
        return floor

    def _new_offset(self, tp: TP) -> int | None:
        """Faust's offset to commit, counting only the acks below the lowest unacked record.

        The acks above it are kept for a later commit, once that record is acked too.
        """
        floor = self._processing_floor.get(tp)
        acked: list[int] = self._acked[tp]
        if floor is None or not acked or max(acked) < floor:
            return super()._new_offset(tp)
        held = [offset for offset in acked if offset >= floor]
        acked[:] = [offset for offset in acked if offset < floor]
        try:
            return super()._new_offset(tp)
        finally:
            acked.extend(held)


class Transport(driver.Transport):
    Consumer = cast(type[ConsumerT], Consumer)
    Producer = Producer
