"""Webhook connector: Standard Webhooks v1 (https://www.standardwebhooks.com).

Pure core: :func:`build_request` turns a channel message into a signed POST and
:func:`classify` turns the endpoint's answer into a :class:`Verdict`.
:func:`deliver` joins them through the shared transport.

Retries carry the same ``webhook-id`` (the delivery id) so the receiver can
de-duplicate, and a fresh ``webhook-timestamp``: the spec signs the time of the
attempt, not of the event, to stop replays, and receivers reject timestamps
more than 5 minutes from their clock (the tolerance the reference libraries,
such as the ``standardwebhooks`` package, enforce). Re-sending an old request
as it was would therefore fail verification; build it again for every attempt.

Key rotation: the config holds one or more secrets and every request carries
one ``v1,<signature>`` per secret, space-separated, as the spec allows
("multiple signatures ... delimited by spaces"). A receiver verifies if any of
them matches, so it can move from the old secret to the new one at its own pace
while both are configured; drop the old one once every receiver has moved.

SSRF: webhook URLs come from tenants, so with ``ssrf_guard`` (the default) an
address that is not public is refused unless ``allowed_networks`` opens it
(see :mod:`connectors.ssrf`). :class:`WebhookChannel` and :func:`make_client`
build a :class:`~connectors.ssrf.GuardedClient`, which checks each address
where it connects; given any other client, :func:`deliver` checks the host
before the request and the peer of every new connection.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
import httpx
import orjson
from standardwebhooks import Webhook

from connectors import ssrf
from connectors.transport import (
    classify_exception,
    header_value,
    retry_after_seconds,
    send,
    send_aiohttp,
)
from connectors.verdict import HttpRequest, InvalidMessage, Outcome, Verdict

__all__ = [
    "WebhookChannel",
    "WebhookConfig",
    "build_request",
    "classify",
    "classify_exception",
    "deliver",
    "make_client",
]

# Standard Webhooks §"Request timeouts": "A recommended request timeout value for
# webhooks is somewhere between 15 and 30s", so consumers have time to process
# and acknowledge; a shorter one turns slow-but-successful endpoints into retries.
REQUEST_TIMEOUT_S: Final = 15.0

# Standard Webhooks §"Payload size" recommends payloads "usually smaller than
# 20kb" but sets no technical limit. A rendered notification is well under that;
# this hard cap (12x the recommendation) only stops a runaway template or data map
# from pushing megabytes at a customer, and stays far below Kafka's default 1 MiB
# message size so such a message fails here, with a reason, not at the receiver.
MAX_PAYLOAD_BYTES: Final = 256 * 1024

# Standard Webhooks §"Symmetric vs asymmetric": an HMAC secret is random, "at
# least 24 bytes (192 bits, 512 maximum)", base64 encoded with a `whsec_` prefix.
_KEY_PREFIX: Final = "whsec_"
_KEY_BYTES: Final = range(24, 64 + 1)

# Standard Webhooks §"Signature scheme": the id and timestamp must not contain
# "." (the signed content is "{id}.{timestamp}.{body}"); header values must also
# be visible ASCII, so the id is limited to that.
_MESSAGE_ID = re.compile(r"[!-~]+")

_BODY_EXCERPT_CHARS: Final = 200


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    """How to sign and send webhooks. ``WebhookConfig(secret)`` signs with one secret;
    ``WebhookConfig(secrets=(new, old))`` signs with each while a key rotates."""

    secret: str = field(default="", repr=False)
    """The first signing secret, ``whsec_`` + base64 of 24 to 64 random bytes;
    filled from ``secrets`` when only those are given."""
    timeout_s: float = REQUEST_TIMEOUT_S
    user_agent: str = "Tidings-Webhooks/0.1"
    secrets: tuple[str, ...] = field(default=(), repr=False)
    """Every signing secret, ``secret`` first; ``(secret,)`` when not given."""
    ssrf_guard: bool = True
    """Refuse endpoints whose address is not public (see :mod:`connectors.ssrf`)."""
    allowed_networks: tuple[str, ...] = ()
    """CIDR ranges the guard lets through anyway, e.g. ``("127.0.0.0/8",)`` for local runs."""

    def __post_init__(self) -> None:
        secrets = tuple(self.secrets) or ((self.secret,) if self.secret else ())
        if not secrets:
            raise ValueError("a webhook secret is needed (secret or secrets)")
        if self.secret and self.secret != secrets[0]:
            raise ValueError("webhook secret must be the first of secrets when both are given")
        if len(set(secrets)) != len(secrets):
            raise ValueError("webhook secrets must not repeat")
        for secret in secrets:
            _check_secret(secret)
        # Frozen: the normalised values are set the way dataclasses set them.
        object.__setattr__(self, "secrets", secrets)
        object.__setattr__(self, "secret", secrets[0])
        object.__setattr__(self, "allowed_networks", tuple(self.allowed_networks))
        ssrf.address_policy(self.allowed_networks)  # raises ValueError for a bad CIDR
        if self.timeout_s <= 0:
            raise ValueError("timeout_s must be positive")

    @property
    def address_policy(self) -> ssrf.AddressPolicy:
        return ssrf.address_policy(self.allowed_networks)


def _check_secret(secret: str) -> None:
    if not secret.startswith(_KEY_PREFIX):
        raise ValueError(f"webhook secret must start with {_KEY_PREFIX!r}")
    try:
        key = base64.b64decode(secret.removeprefix(_KEY_PREFIX), validate=True)
    except binascii.Error as exc:
        raise ValueError("webhook secret is not valid base64 after 'whsec_'") from exc
    if len(key) not in _KEY_BYTES:
        raise ValueError(
            f"webhook secret decodes to {len(key)} bytes; Standard Webhooks needs 24 to 64"
        )


def build_request(message: Mapping[str, Any], config: WebhookConfig, *, now: int) -> HttpRequest:
    """The signed POST for one attempt at ``message``, made at ``now`` (Unix seconds).

    Raises :class:`InvalidMessage` when the message cannot be sent as it is.
    """
    url = _webhook_url(message)
    msg_id = str(message.get("delivery_id") or "")
    if not _MESSAGE_ID.fullmatch(msg_id) or "." in msg_id:
        raise InvalidMessage(f"delivery_id {msg_id!r} cannot be a webhook-id")

    body = _payload(message)
    if len(body) > MAX_PAYLOAD_BYTES:
        raise InvalidMessage(
            f"webhook payload is {len(body)} bytes; the limit is {MAX_PAYLOAD_BYTES}"
        )

    signed_at = datetime.datetime.fromtimestamp(now, tz=datetime.UTC)
    signature = _signatures(config.secrets, msg_id, signed_at, body.decode())
    return HttpRequest(
        method="POST",
        url=url,
        headers={
            "content-type": "application/json",
            "user-agent": config.user_agent,
            "webhook-id": msg_id,
            "webhook-timestamp": str(now),
            "webhook-signature": signature,
        },
        content=body,
    )


def _signatures(
    secrets: Sequence[str], msg_id: str, signed_at: datetime.datetime, body: str
) -> str:
    # Standard Webhooks §"Signature scheme": "the signature header can contain
    # multiple signatures ... delimited by spaces", each "v1,<base64>".
    return " ".join(Webhook(secret).sign(msg_id, signed_at, body) for secret in secrets)


def _webhook_url(message: Mapping[str, Any]) -> str:
    recipient = message.get("recipient") or {}
    url = recipient.get("webhook_url") if isinstance(recipient, Mapping) else None
    if not url or not isinstance(url, str):
        raise InvalidMessage("recipient has no webhook_url")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise InvalidMessage(f"webhook_url scheme {parts.scheme!r} is not http or https")
    if not parts.hostname:
        raise InvalidMessage("webhook_url has no host")
    return url


def _payload(message: Mapping[str, Any]) -> bytes:
    """The JSON body: Standard Webhooks' recommended ``{type, timestamp, data}`` shape."""
    try:
        recipient = message.get("recipient") or {}
        data: dict[str, Any] = {
            "notification_id": message["notification_id"],
            "delivery_id": message["delivery_id"],
            "tenant_id": message["tenant_id"],
            "user_id": recipient.get("user_id"),
            "category": message["category"],
            "priority": message["priority"],
            "title": message["title"],
            "body": message["body"],
            "data": message.get("data") or {},
            "attempt": message["attempt"],
        }
        if message.get("payload") is not None:
            # A template's rendered `webhook.payload` part: a JSON object it shapes itself.
            data["payload"] = orjson.loads(message["payload"])
            data["locale"] = message.get("locale")
        payload = {
            "type": f"notification.{message['category']}",
            "timestamp": _iso8601_utc(message["created_at"]),
            "data": data,
        }
        return orjson.dumps(payload)
    except KeyError as exc:
        raise InvalidMessage(f"message has no {exc.args[0]!r} field") from exc
    except orjson.JSONDecodeError as exc:
        raise InvalidMessage(f"payload is not JSON: {exc}") from exc
    except (TypeError, ValueError, OverflowError) as exc:  # JSONEncodeError is a TypeError
        raise InvalidMessage(f"message cannot be encoded as a webhook payload: {exc}") from exc


def _iso8601_utc(epoch_ms: int) -> str:
    # Integer arithmetic: a float division would round some milliseconds.
    moment = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC) + datetime.timedelta(
        milliseconds=int(epoch_ms)
    )
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def classify(
    status: int, headers: Mapping[str, str], body: bytes, *, now: float | None = None
) -> Verdict:
    """Verdict for the endpoint's answer, per Standard Webhooks §"Delivery success
    and failure". ``now`` only matters for a Retry-After given as an HTTP-date."""
    outcome, why = next(
        ((outcome, why) for low, high, outcome, why in _STATUS_RULES if low <= status <= high),
        (Outcome.REJECTED, "unexpected status"),
    )
    if outcome is Outcome.DELIVERED:
        return Verdict.delivered(status_code=status)
    if outcome is Outcome.ADDRESS_INVALID:
        return Verdict.address_invalid(why, status_code=status)
    reason = f"HTTP {status}: {why}"
    if 300 <= status <= 399 and (location := header_value(headers, "location")):
        reason += f" (Location: {location[:_BODY_EXCERPT_CHARS]})"
    if excerpt := body[: _BODY_EXCERPT_CHARS * 4].decode("utf-8", "replace").strip():
        reason += f": {excerpt[:_BODY_EXCERPT_CHARS]}"
    if outcome is Outcome.RETRY:
        return Verdict.retry(
            reason, retry_after=retry_after_seconds(headers, now=now), status_code=status
        )
    return Verdict.rejected(reason, status_code=status)


# (lowest status, highest status, outcome, why). The first matching row wins, so
# single codes come before the class they belong to. Sources: Standard Webhooks
# §"Delivery success and failure"; RFC 9110 §15 for what it leaves out.
_STATUS_RULES: Final[tuple[tuple[int, int, Outcome, str], ...]] = (
    # "No longer interested in receiving webhooks from this source. Sender should
    # disable the webhook endpoint."
    (410, 410, Outcome.ADDRESS_INVALID, "endpoint disabled (410 Gone)"),
    # RFC 9110 §15.5.9: the server gave up waiting for the request; it may be repeated.
    (408, 408, Outcome.RETRY, "request timeout"),
    # Rate limited: throttle, honouring Retry-After when given.
    (429, 429, Outcome.RETRY, "rate limited"),
    (200, 299, Outcome.DELIVERED, ""),
    # Not followed: the spec says following redirects "causes unnecessary load on
    # both the sender and the receiver" and recommends updating the URL instead.
    (300, 399, Outcome.REJECTED, "redirect not followed; update the webhook URL"),
    # Any other client error would repeat on every attempt.
    (400, 499, Outcome.REJECTED, "rejected by endpoint"),
    # Server errors, including 502 and 504 (endpoint under load), are transient;
    # Retry-After is honoured on any of them (the spec names 503 as an example).
    (500, 599, Outcome.RETRY, "endpoint error"),
)


async def deliver(
    client: httpx.AsyncClient,
    message: Mapping[str, Any],
    config: WebhookConfig,
    *,
    now: int | None = None,
) -> Verdict:
    """Build, sign and send one attempt at ``message``.

    With ``config.ssrf_guard``, an endpoint address the guard refuses comes back
    as ``address_invalid`` and a name that does not resolve as ``retry``. A
    client from :func:`make_client` checks addresses as it connects; for any
    other client the host is checked first and each new connection's peer too.

    Raises :class:`InvalidMessage` when the message cannot be sent; every answer
    and network failure comes back as a :class:`Verdict`.
    """
    attempt_at = int(time.time()) if now is None else now
    request = build_request(message, config, now=attempt_at)
    policy = config.address_policy
    if not config.ssrf_guard or (
        isinstance(client, ssrf.GuardedClient) and client.policy == policy
    ):
        return await send(client, request, config.timeout_s, classify)

    deadline = time.monotonic() + config.timeout_s
    try:
        host = httpx.URL(request.url).raw_host.decode("ascii")
        async with asyncio.timeout(config.timeout_s):
            await ssrf.check_host(host, policy)
    except (httpx.InvalidURL, TimeoutError, ssrf.AddressCheckFailed) as exc:
        return classify_exception(exc)
    remaining = max(deadline - time.monotonic(), 0.001)
    trace = ssrf.peer_check(host, policy)
    return await send(client, request, remaining, classify, extensions={"trace": trace})


def make_client(
    config: WebhookConfig,
    *,
    limits: httpx.Limits | None = None,
    resolve: ssrf.Resolve = ssrf.resolve_host,
) -> httpx.AsyncClient:
    """An HTTP client for webhook deliveries: guarded by ``config``'s address policy
    when ``config.ssrf_guard``. ``resolve`` replaces DNS (for tests)."""
    limits = ssrf.DEFAULT_LIMITS if limits is None else limits
    if config.ssrf_guard:
        return ssrf.GuardedClient(config.address_policy, resolve=resolve, limits=limits)
    return httpx.AsyncClient(limits=limits, follow_redirects=False)


class WebhookChannel:
    """The webhook channel: one signed Standard Webhooks POST per :meth:`send`.

    Without a ``client`` it makes its own (:func:`make_client`) and closes it in
    :meth:`aclose`; a client given to it is shared and left open.
    """

    def __init__(self, config: WebhookConfig, client: httpx.AsyncClient | None = None) -> None:
        self.config = config
        self._client = client
        # Without a client of its own, the channel sends over aiohttp directly
        # (transport.send_aiohttp), guarded as make_client's client would be.
        self._session: aiohttp.ClientSession | None = None

    async def send(self, message: Mapping[str, Any]) -> Verdict:
        """One attempt at ``message``; raises :class:`InvalidMessage` if it can never be sent."""
        if self._client is not None:
            return await deliver(self._client, message, self.config)
        config = self.config
        request = build_request(message, config, now=int(time.time()))
        if config.ssrf_guard:
            try:
                ssrf.check_literal(urlsplit(request.url).hostname or "", config.address_policy)
            except ssrf.AddressCheckFailed as exc:
                return classify_exception(exc)
        return await send_aiohttp(self._open(), request, config.timeout_s, classify)

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:  # made on the event loop that uses it
            limits, tls = ssrf.DEFAULT_LIMITS, httpx.create_ssl_context()
            self._session = (
                ssrf.guarded_session(self.config.address_policy, ssrf.resolve_host, tls, limits,
                                     auto_decompress=False)
                if self.config.ssrf_guard else
                aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(ssl=tls, limit=limits.max_connections or 0),
                    trust_env=False, auto_decompress=False)
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
