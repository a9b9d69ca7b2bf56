"""What the local provider emulators share: their lifecycle and the CLI loop.

:class:`Emulator` makes a server with ``start``/``stop`` usable as ``async with``.
:class:`HttpEmulator` starts and stops an aiohttp application on ``host:port`` and
knows its bound URL; a subclass supplies :meth:`HttpEmulator._application`.
:func:`serve_until_signalled` runs any emulator from the command line until Ctrl-C or
SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import ssl
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Self

from aiohttp import web


class Emulator:
    """A local server, used as ``async with`` (on a free loopback port) or started and stopped."""

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


class HttpEmulator(Emulator):
    """An aiohttp server on ``host:port``."""

    _ssl_context: ssl.SSLContext | None = None
    """Serve HTTPS with this context; None serves plain HTTP."""
    _role = "emulator"
    """What errors call it: "emulator already started", "emulator is not started"."""

    _runner: web.AppRunner | None = None
    _url: str | None = None

    def _application(self) -> web.Application:
        """The aiohttp application with the provider's routes."""
        raise NotImplementedError

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on ``host:port``; port 0 picks a free one (see :attr:`url`)."""
        if self._runner is not None:
            raise RuntimeError(f"{self._role} already started")
        runner = web.AppRunner(self._application(), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port, ssl_context=self._ssl_context).start()
        except BaseException:
            await runner.cleanup()
            raise
        bound_host, bound_port = runner.addresses[0][:2]
        self._runner = runner
        scheme = "http" if self._ssl_context is None else "https"
        self._url = f"{scheme}://{_url_host(bound_host)}:{bound_port}"

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner, self._url = self._runner, None, None
            await runner.cleanup()

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8089``; append any path."""
        if self._url is None:
            raise RuntimeError(f"{self._role} is not started")
        return self._url


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def serve_until_signalled(
    emulator: Emulator,
    start: Callable[[], Awaitable[None]],
    banner: Callable[[], str],
    stopped: str,
) -> None:
    """Run ``start``, print ``banner()``, wait for SIGINT or SIGTERM, stop, print ``stopped``.

    ``banner`` is called once started, so it can name the bound address.
    """
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    await start()
    try:
        print(banner(), flush=True)
        await stopping.wait()
    finally:
        await emulator.stop()
    print(stopped, flush=True)


async def wait_until(
    changed: asyncio.Event, done: Callable[[], bool], limit_s: float, progress: Callable[[], str]
) -> None:
    """Wait, waking each time ``changed`` is set, until ``done()``; after ``limit_s``
    seconds raise TimeoutError saying ``progress()``, e.g. "2 of 3 Slack messages"."""
    try:
        async with asyncio.timeout(limit_s):
            while not done():
                changed.clear()
                await changed.wait()
    except TimeoutError:
        raise TimeoutError(f"{progress()} after {limit_s}s") from None
