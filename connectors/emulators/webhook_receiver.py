"""A customer's webhook endpoint, played locally: a real HTTP server for runs and tests.

It verifies every request's Standard Webhooks signature the way a careful
consumer would (the ``standardwebhooks`` reference library), records what
arrived, and can be told to fail the way real endpoints do (503 with
Retry-After, 410 Gone, 400)::

    async with WebhookReceiver(secret) as receiver:
        receiver.fail_next("/hook", [503, 503], retry_after=1)
        ...  # point the webhook connector at receiver.url + "/hook"
        await receiver.wait_for(1, timeout=5)
        assert receiver.by_id()[delivery_id] == 1

``WebhookReceiver(secret, ssl_context=...)`` serves HTTPS instead (tests make
the certificate with ``trustme``).

Run it on its own (prints one line per request, stops on Ctrl-C or SIGTERM)::

    python -m connectors.emulators.webhook_receiver --port 8089 --secret whsec_...
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError
from standardwebhooks.webhooks import EmptyWebhookSecretError

from connectors.emulators._server import HttpEmulator, serve_until_signalled, wait_until


@dataclass(frozen=True, slots=True)
class Received:
    """One request the receiver answered, whatever it answered."""

    webhook_id: str
    path: str
    payload: dict[str, Any]
    """The JSON body; empty when it was not a JSON object."""
    verified: bool
    received_at: float
    status: int
    """The status the receiver answered with."""
    host: str = ""
    """The request's ``Host`` header: the name the sender meant, whatever IP it reached."""

    @property
    def accepted(self) -> bool:
        """A delivery the sender may count as done: signed correctly and answered 2xx."""
        return self.verified and 200 <= self.status <= 299


@dataclass(slots=True)
class _Failure:
    status: int
    retry_after: int | None = None


class WebhookReceiver(HttpEmulator):
    """A local webhook endpoint that verifies signatures, records deliveries and fails on cue.

    Requests are POSTs to any path. A request whose signature does not verify
    (bad signature, timestamp outside 5 minutes, missing headers) is answered
    401; otherwise the path's script decides: the next status queued by
    :meth:`fail_next`, else the status set by :meth:`always`, else 200. A path under
    :meth:`hold` answers only once released.
    """

    _role = "receiver"

    def __init__(
        self,
        secret: str,
        *,
        on_received: Callable[[Received], None] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._verifier = Webhook(secret)
        self._on_received = on_received
        self._ssl_context = ssl_context
        self.received: list[Received] = []
        """Every request answered, in arrival order, including failures and bad signatures."""
        self._queued: dict[str, collections.deque[_Failure]] = collections.defaultdict(
            collections.deque
        )
        self._always: dict[str, int] = {}
        self._held: dict[str, asyncio.Event] = {}
        self.holding: collections.Counter[str] = collections.Counter()
        """How many requests are waiting, by path, for :meth:`release`."""
        self._arrived = asyncio.Event()

    # -- lifecycle (start, stop, async with, url: HttpEmulator) -------------------

    def _application(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/{path:.*}", self._handle)
        return app

    @property
    def port(self) -> int:
        """The port listened on (useful with a URL that names another host)."""
        return int(self.url.rsplit(":", 1)[1])

    # -- scripting ---------------------------------------------------------------

    def fail_next(self, path: str, statuses: list[int], retry_after: int | None = None) -> None:
        """Answer the next ``len(statuses)`` verified requests to ``path`` with these
        statuses, in order, adding ``Retry-After: <retry_after>`` when given."""
        self._queued[_normalise(path)].extend(_Failure(s, retry_after) for s in statuses)

    def always(self, path: str, status: int) -> None:
        """Answer every verified request to ``path`` with ``status`` (and a JSON error
        body) once any :meth:`fail_next` queue for it is used up; 200 restores normal."""
        self._always[_normalise(path)] = status

    def hold(self, path: str) -> None:
        """Keep verified requests to ``path`` waiting, unanswered, until :meth:`release`:
        a send in flight for as long as a test needs. A request whose sender hung up
        meanwhile is recorded with status 499 (not accepted), as nobody read its answer."""
        self._held.setdefault(_normalise(path), asyncio.Event())

    def release(self, path: str) -> None:
        """Answer the requests held on ``path`` (by its script) and stop holding it."""
        gate = self._held.pop(_normalise(path), None)
        if gate is not None:
            gate.set()

    async def wait_holding(self, path: str, count: int, timeout: float) -> None:  # noqa: ASYNC109
        """Wait until ``count`` requests to ``path`` are held."""
        path = _normalise(path)
        await wait_until(self._arrived, lambda: self.holding[path] >= count, timeout,
                         lambda: f"{self.holding[path]} of {count} requests held on {path}")

    # -- what arrived ------------------------------------------------------------

    @property
    def delivered(self) -> list[Received]:
        """The accepted deliveries: verified and answered 2xx."""
        return [r for r in self.received if r.accepted]

    def by_id(self) -> collections.Counter[str]:
        """How many times each webhook-id was accepted; 1 everywhere means exactly once."""
        return collections.Counter(r.webhook_id for r in self.received if r.accepted)

    # The timeout is part of the assertion rather than left to the caller's
    # asyncio.timeout (ASYNC109), so the failure says how many deliveries arrived.
    async def wait_for(self, count: int, timeout: float) -> list[Received]:  # noqa: ASYNC109
        """Wait until at least ``count`` deliveries have been accepted; return them.

        Raises TimeoutError, saying how many arrived, after ``timeout`` seconds.
        """
        await wait_until(
            self._arrived,
            lambda: len(self.delivered) >= count,
            timeout,
            lambda: f"{len(self.delivered)} of {count} webhook deliveries",
        )
        return self.delivered

    async def wait_for_distinct(self, count: int, timeout: float) -> None:  # noqa: ASYNC109
        """Wait until ``count`` different deliveries (webhook-ids) have been accepted: with
        repeats allowed, ``wait_for`` could count a repeat in place of one still to come."""
        await wait_until(
            self._arrived,
            lambda: len(self.by_id()) >= count,
            timeout,
            lambda: f"{len(self.by_id())} of {count} distinct webhook deliveries",
        )

    # -- the endpoint ------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        path = request.path
        verified = self._verify(body, request)
        if verified and (gate := self._held.get(path)) is not None:
            self.holding[path] += 1
            self._arrived.set()
            try:
                await gate.wait()
            finally:
                self.holding[path] -= 1
        if not verified:
            response = _error(401, "signature verification failed")
        elif request.transport is None or request.transport.is_closing():
            response = _error(499, "the sender hung up before the answer")
        elif failure := self._scripted_failure(path):
            response = _error(failure.status, "scripted failure")
            if failure.retry_after is not None:
                response.headers["Retry-After"] = str(failure.retry_after)
        else:
            response = web.json_response({"ok": True})
        self._record(
            Received(
                webhook_id=request.headers.get("webhook-id", ""),
                path=path,
                payload=_json_object(body),
                verified=verified,
                received_at=time.time(),
                status=response.status,
                host=request.headers.get("host", ""),
            )
        )
        return response

    def _verify(self, body: bytes, request: web.Request) -> bool:
        try:
            self._verifier.verify(body, dict(request.headers), json_parse=False)
        # The library raises its own error for a bad or stale signature, but a plain
        # ValueError for malformed input (a signature without ",", bad base64, non-UTF-8).
        except (WebhookVerificationError, ValueError):
            return False
        return True

    def _scripted_failure(self, path: str) -> _Failure | None:
        if queue := self._queued.get(path):
            return queue.popleft()
        status = self._always.get(path)
        if status is None or 200 <= status <= 299:
            return None
        return _Failure(status)

    def _record(self, received: Received) -> None:
        self.received.append(received)
        if received.accepted:
            self._arrived.set()
        if self._on_received is not None:
            self._on_received(received)


def _normalise(path: str) -> str:
    return path if path.startswith("/") else f"/{path}"


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message, "status": status}, status=status)


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


# -- command line ----------------------------------------------------------------


def _print_line(received: Received) -> None:
    data = received.payload.get("data")
    title = data.get("title", "") if isinstance(data, dict) else ""
    print(
        f"{received.status} {received.path} webhook-id={received.webhook_id or '-'} "
        f"verified={received.verified} title={title!r}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m connectors.emulators.webhook_receiver",
        description="Local Standard Webhooks endpoint: verifies, records and prints deliveries.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument(
        "--secret",
        default=os.environ.get("TIDINGS_WEBHOOK_SECRET"),
        help="whsec_ signing secret (default: $TIDINGS_WEBHOOK_SECRET)",
    )
    args = parser.parse_args(argv)
    if not args.secret:
        parser.error("--secret or TIDINGS_WEBHOOK_SECRET is required")
    try:
        receiver = WebhookReceiver(args.secret, on_received=_print_line)
    except (ValueError, EmptyWebhookSecretError) as exc:  # binascii.Error is a ValueError
        parser.error(f"--secret is not a whsec_ secret: {exc}")
    asyncio.run(
        serve_until_signalled(
            receiver,
            lambda: receiver.start(args.host, args.port),
            lambda: f"webhook receiver listening on {receiver.url}",
            "webhook receiver stopped",
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
