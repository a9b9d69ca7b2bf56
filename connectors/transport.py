"""The one network call every HTTP connector makes, and the HTTP rules they share.

Connectors are sans-IO: each builds an :class:`HttpRequest` and classifies a
``(status, headers, body)`` triple with pure functions. :func:`send` is the thin
edge between them. It never raises for a network failure: a refused connection,
a reset or a timeout becomes a retry :class:`Verdict`, and an address the SSRF
guard refuses (:mod:`connectors.ssrf`) becomes the verdict it carries, so an
agent only ever handles verdicts.
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import time
import zlib
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import aiohttp
import httpx

from connectors.ssrf import AddressCheckFailed
from connectors.verdict import HttpRequest, Verdict

Classifier = Callable[[int, Mapping[str, str], bytes], Verdict]
"""A connector's pure ``classify(status, headers, body) -> Verdict``."""

# Classifiers quote at most a few hundred characters of a response body, and the
# endpoints we call are often customers' (webhooks): reading a body without a
# bound would let one endpoint stream megabytes into a worker. The bound is on
# the bytes read off the wire and on the decoded bytes alike: a gzip body
# expands about 1000 times, so one 64 KiB chunk decoded by httpx's unbounded
# decoder could still be 64 MiB. We ask for no content coding and decode a
# gzip/deflate answer that comes anyway ourselves, with an output limit.
MAX_RESPONSE_BODY_BYTES = 64 * 1024


async def send(
    client: httpx.AsyncClient,
    request: HttpRequest,
    timeout_s: float,
    classify: Classifier,
    *,
    extensions: Mapping[str, Any] | None = None,
) -> Verdict:
    """Send ``request`` once and classify the answer; network failures become verdicts.

    ``timeout_s`` bounds the whole attempt (DNS, connect, send, response), not
    each read: httpx's own timeouts apply per operation, so an endpoint that
    drips a byte at a time would otherwise hold the attempt open indefinitely.
    At most :data:`MAX_RESPONSE_BODY_BYTES` of the body are read.
    Redirects are never followed; the connector's classifier decides what a 3xx
    means. ``extensions`` are httpx request extensions (e.g. an httpcore ``trace``).
    """
    headers = _wire_headers(request)
    try:
        async with asyncio.timeout(timeout_s):
            async with client.stream(
                request.method,
                request.url,
                headers=headers,
                content=request.content,
                timeout=timeout_s,
                follow_redirects=False,
                extensions=dict(extensions) if extensions else None,
            ) as response:
                body = await _read_bounded(response, MAX_RESPONSE_BODY_BYTES)
    except (httpx.RequestError, httpx.InvalidURL, TimeoutError, AddressCheckFailed) as exc:
        return classify_exception(exc)
    return classify(response.status_code, response.headers, body)


async def send_aiohttp(
    session: aiohttp.ClientSession,
    request: HttpRequest,
    timeout_s: float,
    classify: Classifier,
) -> Verdict:
    """:func:`send` over an aiohttp session directly, without httpx above it (a fifth of a
    webhook delivery's CPU went to httpx's request and response models; tests/bench).

    The same bound on the whole attempt and on the body, the same verdicts. The session
    must not decompress (``auto_decompress=False``): a compressed answer is decoded here,
    to at most :data:`MAX_RESPONSE_BODY_BYTES`, like :func:`send` does.
    """
    limit = MAX_RESPONSE_BODY_BYTES
    try:
        async with asyncio.timeout(timeout_s):
            async with session.request(
                request.method, request.url, headers=_wire_headers(request),
                data=request.content, allow_redirects=False,
            ) as response:
                raw = await _read_at_most(response.content.iter_chunked(limit), limit)
                status, response_headers = response.status, response.headers
    except (aiohttp.ClientError, TimeoutError, AddressCheckFailed) as exc:
        return classify_exception(exc)
    coding = response_headers.get("content-encoding", "")
    return classify(status, response_headers, _decode_bounded(raw, coding, limit))


def _wire_headers(request: HttpRequest) -> dict[str, str]:
    """The request's headers, asking for no content coding unless the connector asked for
    one (a compressed answer is decoded here, within the cap)."""
    headers = dict(request.headers)
    if header_value(headers, "accept-encoding") is None:
        headers["accept-encoding"] = "identity"
    return headers


async def _read_at_most(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """The first `limit` bytes of a body, reading no further than the chunk that passes it."""
    read: list[bytes] = []
    size = 0
    async for chunk in chunks:
        read.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return b"".join(read)[:limit]


async def _read_bounded(response: httpx.Response, limit: int) -> bytes:
    if response.is_stream_consumed:
        # Built with its body in memory (httpx.MockTransport) and already decoded.
        return response.content[:limit]
    raw = await _read_at_most(response.aiter_raw(), limit)
    return _decode_bounded(raw, response.headers.get("content-encoding", ""), limit)


def _decode_bounded(raw: bytes, content_encoding: str, limit: int) -> bytes:
    """``raw`` decoded per Content-Encoding, to at most ``limit`` bytes.

    Only a single gzip or deflate coding is decoded (RFC 9110 §8.4.1); anything
    else, or a body that does not decode (it may be cut at the read bound), is
    given to the classifier as it came, since classifiers only quote bodies.
    """
    coding = content_encoding.strip().lower()
    if coding in ("", "identity"):
        return raw
    if coding not in ("gzip", "x-gzip", "deflate"):
        return raw
    # wbits 32 + MAX_WBITS accepts a gzip or a zlib header; "deflate" sent as a
    # bare deflate stream (a common server bug httpx also tolerates) needs -MAX_WBITS.
    for wbits in (32 + zlib.MAX_WBITS, -zlib.MAX_WBITS):
        try:
            return zlib.decompressobj(wbits).decompress(raw, limit)
        except zlib.error:
            continue
    return raw


def classify_exception(exc: BaseException) -> Verdict:
    """Verdict for an attempt that got no HTTP response.

    Every transport failure is retried; the SSRF guard's refusals carry their
    own verdict (a refused address is permanent, an unresolved name retried).
    A timeout after the request was written
    may mean the provider acted on it anyway; the retry then repeats it, which is
    why each attempt carries the stable delivery id (``webhook-id`` and the like)
    for the receiver to de-duplicate on.
    """
    name = type(exc).__name__
    if isinstance(exc, AddressCheckFailed):
        return exc.verdict
    if isinstance(exc, httpx.InvalidURL | aiohttp.InvalidURL):
        return Verdict.address_invalid(f"{name}: {exc}")
    if isinstance(exc, TimeoutError):
        return Verdict.retry(f"{name}: attempt exceeded its deadline")
    if isinstance(exc, httpx.RequestError | aiohttp.ClientError):
        # TimeoutException, ConnectError, ReadError, RemoteProtocolError, ...
        # (aiohttp: ClientConnectorError, ServerDisconnectedError, ClientPayloadError, ...)
        return Verdict.retry(f"{name}: {exc}" if str(exc) else name)
    raise TypeError(f"not a transport failure: {name}") from exc


def retry_after_seconds(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header, or None when absent or unreadable.

    RFC 9110 §10.2.3: the value is either delay-seconds (a non-negative integer)
    or an HTTP-date; a date is turned into seconds from ``now`` (the wall clock
    when not given) and a date already past means "retry now" (0.0).
    """
    value = header_value(headers, "retry-after")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        # RFC 9110 §5.6.7: an HTTP-date is always GMT, even in the asctime form with no zone.
        when = when.replace(tzinfo=datetime.UTC)
    reference = time.time() if now is None else now
    return max(0.0, when.timestamp() - reference)


def header_value(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive header lookup that works for plain dicts and httpx.Headers alike."""
    name = name.lower()
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None
