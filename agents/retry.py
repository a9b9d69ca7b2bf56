"""Retry schedule and the delay line that holds messages until they are due.

Each tier is a topic with one fixed delay (`tidings.retry.<channel>.<tier>`). Because every
message in a tier waits the same time, a tier topic is ordered by due time: only its head
waits, and waiting means pausing that partition's fetch — the consumer keeps serving every
other partition and tier — then resuming it when the head is due. Nothing sleeps in a
handler. A due message goes back to its channel topic with the same key, so it lands on the
partition whose ledger knows its delivery id.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from streams.tracing import forward_span

DUE_HEADER = "tidings-due-ms"
TARGET_HEADER = "tidings-target"


def retry_tier_for(attempt: int, tiers_s: Sequence[float], retry_after_s: float | None = None
                   ) -> int | None:
    """The tier index for the retry after failed attempt number `attempt` (1-based).

    The n-th failure goes to tier n-1; a provider's Retry-After moves it up to the first tier
    at least that long. None means the retries are exhausted: dead-letter it.
    """
    index = max(0, attempt - 1)
    if index >= len(tiers_s):
        return None
    if retry_after_s is not None:
        while index < len(tiers_s) and tiers_s[index] < retry_after_s:
            index += 1
        if index >= len(tiers_s):
            return None
    return index


def tier_for_wait(wait_s: float, tiers_s: Sequence[float]) -> int:
    """The shortest tier that covers `wait_s` (the longest if none does)."""
    for index, delay in enumerate(tiers_s):
        if delay >= wait_s:
            return index
    return len(tiers_s) - 1


def due_ms(record: ConsumerRecord[bytes, bytes], tier_delay_s: float) -> int:
    """When a record in a tier topic is due: its header, bounded by append time + the delay.

    The bound keeps the tier ordered by due time even for a message that asked for a later
    time (a deferral past the tier's delay comes back out and is deferred again).
    """
    bound = record.timestamp + int(tier_delay_s * 1000)
    for key, value in record.headers or ():
        if key == DUE_HEADER:
            return min(int(value), int(bound))
    return int(bound)


class DelayLine:
    """Consumes every retry tier topic and forwards each message when it is due."""

    def __init__(
        self,
        bootstrap: str,
        group_id: str,
        tiers: dict[str, tuple[str, float]],  # tier topic -> (channel topic, delay seconds)
    ) -> None:
        self._tiers = tiers
        self._consumer = AIOKafkaConsumer(
            *tiers,
            bootstrap_servers=bootstrap,
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=500,
        )
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5
        )
        self._resume_handles: dict[TopicPartition, asyncio.TimerHandle] = {}
        self.forwarded = 0

    async def run(self) -> None:
        await self._producer.start()
        await self._consumer.start()
        try:
            while True:
                batches = await self._consumer.getmany(timeout_ms=500)
                commits: dict[TopicPartition, int] = {}
                sends = []
                now = time.time_ns() // 1_000_000
                for tp, records in batches.items():
                    target, delay_s = self._tiers[tp.topic]
                    for record in records:
                        due = due_ms(record, delay_s)
                        if due > now:
                            self._hold(tp, record.offset, due - now)
                            break
                        # Re-published in the parked message's trace (a `delay_line` span).
                        with forward_span(record.headers, drop=(DUE_HEADER,)) as headers:
                            sends.append(await self._producer.send(
                                target, value=record.value, key=record.key, headers=headers,
                            ))
                        commits[tp] = record.offset + 1
                if sends:
                    await asyncio.gather(*sends)
                    self.forwarded += len(sends)
                if commits:
                    await self._consumer.commit(commits)
        finally:
            for handle in self._resume_handles.values():
                handle.cancel()
            await self._consumer.stop()
            await self._producer.stop()

    def _hold(self, tp: TopicPartition, offset: int, wait_ms: int) -> None:
        """Pause `tp` at `offset` (its head) and resume it when the head is due."""
        self._consumer.pause(tp)
        self._consumer.seek(tp, offset)
        previous = self._resume_handles.pop(tp, None)
        if previous is not None:
            previous.cancel()
        loop = asyncio.get_running_loop()
        self._resume_handles[tp] = loop.call_later(wait_ms / 1000, self._resume, tp)

    def _resume(self, tp: TopicPartition) -> None:
        self._resume_handles.pop(tp, None)
        if tp in self._consumer.assignment():
            self._consumer.resume(tp)
