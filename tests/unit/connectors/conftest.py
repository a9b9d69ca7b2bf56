"""Fixtures shared by the emulator tests: running an emulator's command line."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]


@dataclass
class EmulatorProcess:
    """An emulator started with ``python -m connectors.emulators.<name> --port 0``."""

    process: asyncio.subprocess.Process
    banner: str
    """The first line it printed: "<name> listening on ..."."""

    async def readline(self) -> str:
        assert self.process.stdout is not None
        return (await self.process.stdout.readline()).decode()

    async def stop(self, signum: signal.Signals) -> None:
        """Send ``signum`` and check the emulator stopped cleanly, saying so."""
        self.process.send_signal(signum)
        rest, errors = await self.process.communicate()
        assert self.process.returncode == 0, errors.decode()
        assert b"stopped" in rest
        assert b"Traceback" not in errors


RunEmulator = Callable[..., AbstractAsyncContextManager[EmulatorProcess]]


@asynccontextmanager
async def _run_emulator(
    name: str, *args: str, timeout: float = 15  # noqa: ASYNC109
) -> AsyncIterator[EmulatorProcess]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", f"connectors.emulators.{name}", "--port", "0", *args,
        cwd=REPO_ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    try:
        async with asyncio.timeout(timeout):
            banner = (await process.stdout.readline()).decode()
            yield EmulatorProcess(process, banner)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.fixture
def run_emulator() -> RunEmulator:
    """``async with run_emulator("slack", "--token", T) as cli:`` runs the CLI on a free
    port, gives its banner, and kills it on the way out if it is still running; the
    whole block is bounded by ``timeout`` seconds."""
    return _run_emulator
