"""The micro-batcher: off-loop batches, batching under load, one bad input isolated."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from agents.enrichment.batcher import MicroBatcher


class Recorder:
    def __init__(self, gate: threading.Event | None = None) -> None:
        self.batches: list[list[str]] = []
        self.threads: set[str] = set()
        self.gate = gate

    def __call__(self, items: Sequence[str]) -> list[str]:
        if self.gate is not None:
            self.gate.wait(5)
        self.threads.add(threading.current_thread().name)
        if "bad" in items:
            raise ValueError("bad input")
        self.batches.append(list(items))
        return [item.upper() for item in items]


async def test_each_caller_gets_its_own_result_off_the_event_loop() -> None:
    work = Recorder()
    batcher = MicroBatcher(work)
    assert await batcher.submit("a") == "A"
    assert work.threads and threading.current_thread().name not in work.threads
    batcher.close()


async def test_requests_queued_while_a_batch_runs_go_together_in_the_next() -> None:
    gate = threading.Event()
    work = Recorder(gate)
    batcher = MicroBatcher(work, max_batch=4)
    first = asyncio.ensure_future(batcher.submit("first"))
    await asyncio.sleep(0.05)  # the first batch is now running (held by the gate)
    rest = [asyncio.ensure_future(batcher.submit(str(i))) for i in range(6)]
    await asyncio.sleep(0.05)
    gate.set()
    assert await first == "FIRST"
    assert await asyncio.gather(*rest) == [str(i) for i in range(6)]
    assert work.batches == [["first"], ["0", "1", "2", "3"], ["4", "5"]]
    assert (batcher.batches, batcher.items) == (3, 7)
    batcher.close()


async def test_a_wait_gathers_simultaneous_requests() -> None:
    work = Recorder()
    batcher = MicroBatcher(work, max_batch=32, wait_s=0.01)
    results = await asyncio.gather(*(batcher.submit(str(i)) for i in range(10)))
    assert results == [str(i) for i in range(10)]
    assert work.batches == [[str(i) for i in range(10)]]
    batcher.close()


async def test_one_bad_input_fails_only_its_own_caller() -> None:
    work = Recorder()
    batcher = MicroBatcher(work, wait_s=0.01)
    good = asyncio.ensure_future(batcher.submit("good"))
    bad = asyncio.ensure_future(batcher.submit("bad"))
    other = asyncio.ensure_future(batcher.submit("other"))
    assert await good == "GOOD"
    assert await other == "OTHER"
    with pytest.raises(ValueError, match="bad input"):
        await bad
    batcher.close()
