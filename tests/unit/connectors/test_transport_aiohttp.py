"""`send_aiohttp`: the webhook channel's direct path keeps every rule of `send`, checked
against a real local HTTP server."""

import asyncio
import contextlib
import gzip
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

import aiohttp
import pytest
from aiohttp import web

from connectors.transport import (
    MAX_RESPONSE_BODY_BYTES,
    Classifier,
    classify_exception,
    send_aiohttp,
)
from connectors.verdict import HttpRequest, Outcome, Verdict
from connectors.webhook import classify

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@contextlib.asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(auto_decompress=False) as client:
        yield client


def recording(bodies: list[bytes], headers: list[Mapping[str, str]] | None = None
              ) -> Classifier:
    def record(status: int, response_headers: Mapping[str, str], body: bytes) -> Verdict:
        bodies.append(body)
        if headers is not None:
            headers.append(response_headers)
        return Verdict.delivered(status_code=status)

    return record


def post(url: str, headers: dict[str, str] | None = None) -> HttpRequest:
    return HttpRequest("POST", url, headers or {"content-type": "application/json"},
                       b'{"type":"notification.billing"}')


async def test_the_request_goes_as_built_and_200_is_delivered() -> None:
    seen: list[tuple[str, str | None, str | None, bytes]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append((request.method, request.headers.get("content-type"),
                     request.headers.get("accept-encoding"), await request.read()))
        return web.Response(status=200)

    async with serving(handler) as base, session() as client:
        verdict = await send_aiohttp(client, post(f"{base}/hook"), 5.0, classify)

    assert verdict.outcome is Outcome.DELIVERED
    assert seen == [("POST", "application/json", "identity",
                     b'{"type":"notification.billing"}')]


async def test_503_with_retry_after_is_a_retry_with_its_delay() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=503, headers={"Retry-After": "7"}, text="maintenance")

    async with serving(handler) as base, session() as client:
        verdict = await send_aiohttp(client, post(base), 5.0, classify)

    assert (verdict.outcome, verdict.retry_after, verdict.status_code) == (
        Outcome.RETRY, 7.0, 503)
    assert "maintenance" in verdict.reason


async def test_redirects_are_not_followed() -> None:
    calls: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        calls.append(request.path)
        return web.Response(status=302, headers={"Location": "/elsewhere"})

    async with serving(handler) as base, session() as client:
        verdict = await send_aiohttp(client, post(f"{base}/hook"), 5.0, classify)

    assert calls == ["/hook"]
    assert verdict.outcome is Outcome.REJECTED


async def test_an_endless_body_is_cut_at_the_cap() -> None:
    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=500)
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            while True:
                await response.write(b"x" * 16384)
        return response

    bodies: list[bytes] = []
    async with serving(endless) as base, session() as client:
        await send_aiohttp(client, post(base), 10.0, recording(bodies))

    assert [len(b) for b in bodies] == [MAX_RESPONSE_BODY_BYTES]


async def test_a_gzip_bomb_is_decoded_only_up_to_the_cap() -> None:
    bomb = gzip.compress(b"\0" * (16 * 1024 * 1024))

    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=400, body=bomb, headers={"Content-Encoding": "gzip"})

    bodies: list[bytes] = []
    async with serving(handler) as base, session() as client:
        await send_aiohttp(client, post(base), 10.0, recording(bodies))

    assert bodies == [b"\0" * MAX_RESPONSE_BODY_BYTES]


async def test_a_connector_may_ask_for_a_coding() -> None:
    seen: list[str | None] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("accept-encoding"))
        return web.Response(status=200)

    async with serving(handler) as base, session() as client:
        await send_aiohttp(client, post(base, {"Accept-Encoding": "gzip"}), 5.0, classify)

    assert seen == ["gzip"]


async def test_the_timeout_bounds_the_whole_attempt_not_each_read() -> None:
    async def drip(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200)
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            while True:
                await asyncio.sleep(0.05)
                await response.write(b".")
        return response

    async with serving(drip) as base, session() as client:
        verdict = await send_aiohttp(client, post(base), 0.3, classify)

    assert verdict.outcome is Outcome.RETRY
    assert "deadline" in verdict.reason


async def test_a_refused_connection_is_a_retry_not_an_exception() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    async with session() as client:
        verdict = await send_aiohttp(client, post(f"http://127.0.0.1:{port}/"), 5.0, classify)

    assert verdict.outcome is Outcome.RETRY
    assert verdict.reason.startswith("ClientConnectorError")


@pytest.mark.parametrize(
    ("exc", "outcome"),
    [
        (aiohttp.InvalidURL("http://[::1"), Outcome.ADDRESS_INVALID),
        (aiohttp.ServerDisconnectedError(), Outcome.RETRY),
        (aiohttp.ClientPayloadError("truncated"), Outcome.RETRY),
    ],
)
def test_aiohttp_failures_have_verdicts(exc: BaseException, outcome: Outcome) -> None:
    verdict = classify_exception(exc)
    assert verdict.outcome is outcome
    assert verdict.reason.startswith(type(exc).__name__)
