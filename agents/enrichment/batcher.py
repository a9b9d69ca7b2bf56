"""A micro-batcher: callers await one result each; the work runs in batches off the loop.

Model calls are CPU-bound and take milliseconds, so running them on the event loop would
stall every agent of the worker (deliveries, commits, heartbeats). Here they run in one
executor thread, a batch at a time: while a batch runs, new requests queue, and the next
batch takes all of them (up to `max_batch`). Under light load a request goes at once (no
added latency); under load batches grow by themselves — the batching of Nagle's algorithm
(RFC 896) without its timer. `wait_s` adds a timer anyway, to gather more requests per batch
when many callers submit at the same moment.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger("tidings.enrich")


class MicroBatcher(Generic[T, R]):
    def __init__(
        self,
        work: Callable[[Sequence[T]], list[R]],
        *,
        max_batch: int = 32,
        wait_s: float = 0.0,
        executor: Executor | None = None,
    ) -> None:
        self._work = work
        self._max_batch = max_batch
        self._wait_s = wait_s
        # One thread: the models are loaded once and used by one batch at a time.
        self._executor = executor or ThreadPoolExecutor(1, thread_name_prefix="tidings-enrich")
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._runner: asyncio.Task[None] | None = None
        self.batches = 0
        self.items = 0

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append((item, future))
        if self._runner is None or self._runner.done():
            self._runner = loop.create_task(self._drain())
        return await future

    async def run_in_executor(self, items: Sequence[T]) -> list[R]:
        """Run a whole batch the caller already has, in the same thread as the others."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._work, items)

    async def _drain(self) -> None:
        if self._wait_s:
            await asyncio.sleep(self._wait_s)
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            self.batches += 1
            self.items += len(batch)
            await self._run(batch)

    async def _run(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self.run_in_executor([item for item, _ in batch])
        except Exception as exc:  # noqa: BLE001 - isolated below, then handed to each caller
            if len(batch) > 1:
                # One bad input must not fail its neighbours: retry them one by one, so only
                # the culprit's caller sees the error (and dead-letters its message).
                for single in batch:
                    await self._run([single])
                return
            results = []
            error: BaseException | None = exc
        else:
            error = None
        for index, (_, future) in enumerate(batch):
            if future.done():  # the caller was cancelled
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(results[index])

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
