"""Rendering in a child process that the worker can cut off.

The sandbox (agents/sandbox.py) bounds what one template operation may build, but Python
cannot interrupt a thread, and a template can still loop for long or build memory in
steps. So the worker sends each render to a child process, one per worker:

* the child caps its own address space (`RLIMIT_AS`), so a memory bomb ends in a
  `MemoryError` inside the child, answered as a render error;
* the worker waits at most `timeout_s` for the answer, then kills the child (SIGKILL) and
  starts a new one; that render is a `RenderTimeout`, and the next one proceeds.

The child is a fresh interpreter (`python -m agents.render_process`) talking over a
socket pair: a fork of the running worker would copy its event loop, threads and Kafka
clients, and multiprocessing's `spawn` re-imports the parent's `__main__` (a test runner,
a console script), which is neither needed nor always safe.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from typing import Any

from agents import templating
from agents.templating import RenderJob

log = logging.getLogger("tidings.render")
_MAX_ERROR_CHARS = 500
_START_TIMEOUT_S = 60.0  # imports on a busy machine; only the start waits this long


class RenderTimeout(Exception):  # noqa: N818 - reads as what happened
    """The render process did not answer in time and was restarted."""


class RenderFailed(Exception):  # noqa: N818
    """The template raised while rendering; `error_class` is the template's exception."""

    def __init__(self, error_class: str, message: str) -> None:
        super().__init__(message)
        self.error_class = error_class


def _child(connection: Connection, max_memory_bytes: int) -> None:
    if max_memory_bytes:
        resource.setrlimit(resource.RLIMIT_AS, (max_memory_bytes, max_memory_bytes))
    connection.send(("ready", None, None))  # the renderer is imported: jobs are timed from now
    while True:
        try:
            job = connection.recv()
        except EOFError:
            return  # the worker is gone
        try:
            answer: tuple[str, Any, Any] = ("ok", templating.run(job), None)
        except templating.ERRORS as exc:
            answer = ("error", type(exc).__name__, str(exc)[:_MAX_ERROR_CHARS])
        except Exception as exc:  # noqa: BLE001 - any template failure is an answer
            answer = ("error", type(exc).__name__, str(exc)[:_MAX_ERROR_CHARS])
        try:
            connection.send(answer)
        except (MemoryError, ValueError) as exc:  # an answer too big to pickle
            connection.send(("error", type(exc).__name__, "the rendered message is too large"))


def run_inline(job: RenderJob) -> dict[str, dict[str, Any]]:
    """Render in this process (tests, benchmarks): no time limit, same answers."""
    try:
        return templating.run(job)
    except templating.ERRORS as exc:
        raise RenderFailed(type(exc).__name__, str(exc)[:_MAX_ERROR_CHARS]) from exc


class RenderProcess:
    """One render child; `render` is safe to call from several coroutines (serialized)."""

    def __init__(self, *, timeout_s: float, max_memory_mb: int) -> None:
        self.timeout_s = timeout_s
        self.max_memory_bytes = max_memory_mb * 1024 * 1024
        self._process: subprocess.Popen[bytes] | None = None
        self._connection: Connection | None = None
        self._lock = threading.Lock()
        self.restarts = 0

    def _start(self) -> Connection:
        parent_socket, child_socket = socket.socketpair()
        with child_socket:
            process = subprocess.Popen(
                [sys.executable, "-m", "agents.render_process", str(child_socket.fileno()),
                 str(self.max_memory_bytes)],
                pass_fds=[child_socket.fileno()], stdin=subprocess.DEVNULL,
            )
        parent = Connection(parent_socket.detach())
        self._process, self._connection = process, parent
        try:
            ready = parent.poll(_START_TIMEOUT_S) and parent.recv()[0] == "ready"
        except (EOFError, OSError):
            ready = False
        if not ready:
            self._kill()
            raise RenderFailed("RenderProcessError", "the render process did not start")
        return parent

    def _kill(self) -> None:
        process, connection = self._process, self._connection
        self._process = self._connection = None
        if connection is not None:
            connection.close()
        if process is not None:
            process.kill()
            process.wait(5)

    def render_blocking(self, job: RenderJob) -> dict[str, dict[str, Any]]:
        with self._lock:
            connection = self._connection or self._start()
            try:
                connection.send(job)
            except OSError:
                # The child was already gone before this job (killed between renders):
                # not this template's fault, so start another and send it once more.
                self.restarts += 1
                self._kill()
                connection = self._start()
                connection.send(job)
            try:
                if not connection.poll(self.timeout_s):
                    self.restarts += 1
                    log.warning("a render took longer than %.1fs; render process restarted",
                                self.timeout_s)
                    self._kill()
                    raise RenderTimeout(f"rendering took longer than {self.timeout_s}s")
                answer = connection.recv()
            except (EOFError, OSError) as exc:
                # The child died (killed by the kernel, or it could not even answer).
                self.restarts += 1
                self._kill()
                raise RenderFailed(type(exc).__name__, "the render process died") from exc
        status, value, message = answer
        if status == "ok":
            return value  # type: ignore[no-any-return]
        raise RenderFailed(value, message)

    async def render(self, job: RenderJob) -> dict[str, dict[str, Any]]:
        return await asyncio.to_thread(self.render_blocking, job)

    def start(self) -> None:
        """Start the child now, and wait until it has imported the renderer."""
        with self._lock:
            if self._connection is None:
                self._start()

    def close(self) -> None:
        with self._lock:
            self._kill()


if __name__ == "__main__":
    _child(Connection(int(sys.argv[1])), int(sys.argv[2]))
