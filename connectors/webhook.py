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
"""

from __future__ import annotations

import base64
import binascii
import datetime
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

import httpx
import orjson
from standardwebhooks import Webhook

from connectors.transport import classify_exception, header_value, retry_after_seconds, send
from connectors.verdict import HttpRequest, InvalidMessage, Outcome, Verdict

__all__ = [
    "WebhookConfig",
    "build_request",
    "classify",
    "classify_exception",
    "deliver",
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
    secret: str = field(repr=False)
    """Signing secret, ``whsec_`` + base64 of 24 to 64 random bytes."""
    timeout_s: float = REQUEST_TIMEOUT_S
    user_agent: str = "Tidings-Webhooks/0.1"

    def __post_init__(self) -> None:
        if not self.secret.startswith(_KEY_PREFIX):
            raise ValueError(f"webhook secret must start with {_KEY_PREFIX!r}")
        try:
            key = base64.b64decode(self.secret.removeprefix(_KEY_PREFIX), validate=True)
        except binascii.Error as exc:
            raise ValueError("webhook secret is not valid base64 after 'whsec_'") from exc
        if len(key) not in _KEY_BYTES:
            raise ValueError(
                f"webhook secret decodes to {len(key)} bytes; Standard Webhooks needs 24 to 64"
            )
        if self.timeout_s <= 0:
            raise ValueError("timeout_s must be positive")


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
    signature = Webhook(config.secret).sign(msg_id, signed_at, body.decode())
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
        payload = {
            "type": f"notification.{message['category']}",
            "timestamp": _iso8601_utc(message["created_at"]),
            "data": {
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
            },
        }
        return orjson.dumps(payload)
    except KeyError as exc:
        raise InvalidMessage(f"message has no {exc.args[0]!r} field") from exc
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

    Raises :class:`InvalidMessage` when the message cannot be sent; every answer
    and network failure comes back as a :class:`Verdict`.
    """
    attempt_at = int(time.time()) if now is None else now
    request = build_request(message, config, now=attempt_at)
    return await send(client, request, config.timeout_s, classify)
