import asyncio
import contextlib
import email.utils
import gzip
import time
import zlib
from collections.abc import AsyncIterator, Callable, Mapping

import httpx
import pytest
from aiohttp import web

from connectors.ssrf import AddressRefused, UnresolvedHost
from connectors.transport import (
    MAX_RESPONSE_BODY_BYTES,
    Classifier,
    classify_exception,
    retry_after_seconds,
    send,
)
from connectors.verdict import HttpRequest, Outcome, Verdict
from connectors.webhook import classify

REQUEST = HttpRequest(
    method="POST",
    url="https://hooks.example.com/tidings",
    headers={"content-type": "application/json", "webhook-id": "dlv_1"},
    content=b'{"type":"notification.billing"}',
)


def client_answering(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


async def test_200_is_delivered_and_the_request_is_sent_as_built() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True})

    async with client_answering(handler) as client:
        verdict = await send(client, REQUEST, 5.0, classify)

    assert verdict == Verdict.delivered(status_code=200)
    [request] = seen
    assert request.method == "POST"
    assert str(request.url) == REQUEST.url
    assert request.headers["webhook-id"] == "dlv_1"
    assert request.content == REQUEST.content


async def test_503_with_retry_after_is_a_retry() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, headers={"Retry-After": "7"}, text="maintenance")

    async with client_answering(handler) as client:
        verdict = await send(client, REQUEST, 5.0, classify)

    assert verdict.outcome is Outcome.RETRY
    assert verdict.retry_after == 7.0
    assert verdict.status_code == 503
    assert "maintenance" in verdict.reason


async def test_connection_refused_is_a_retry_not_an_exception() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    async with client_answering(handler) as client:
        verdict = await send(client, REQUEST, 5.0, classify)

    assert verdict.outcome is Outcome.RETRY
    assert verdict.reason.startswith("ConnectError")
    assert verdict.status_code is None


async def test_redirects_are_not_followed() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(302, headers={"Location": "https://elsewhere.example.com/"})

    async with client_answering(handler) as client:
        verdict = await send(client, REQUEST, 5.0, classify)

    assert calls == 1
    assert verdict.outcome is Outcome.REJECTED


async def test_response_body_read_is_bounded() -> None:
    bodies: list[bytes] = []

    def record(status: int, headers: Mapping[str, str], body: bytes) -> Verdict:
        bodies.append(body)
        return Verdict.delivered(status_code=status)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"x" * (4 * MAX_RESPONSE_BODY_BYTES))

    async with client_answering(handler) as client:
        await send(client, REQUEST, 5.0, record)

    assert [len(b) for b in bodies] == [MAX_RESPONSE_BODY_BYTES]


class _DripStream(httpx.AsyncByteStream):
    """A response body that sends a byte every 50 ms, forever."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            await asyncio.sleep(0.05)
            yield b"."


async def test_timeout_bounds_the_whole_attempt_not_each_read() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=_DripStream())

    async with client_answering(handler) as client:
        verdict = await send(client, REQUEST, 0.3, classify)

    assert verdict.outcome is Outcome.RETRY
    assert "deadline" in verdict.reason


# -- classify_exception -----------------------------------------------------------

_REQ = httpx.Request("POST", "https://hooks.example.com/")

EXCEPTION_ROWS = [
    (httpx.ConnectError("Connection refused", request=_REQ), Outcome.RETRY, "ConnectError"),
    (httpx.ConnectTimeout("timed out", request=_REQ), Outcome.RETRY, "ConnectTimeout"),
    (httpx.ReadTimeout("timed out", request=_REQ), Outcome.RETRY, "ReadTimeout"),
    (httpx.WriteTimeout("timed out", request=_REQ), Outcome.RETRY, "WriteTimeout"),
    (httpx.PoolTimeout("timed out", request=_REQ), Outcome.RETRY, "PoolTimeout"),
    (httpx.ReadError("Connection reset by peer", request=_REQ), Outcome.RETRY, "ReadError"),
    (httpx.RemoteProtocolError("disconnected", request=_REQ), Outcome.RETRY, "RemoteProtocol"),
    (httpx.DecodingError("bad gzip", request=_REQ), Outcome.RETRY, "DecodingError"),
    (TimeoutError(), Outcome.RETRY, "TimeoutError"),
    (httpx.InvalidURL("Invalid port"), Outcome.ADDRESS_INVALID, "InvalidURL"),
]


@pytest.mark.parametrize(("exc", "outcome", "named"), EXCEPTION_ROWS)
def test_classify_exception(exc: BaseException, outcome: Outcome, named: str) -> None:
    verdict = classify_exception(exc)

    assert verdict.outcome is outcome
    assert verdict.reason.startswith(named)
    assert verdict.status_code is None


def test_classify_exception_refuses_what_is_not_a_transport_failure() -> None:
    with pytest.raises(TypeError):
        classify_exception(KeyError("bug"))


# -- Retry-After (RFC 9110 §10.2.3) -----------------------------------------------

NOW = 1_700_000_000

RETRY_AFTER_ROWS = [
    ({}, None),
    ({"Retry-After": "0"}, 0.0),
    ({"Retry-After": "120"}, 120.0),
    ({"retry-after": " 5 "}, 5.0),
    ({"Retry-After": email.utils.formatdate(NOW + 90, usegmt=True)}, 90.0),  # IMF-fixdate
    ({"Retry-After": email.utils.formatdate(NOW - 90, usegmt=True)}, 0.0),  # already past
    ({"Retry-After": "Tuesday, 14-Nov-23 22:14:50 GMT"}, 90.0),  # obsolete RFC 850 form
    ({"Retry-After": "Tue Nov 14 22:14:50 2023"}, 90.0),  # obsolete asctime form, GMT
    ({"Retry-After": "-5"}, None),
    ({"Retry-After": "1.5"}, None),
    ({"Retry-After": "tomorrow"}, None),
]


@pytest.mark.parametrize(("headers", "seconds"), RETRY_AFTER_ROWS)
def test_retry_after_seconds(headers: dict[str, str], seconds: float | None) -> None:
    assert retry_after_seconds(headers, now=NOW) == seconds


def test_retry_after_reads_httpx_headers() -> None:
    assert retry_after_seconds(httpx.Headers({"Retry-After": "3"})) == 3.0


# -- the response-size cap, on the wire and after decoding --------------------------


class _Chunks(httpx.AsyncByteStream):
    def __init__(self, *chunks: bytes) -> None:
        self._chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk


def _recording_classifier(bodies: list[bytes]) -> Classifier:
    def record(status: int, headers: Mapping[str, str], body: bytes) -> Verdict:
        bodies.append(body)
        return Verdict.delivered(status_code=status)

    return record


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data)


def _zlib(data: bytes) -> bytes:
    return zlib.compress(data)


def _raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


BOMB = b"\0" * (16 * 1024 * 1024)  # 16 MiB of zeros: about 16 KiB gzipped

ENCODED_ROWS = [
    # content-encoding, body on the wire, body the classifier gets
    ("gzip", _gzip(b'{"error":"bad"}'), b'{"error":"bad"}'),
    ("x-gzip", _gzip(b"old name"), b"old name"),
    ("deflate", _zlib(b"zlib-wrapped"), b"zlib-wrapped"),
    ("deflate", _raw_deflate(b"bare deflate"), b"bare deflate"),  # a server bug httpx tolerates
    ("GZIP", _gzip(b"case"), b"case"),
    ("identity", b"plain", b"plain"),
    ("br", b"\x0b\x02\x80brotli", b"\x0b\x02\x80brotli"),  # not decoded: quoted as it came
    ("gzip", b"not gzip at all", b"not gzip at all"),
    ("gzip", _gzip(BOMB), BOMB[:MAX_RESPONSE_BODY_BYTES]),  # decoded only up to the cap
]


@pytest.mark.parametrize(("coding", "wire", "expected"), ENCODED_ROWS)
async def test_encoded_bodies_are_decoded_within_the_cap(
    coding: str, wire: bytes, expected: bytes
) -> None:
    bodies: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, headers={"content-encoding": coding}, stream=_Chunks(wire))

    async with client_answering(handler) as client:
        await send(client, REQUEST, 5.0, _recording_classifier(bodies))

    assert bodies == [expected]


async def test_no_content_coding_is_asked_for_unless_the_connector_does() -> None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("accept-encoding"))
        return httpx.Response(200)

    own = HttpRequest(REQUEST.method, REQUEST.url, {"Accept-Encoding": "gzip"}, b"")
    async with client_answering(handler) as client:
        await send(client, REQUEST, 5.0, classify)
        await send(client, own, 5.0, classify)

    assert seen == ["identity", "gzip"]


async def test_an_endless_body_from_a_real_server_is_cut_at_the_cap() -> None:
    """A server streaming forever: the attempt reads 64 KiB and ends, well within its deadline."""
    streamed = 0

    async def endless(request: web.Request) -> web.StreamResponse:
        nonlocal streamed
        response = web.StreamResponse(status=500)
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            while True:
                await response.write(b"x" * 16384)
                streamed += 16384
        return response

    app = web.Application()
    app.router.add_post("/", endless)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    bodies: list[bytes] = []
    try:
        async with httpx.AsyncClient() as client:
            request = HttpRequest("POST", f"http://127.0.0.1:{port}/", {}, b"")
            started = time.monotonic()
            await send(client, request, 10.0, _recording_classifier(bodies))
            elapsed = time.monotonic() - started
    finally:
        await runner.cleanup()

    assert [len(b) for b in bodies] == [MAX_RESPONSE_BODY_BYTES]
    assert elapsed < 5.0


# -- the SSRF guard's refusals and extensions ---------------------------------------


@pytest.mark.parametrize(
    ("exc", "outcome"),
    [
        (AddressRefused("hooks.example.com resolves to 10.0.0.1 (private), refused"),
         Outcome.ADDRESS_INVALID),
        (UnresolvedHost("hooks.example.com does not resolve"), Outcome.RETRY),
    ],
)
async def test_guard_refusals_become_their_verdicts(exc: Exception, outcome: Outcome) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    async with client_answering(handler) as client:
        verdict = await send(client, REQUEST, 5.0, classify)

    assert verdict.outcome is outcome
    assert verdict.reason == str(exc)
    assert classify_exception(exc) == verdict


async def test_extensions_are_passed_to_the_request() -> None:
    seen: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(dict(request.extensions))
        return httpx.Response(200)

    async with client_answering(handler) as client:
        await send(client, REQUEST, 5.0, classify, extensions={"sni_hostname": "example.com"})

    assert seen[0]["sni_hostname"] == "example.com"
