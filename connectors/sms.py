"""SMS connector: Twilio Programmable Messaging, the Messages resource of API 2010-04-01.

Pure core: :func:`build_request` turns a channel message into the form-encoded
``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` and :func:`classify` turns
Twilio's answer into a :class:`Verdict`. :class:`TwilioChannel` joins them through
the shared transport; :class:`FailoverSmsChannel` tries a second channel (another
Twilio account or region, or any SMS channel of the same shape) when the first one
answers with a retry.

"Delivered" means Twilio accepted the message (201, status ``queued``); whether the
handset got it is reported later to the StatusCallback URL, which carries the
delivery id as ``delivery_id`` so the callback can be matched to the delivery.
Twilio's Messages API has no idempotency key: a retry after a timeout, where
Twilio may have accepted the first request, can send the text twice.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import orjson
import phonenumbers

from connectors import transport
from connectors.sms_encoding import Encoding, segments, utf16_length
from connectors.verdict import HttpRequest, InvalidMessage, Outcome, Verdict

__all__ = [
    "BODY_MAX_CHARS",
    "Encoding",
    "FailoverSmsChannel",
    "SmsChannel",
    "TwilioChannel",
    "TwilioConfig",
    "build_request",
    "classify",
    "e164",
    "segments",
    "sms_text",
]

# Twilio, Messages resource, `Body`: "up to 1,600 characters"; longer is error 21617
# (https://www.twilio.com/docs/api/errors/21617), which also says emoji and other
# non-GSM characters count as more than one, so the limit is in UTF-16 code units.
BODY_MAX_CHARS: Final = 1600

# Twilio error 21609: a StatusCallback URL may be at most 4,000 characters and its
# host may not contain "_" (https://www.twilio.com/docs/api/errors/21609).
STATUS_CALLBACK_MAX_CHARS: Final = 4000

# Twilio answers the create call once the message is queued, normally well under a
# second; a bounded attempt turns a hung connection into a retry.
REQUEST_TIMEOUT_S: Final = 10.0

# Twilio SIDs are two letters and 32 hex digits ("What is a SID?",
# https://www.twilio.com/docs/glossary/what-is-a-sid): AC for accounts, MG for
# Messaging Services. The account SID is also a URL path segment, so it is checked.
_ACCOUNT_SID: Final = re.compile(r"AC[0-9a-fA-F]{32}")
_MESSAGING_SERVICE_SID: Final = re.compile(r"MG[0-9a-fA-F]{32}")
# Twilio, "Alphanumeric Sender ID" (https://www.twilio.com/docs/glossary/what-alphanumeric-sender-id):
# up to 11 ASCII letters, digits and spaces, and not digits only. Short codes are
# 5-6 digits in the US and Canada; other countries use 3 to 8, so that is allowed.
_ALPHANUMERIC_SENDER: Final = re.compile(r"(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}")
_SHORT_CODE: Final = re.compile(r"[0-9]{3,8}")

_API_VERSION: Final = "2010-04-01"
_EXCERPT_CHARS: Final = 200


@dataclass(frozen=True, slots=True)
class TwilioConfig:
    account_sid: str
    auth_token: str = field(repr=False)
    from_number: str | None = None
    """Sender: an E.164 Twilio number, a short code or an alphanumeric sender ID."""
    messaging_service_sid: str | None = None
    """Send through a Messaging Service (its sender pool) instead of, or as well as, From."""
    base_url: str = "https://api.twilio.com"
    status_callback: str | None = None
    """URL Twilio posts status changes to (sent, delivered, undelivered, failed)."""
    timeout_s: float = REQUEST_TIMEOUT_S
    user_agent: str = "Tidings-SMS/0.1"

    def __post_init__(self) -> None:
        if not _ACCOUNT_SID.fullmatch(self.account_sid):
            raise ValueError("account_sid must be 'AC' followed by 32 hex digits")
        if not self.auth_token:
            raise ValueError("auth_token is empty")
        if not self.from_number and not self.messaging_service_sid:
            # Twilio error 21603: a 'From' or 'MessagingServiceSid' is required.
            raise ValueError("set from_number or messaging_service_sid")
        if self.from_number and not _valid_sender(self.from_number):
            raise ValueError(
                f"from_number {self.from_number!r} is not an E.164 number, a short code "
                "or an alphanumeric sender ID"
            )
        if self.messaging_service_sid and not _MESSAGING_SERVICE_SID.fullmatch(
            self.messaging_service_sid
        ):
            raise ValueError("messaging_service_sid must be 'MG' followed by 32 hex digits")
        base = urlsplit(self.base_url)
        if base.scheme not in ("http", "https") or not base.hostname:
            raise ValueError(f"base_url {self.base_url!r} is not an http(s) URL")
        if self.status_callback is not None:
            callback = urlsplit(self.status_callback)
            if callback.scheme not in ("http", "https") or not callback.hostname:
                raise ValueError("status_callback must be an http(s) URL with a host")
            if "_" in callback.hostname:
                raise ValueError("status_callback host may not contain '_' (Twilio 21609)")
        if self.timeout_s <= 0:
            raise ValueError("timeout_s must be positive")


def _valid_sender(sender: str) -> bool:
    if sender.startswith("+"):
        try:
            return e164(sender) == sender
        except InvalidMessage:
            return False
    return bool(_SHORT_CODE.fullmatch(sender) or _ALPHANUMERIC_SENDER.fullmatch(sender))


# -- pure core ---------------------------------------------------------------------


def e164(phone: str) -> str:
    """``phone`` as an E.164 number (``+14155552671``); raises InvalidMessage otherwise.

    The number must carry its country code (a leading ``+``): a recipient's stored
    number has no region to guess from. Spaces, dashes and brackets are accepted and
    dropped; an extension is refused, since a text cannot be sent to one.
    """
    try:
        number = phonenumbers.parse(phone, None)
    except phonenumbers.NumberParseException as exc:
        raise InvalidMessage(f"phone {phone!r} is not an international number: {exc}") from exc
    if number.extension:
        raise InvalidMessage(f"phone {phone!r} has an extension; SMS cannot reach it")
    if not phonenumbers.is_valid_number(number):
        raise InvalidMessage(f"phone {phone!r} is not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def sms_text(message: Mapping[str, Any]) -> str:
    """The text sent: title and body on separate lines (either may be absent), stripped.

    Raises InvalidMessage when it is empty or longer than Twilio's 1,600 characters.
    """
    parts = [message.get("title"), message.get("body")]
    text = "\n".join(p for p in parts if isinstance(p, str) and p.strip()).strip()
    if not text:
        # Twilio error 21602: "Message body is required".
        raise InvalidMessage("message has no title or body to send as SMS")
    if (length := utf16_length(text)) > BODY_MAX_CHARS:
        raise InvalidMessage(
            f"SMS text is {length} characters; Twilio's limit is {BODY_MAX_CHARS}"
        )
    return text


def build_request(message: Mapping[str, Any], config: TwilioConfig) -> HttpRequest:
    """The Messages API create request for ``message``; raises InvalidMessage if unsendable."""
    recipient = message.get("recipient")
    phone = recipient.get("phone") if isinstance(recipient, Mapping) else None
    if not phone or not isinstance(phone, str):
        raise InvalidMessage("recipient has no phone")
    form = [("To", e164(phone))]
    if config.from_number:
        form.append(("From", config.from_number))
    if config.messaging_service_sid:
        form.append(("MessagingServiceSid", config.messaging_service_sid))
    form.append(("Body", sms_text(message)))
    if config.status_callback:
        form.append(("StatusCallback", _status_callback(config.status_callback, message)))

    credentials = f"{config.account_sid}:{config.auth_token}".encode()
    return HttpRequest(
        method="POST",
        url=(
            f"{config.base_url.rstrip('/')}/{_API_VERSION}/Accounts/"
            f"{config.account_sid}/Messages.json"
        ),
        headers={
            "authorization": "Basic " + base64.b64encode(credentials).decode("ascii"),
            "content-type": "application/x-www-form-urlencoded",
            "accept": "application/json",
            "user-agent": config.user_agent,
        },
        content=urlencode(form).encode("ascii"),
    )


def _status_callback(url: str, message: Mapping[str, Any]) -> str:
    """The configured callback URL with the delivery id added to its query."""
    delivery_id = message.get("delivery_id")
    if not delivery_id or not isinstance(delivery_id, str):
        raise InvalidMessage("message has no delivery_id for the status callback")
    parts = urlsplit(url)
    query = urlencode([*parse_qsl(parts.query), ("delivery_id", delivery_id)])
    full = urlunsplit(parts._replace(query=query))
    if len(full) > STATUS_CALLBACK_MAX_CHARS:
        raise InvalidMessage(
            f"StatusCallback URL is {len(full)} characters; Twilio allows "
            f"{STATUS_CALLBACK_MAX_CHARS}"
        )
    return full


def classify(
    status: int, headers: Mapping[str, str], body: bytes, *, now: float | None = None
) -> Verdict:
    """Verdict for Twilio's answer to a create request.

    Errors come as ``{"code": 21211, "message": ..., "more_info": ..., "status": 400}``
    (Twilio API responses, https://www.twilio.com/docs/usage/twilios-response); a
    row for the code wins over the row for the HTTP status. ``now`` only matters for
    a Retry-After given as an HTTP-date.
    """
    document = _json_object(body)
    if 200 <= status <= 299:
        sid = document.get("sid")
        return Verdict(
            Outcome.DELIVERED, f"sid={sid}" if isinstance(sid, str) else "", status_code=status
        )
    code = document.get("code") if isinstance(document.get("code"), int) else None
    outcome, why = _rule_for(status, code)
    reason = f"HTTP {status}: {why}"
    if code is not None:
        reason += f"; Twilio {code}"
    detail = document.get("message")
    if not isinstance(detail, str):
        detail = body[: _EXCERPT_CHARS * 4].decode("utf-8", "replace").strip()
    if detail:
        reason += f": {detail[:_EXCERPT_CHARS]}"
    if outcome is Outcome.RETRY:
        return Verdict.retry(
            reason, retry_after=transport.retry_after_seconds(headers, now=now), status_code=status
        )
    if outcome is Outcome.ADDRESS_INVALID:
        return Verdict.address_invalid(reason, status_code=status)
    return Verdict.rejected(reason, status_code=status)


# (Twilio error code, outcome, why). Each from https://www.twilio.com/docs/api/errors/<code>.
_CODE_RULES: Final[tuple[tuple[int, Outcome, str], ...]] = (
    # "Too many requests": over the account's API concurrency; "Requests that receive
    # 429 responses aren't processed and are safe to retry after backing off."
    (20429, Outcome.RETRY, "rate limited"),
    # "This 'From' number has exceeded the maximum number of queued messages" (10 hours
    # of its send rate): the queue drains, so a later attempt can succeed.
    (21611, Outcome.RETRY, "sender queue full"),
    # "Attempt to send to unsubscribed recipient": the recipient replied STOP and can
    # only be texted again after replying START. The address no longer takes messages.
    (21610, Outcome.ADDRESS_INVALID, "recipient unsubscribed (STOP)"),
    # "The 'To' number is not a valid phone number".
    (21211, Outcome.REJECTED, "invalid 'To' number"),
    # "'To' number is not a valid mobile number": a landline, or an unknown format.
    (21614, Outcome.REJECTED, "'To' is not a mobile number"),
    # "Permission Denied" / "Authenticate": wrong Account SID or Auth Token, a deleted
    # token, a suspended account. Every message would fail until the config is fixed.
    (20003, Outcome.REJECTED, "authentication failed"),
    # "403 Forbidden": the account is suspended or closed.
    (20403, Outcome.REJECTED, "account forbidden"),
    # "A 'From' or 'MessagingServiceSid' parameter is required" / the From number is not
    # a message-capable number of this account / the Messaging Service does not exist.
    (21603, Outcome.REJECTED, "no sender"),
    (21606, Outcome.REJECTED, "'From' is not a message-capable number of this account"),
    (21701, Outcome.REJECTED, "Messaging Service does not exist"),
    # "Permission to send an SMS has not been enabled for the region indicated by the
    # 'To' number" (Geo Permissions), and the 'To' number cannot be reached from
    # this sender (21612).
    (21408, Outcome.REJECTED, "region not enabled for this account"),
    (21612, Outcome.REJECTED, "'To' not reachable from this sender"),
    # "The concatenated message body exceeds the 1600 character limit".
    (21617, Outcome.REJECTED, "body too long"),
)

# (lowest status, highest status, outcome, why) for answers without a known code.
# Twilio, "Twilio's response": 2xx success, 4xx client errors, 5xx Twilio errors.
_STATUS_RULES: Final[tuple[tuple[int, int, Outcome, str], ...]] = (
    (429, 429, Outcome.RETRY, "rate limited"),
    # RFC 9110 §15.5.9: the server gave up waiting for the request; it may be repeated.
    (408, 408, Outcome.RETRY, "request timeout"),
    # Redirects are not followed: the API URL is configuration, a redirect means it is wrong.
    (300, 399, Outcome.REJECTED, "redirect not followed; check base_url"),
    (400, 499, Outcome.REJECTED, "rejected by Twilio"),
    # 500 (20500 "Internal server error"), 503 (20503 "Service unavailable") and gateway
    # errors on the way to Twilio are transient.
    (500, 599, Outcome.RETRY, "Twilio server error"),
)


def _rule_for(status: int, code: int | None) -> tuple[Outcome, str]:
    for row_code, outcome, why in _CODE_RULES:
        if row_code == code:
            return outcome, why
    for low, high, outcome, why in _STATUS_RULES:
        if low <= status <= high:
            return outcome, why
    return Outcome.REJECTED, "unexpected status"


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


# -- channels ----------------------------------------------------------------------


class SmsChannel(Protocol):
    """The shape every SMS channel has; what :class:`FailoverSmsChannel` composes."""

    async def send(self, message: Mapping[str, Any]) -> Verdict: ...

    async def aclose(self) -> None: ...


class TwilioChannel:
    """Sends one attempt at a message through Twilio's Messages API.

    With no ``client`` the channel makes its own and closes it in :meth:`aclose`;
    a client passed in belongs to the caller and is left open.
    """

    def __init__(self, config: TwilioConfig, client: httpx.AsyncClient | None = None) -> None:
        self.config = config
        self._owns_client = client is None
        self._client = client if client is not None else httpx.AsyncClient()

    async def send(self, message: Mapping[str, Any]) -> Verdict:
        """Raises InvalidMessage when the message cannot be sent; otherwise a Verdict."""
        request = build_request(message, self.config)
        return await transport.send(self._client, request, self.config.timeout_s, classify)

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()


class FailoverSmsChannel:
    """Tries each channel in order, moving on only when one answers with a retry.

    A delivered, rejected or address-invalid verdict is final and returned as it is;
    only retry-class verdicts (rate limits, Twilio outages, network failures) send
    the message to the next channel. When every channel asks for a retry, the
    verdict is a retry carrying each reason and the shortest wait any of them allows.
    InvalidMessage from the first channel is not caught: the text is the same for all.

    A timeout on one channel may hide a message it accepted, so failing over can
    send a text twice; that is the price of not losing it.
    """

    def __init__(self, channels: Sequence[SmsChannel]) -> None:
        if not channels:
            raise ValueError("FailoverSmsChannel needs at least one channel")
        self._channels = tuple(channels)

    async def send(self, message: Mapping[str, Any]) -> Verdict:
        retries: list[Verdict] = []
        for index, channel in enumerate(self._channels):
            verdict = await channel.send(message)
            if verdict.outcome is not Outcome.RETRY:
                if not retries:
                    return verdict
                prefix = f"channel {index + 1} after {index} retried"
                reason = f"{prefix}: {verdict.reason}" if verdict.reason else prefix
                return Verdict(verdict.outcome, reason, verdict.retry_after, verdict.status_code)
            retries.append(verdict)
        waits = [v.retry_after for v in retries]
        return Verdict.retry(
            "; ".join(f"channel {i + 1}: {v.reason}" for i, v in enumerate(retries)),
            retry_after=None if None in waits else min(w for w in waits if w is not None),
            status_code=retries[-1].status_code,
        )

    async def aclose(self) -> None:
        for channel in self._channels:
            await channel.aclose()
