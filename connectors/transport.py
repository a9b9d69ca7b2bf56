"""The one network call every HTTP connector makes, and the HTTP rules they share.

Connectors are sans-IO: each builds an :class:`HttpRequest` and classifies a
``(status, headers, body)`` triple with pure functions. :func:`send` is the thin
edge between them. It never raises for a network failure: a refused connection,
a reset or a timeout becomes a retry :class:`Verdict`, so an agent only ever
handles verdicts.
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import time
from collections.abc import Callable, Mapping

import httpx

from connectors.verdict import HttpRequest, Verdict

Classifier = Callable[[int, Mapping[str, str], bytes], Verdict]
"""A connector's pure ``classify(status, headers, body) -> Verdict``."""

# Classifiers quote at most a few hundred characters of a response body, and the
# endpoints we call are often customers' (webhooks): reading a body without a
# bound would let one endpoint stream megabytes into a worker.
MAX_RESPONSE_BODY_BYTES = 64 * 1024


async def send(
    client: httpx.AsyncClient, request: HttpRequest, timeout_s: float, classify: Classifier
) -> Verdict:
    """Send ``request`` once and classify the answer; network failures become verdicts.

    ``timeout_s`` bounds the whole attempt (connect, send, response), not each
    read: httpx's own timeouts apply per operation, so an endpoint that drips a
    byte at a time would otherwise hold the attempt open indefinitely.
    Redirects are never followed; the connector's classifier decides what a 3xx means.
    """
    try:
        async with asyncio.timeout(timeout_s):
            async with client.stream(
                request.method,
                request.url,
                headers=request.headers,
                content=request.content,
                timeout=timeout_s,
                follow_redirects=False,
            ) as response:
                body = await _read_bounded(response, MAX_RESPONSE_BODY_BYTES)
    except (httpx.RequestError, httpx.InvalidURL, TimeoutError) as exc:
        return classify_exception(exc)
    return classify(response.status_code, response.headers, body)


async def _read_bounded(response: httpx.Response, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return b"".join(chunks)[:limit]


def classify_exception(exc: BaseException) -> Verdict:
    """Verdict for an attempt that got no HTTP response.

    Every transport failure is retried. A timeout after the request was written
    may mean the provider acted on it anyway; the retry then repeats it, which is
    why each attempt carries the stable delivery id (``webhook-id`` and the like)
    for the receiver to de-duplicate on.
    """
    name = type(exc).__name__
    if isinstance(exc, httpx.InvalidURL):
        return Verdict.address_invalid(f"{name}: {exc}")
    if isinstance(exc, TimeoutError):
        return Verdict.retry(f"{name}: attempt exceeded its deadline")
    if isinstance(exc, httpx.RequestError):
        # TimeoutException, ConnectError, ReadError, RemoteProtocolError, ...
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
