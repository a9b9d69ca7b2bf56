"""Push connector: Apple Push Notification service over HTTP/2, with token-based auth.

Apple docs this follows (developer.apple.com/documentation/usernotifications/):
"Sending notification requests to APNs" (request and headers), "Handling
notification responses from APNs" (status codes and reasons), "Establishing a
token-based connection to APNs" (the provider JWT) and "Generating a remote
notification" (payload).

Pure core: :func:`build_request` turns a channel message into the POST for one
device, :func:`classify` turns APNs' answer into a :class:`Verdict`, and
:func:`current_token` / :func:`token_after_expiry` decide when to sign a new
provider token. :class:`ApnsChannel` joins them over its own HTTP/2 client.

Every attempt carries ``apns-id``, a UUID derived from the delivery id, so a
repeat of the same delivery is recognisable in Apple's delivery logs and to the
app, which also gets ``delivery_id`` in the payload.
"""

from __future__ import annotations

import datetime
import re
import ssl
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import httpx
import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from connectors.transport import header_value, retry_after_seconds, send
from connectors.verdict import HttpRequest, InvalidMessage, Outcome, Verdict

__all__ = [
    "ApnsChannel",
    "ApnsConfig",
    "ProviderToken",
    "build_request",
    "classify",
    "current_token",
    "mint_provider_token",
    "token_after_expiry",
]

PRODUCTION_URL: Final = "https://api.push.apple.com"
SANDBOX_URL: Final = "https://api.sandbox.push.apple.com"

# "Generating a remote notification": "the maximum size is 4 KB (4096 bytes)"
# for regular remote notifications (VoIP allows 5 KB; we do not send VoIP).
MAX_PAYLOAD_BYTES: Final = 4096
# "Sending notification requests": apns-collapse-id "can't exceed 64 bytes".
MAX_COLLAPSE_ID_BYTES: Final = 64
# "Establishing a token-based connection": APNs rejects a token whose iat is
# more than one hour old (ExpiredProviderToken), and refreshing "more than once
# every 20 minutes" earns TooManyProviderTokenUpdates. 50 minutes sits between.
TOKEN_MAX_AGE_S: Final = 60 * 60
TOKEN_MIN_REFRESH_S: Final = 20 * 60
TOKEN_REFRESH_AFTER_S: Final = 50 * 60
# apns-priority: 10 sends now, 5 lets the device save power; "Pushing background
# updates to your App": background notifications must use 5.
PRIORITY_IMMEDIATE: Final = "10"
PRIORITY_POWER_CONSIDERATE: Final = "5"
_IMMEDIATE_PRIORITIES: Final = frozenset({"high", "critical"})

# Our choice, not Apple's: a day is long enough to reach a phone that was off
# overnight and short enough that a stale notification is not shown days later.
DEFAULT_TTL_S: Final = 24 * 60 * 60
# APNs answers in milliseconds; this only bounds a stuck connection.
REQUEST_TIMEOUT_S: Final = 10.0

# Device tokens are opaque bytes, sent as hex; Apple warns their length may
# change, so only a lower bound (today's 32 bytes) is checked.
_DEVICE_TOKEN: Final = re.compile(r"[0-9a-fA-F]{64,}")
_APNS_PREFIX: Final = "apns:"
# Team and key ids are the 10-character identifiers shown in the developer account.
_APPLE_ID: Final = re.compile(r"[A-Z0-9]{10}")
# Header values must be visible ASCII or space: no CR/LF injection, nothing
# httpx would have to guess an encoding for.
_HEADER_TEXT: Final = re.compile(r"[ -~]*")
# Fixed namespace for apns-id = uuid5(namespace, delivery_id); never change it,
# or repeats of in-flight deliveries would get new ids.
_APNS_ID_NAMESPACE: Final = uuid.UUID("6f1b2a1e-5d0c-4c59-9a35-7a4f0e0b1a70")
_RESERVED_PAYLOAD_KEYS: Final = frozenset({"aps", "delivery_id"})


@dataclass(frozen=True, slots=True)
class ApnsConfig:
    team_id: str
    key_id: str
    private_key: str = field(repr=False)
    """PEM text of the .p8 signing key (EC P-256) downloaded from the developer account."""
    topic: str
    """The app's bundle id."""
    base_url: str = PRODUCTION_URL
    ttl_s: int = DEFAULT_TTL_S
    """Seconds APNs keeps trying an offline device (apns-expiration); 0 means try once."""
    ca_file: str | None = None
    """CA bundle to trust instead of the system CAs (the emulator's CA); None: system CAs."""
    timeout_s: float = REQUEST_TIMEOUT_S

    def __post_init__(self) -> None:
        for name in ("team_id", "key_id"):
            if not _APPLE_ID.fullmatch(getattr(self, name)):
                raise ValueError(f"apns {name} must be 10 upper-case letters or digits")
        try:
            key = serialization.load_pem_private_key(self.private_key.encode(), password=None)
        except (ValueError, TypeError) as exc:
            raise ValueError("apns private_key is not an unencrypted PEM private key") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise ValueError("apns private_key must be an EC P-256 key (ES256)")
        if not self.topic or not _HEADER_TEXT.fullmatch(self.topic):
            raise ValueError("apns topic must be the app's bundle id")
        if not self.base_url.startswith(("https://", "http://")):
            raise ValueError("apns base_url must be an http(s) URL")
        if self.ttl_s < 0:
            raise ValueError("ttl_s must not be negative")
        if self.timeout_s <= 0:
            raise ValueError("timeout_s must be positive")


# -- provider token ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProviderToken:
    value: str = field(repr=False)
    issued_at: int


def mint_provider_token(config: ApnsConfig, *, now: int) -> ProviderToken:
    """A new ES256 provider token: header ``{alg, kid}``, claims ``{iss, iat}``."""
    value = jwt.encode(
        {"iss": config.team_id, "iat": now},
        config.private_key,
        algorithm="ES256",
        # Apple's documented header is exactly {alg, kid}; drop PyJWT's default "typ".
        headers={"kid": config.key_id, "typ": None},
    )
    return ProviderToken(value, now)


def current_token(cached: ProviderToken | None, config: ApnsConfig, *, now: int) -> ProviderToken:
    """``cached`` while it is younger than :data:`TOKEN_REFRESH_AFTER_S`, else a new token."""
    if cached is not None and now - cached.issued_at < TOKEN_REFRESH_AFTER_S:
        return cached
    return mint_provider_token(config, now=now)


def token_after_expiry(
    cached: ProviderToken, rejected: ProviderToken, config: ApnsConfig, *, now: int
) -> ProviderToken:
    """The token to retry with after APNs called ``rejected`` expired.

    When concurrent sends all hit ExpiredProviderToken, only the first signs a
    new token; the rest find ``cached`` already replaced and reuse it, so one
    expiry costs one refresh, not one per in-flight notification.
    """
    if cached is not rejected:
        return cached
    return mint_provider_token(config, now=now)


# -- request -----------------------------------------------------------------------


def build_request(
    message: Mapping[str, Any], config: ApnsConfig, *, token: str, now: int
) -> HttpRequest:
    """The POST that pushes ``message`` to its one device, signed with provider ``token``.

    ``now`` (Unix seconds) anchors apns-expiration. Raises :class:`InvalidMessage`
    when the message cannot be sent as it is.
    """
    device_token = _device_token(message)
    delivery_id = message.get("delivery_id")
    if not isinstance(delivery_id, str) or not delivery_id:
        raise InvalidMessage("message has no delivery_id")
    data = message.get("data") or {}
    if reserved := _RESERVED_PAYLOAD_KEYS & data.keys():
        raise InvalidMessage(f"data keys {sorted(reserved)} are reserved in the APNs payload")

    title, body = message.get("title"), message.get("body")
    if title or body:
        push_type = "alert"
        alert = {k: v for k, v in (("title", title), ("body", body)) if v}
        aps: dict[str, Any] = {"alert": alert}
        if sound := data.get("sound"):
            aps["sound"] = sound
        priority = (
            PRIORITY_IMMEDIATE
            if message.get("priority") in _IMMEDIATE_PRIORITIES
            else PRIORITY_POWER_CONSIDERATE
        )
    else:
        # "Pushing background updates": content-available 1 and no alert, sound or badge.
        push_type, aps = "background", {"content-available": 1}
        priority = PRIORITY_POWER_CONSIDERATE

    try:
        payload = orjson.dumps({"aps": aps, "delivery_id": delivery_id, **data})
    except TypeError as exc:  # JSONEncodeError is a TypeError
        raise InvalidMessage(f"message cannot be encoded as an APNs payload: {exc}") from exc
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise InvalidMessage(
            f"APNs payload is {len(payload)} bytes; the limit is {MAX_PAYLOAD_BYTES}"
        )

    headers = {
        "authorization": f"bearer {token}",
        "apns-topic": config.topic,
        "apns-push-type": push_type,
        "apns-priority": priority,
        "apns-expiration": str(now + config.ttl_s if config.ttl_s else 0),
        "apns-id": apns_id_for(delivery_id),
        "content-type": "application/json",
    }
    if collapse_id := data.get("collapse_id"):
        headers["apns-collapse-id"] = _collapse_id(collapse_id)
    return HttpRequest(
        method="POST",
        url=f"{config.base_url.rstrip('/')}/3/device/{device_token}",
        headers=headers,
        content=payload,
    )


def apns_id_for(delivery_id: str) -> str:
    """The canonical (8-4-4-4-12, lower-case) UUID that every attempt at a delivery uses."""
    return str(uuid.uuid5(_APNS_ID_NAMESPACE, delivery_id))


def _device_token(message: Mapping[str, Any]) -> str:
    recipient = message.get("recipient") or {}
    tokens = recipient.get("push_tokens") if isinstance(recipient, Mapping) else None
    if not tokens:
        raise InvalidMessage("recipient has no push token")
    if len(tokens) != 1:
        raise InvalidMessage(f"recipient has {len(tokens)} push tokens; an APNs send takes one")
    token = str(tokens[0])
    if token.startswith("fcm:"):
        raise InvalidMessage("push token is an FCM token, not an APNs device token")
    token = token.removeprefix(_APNS_PREFIX)
    if not _DEVICE_TOKEN.fullmatch(token):
        raise InvalidMessage("push token is not an APNs device token (64+ hex digits)")
    return token


def _collapse_id(value: str) -> str:
    if not _HEADER_TEXT.fullmatch(value):
        raise InvalidMessage("collapse_id must be printable ASCII")
    if len(value) > MAX_COLLAPSE_ID_BYTES:
        raise InvalidMessage(
            f"collapse_id is {len(value)} bytes; APNs allows {MAX_COLLAPSE_ID_BYTES}"
        )
    return value


# -- response ----------------------------------------------------------------------


def classify(
    status: int, headers: Mapping[str, str], body: bytes, *, now: float | None = None
) -> Verdict:
    """Verdict for APNs' answer: the status and the JSON body's ``reason``."""
    answer = _json_object(body)
    reason = answer.get("reason") if isinstance(answer.get("reason"), str) else None
    outcome, why = _RULES.get((status, reason)) or _RULES.get((status, None)) or _fallback(status)
    if outcome is Outcome.DELIVERED:
        return Verdict.delivered(status_code=status)
    text = f"{reason or 'no reason'} (HTTP {status}): {why}"
    if isinstance(stamp := answer.get("timestamp"), int):
        when = datetime.datetime.fromtimestamp(stamp / 1000, tz=datetime.UTC)
        text += f"; inactive since {when.isoformat(timespec='seconds')}"
    if apns_id := header_value(headers, "apns-id"):
        text += f" [apns-id {apns_id}]"
    if outcome is Outcome.ADDRESS_INVALID:
        return Verdict.address_invalid(text, status_code=status)
    if outcome is Outcome.RETRY:
        return Verdict.retry(
            text, retry_after=retry_after_seconds(headers, now=now), status_code=status
        )
    return Verdict.rejected(text, status_code=status)


def _fallback(status: int) -> tuple[Outcome, str]:
    if 500 <= status <= 599:
        return Outcome.RETRY, "APNs server error"
    return Outcome.REJECTED, "unexpected APNs answer"


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


_D, _R, _X, _A = Outcome.DELIVERED, Outcome.RETRY, Outcome.REJECTED, Outcome.ADDRESS_INVALID

# (status, reason) -> (outcome, why). Reason None is the row for any other reason
# with that status. Source: "Handling notification responses from APNs", the table
# of status codes and the table of reason values; the quoted text is Apple's.
_RULES: Final[dict[tuple[int, str | None], tuple[Outcome, str]]] = {
    (200, None): (_D, ""),
    # "The specified device token is invalid ... or doesn't match the environment."
    (400, "BadDeviceToken"): (_A, "device token is invalid for this environment"),
    # "The device token doesn't match the specified topic."
    (400, "DeviceTokenNotForTopic"): (_A, "device token belongs to another app"),
    # "Idle timeout." The connection sat idle; a new attempt opens a new one.
    (400, "IdleTimeout"): (_R, "connection idle timeout"),
    # BadCollapseId, BadExpirationDate, BadMessageId, BadPriority, BadTopic,
    # DuplicateHeaders, InvalidPushType, MissingDeviceToken, MissingTopic,
    # PayloadEmpty, TopicDisallowed: the request itself is wrong every time.
    (400, None): (_X, "bad request"),
    # "The provider token is stale and a new token should be generated." The
    # channel has already re-signed and retried once before this verdict.
    (403, "ExpiredProviderToken"): (_R, "provider token expired"),
    # "The provider token is not valid, or the token signature can't be verified."
    (403, "InvalidProviderToken"): (_X, "provider token invalid; check team id, key id and key"),
    # MissingProviderToken, BadCertificate, BadCertificateEnvironment, Forbidden,
    # UnrelatedKeyIdInToken, BadEnvironmentKeyInToken: our credentials are wrong.
    (403, None): (_X, "APNs refused our credentials"),
    # BadPath: "The request contained an invalid :path value."
    (404, None): (_X, "bad request path"),
    # MethodNotAllowed: "The specified :method value isn't POST."
    (405, None): (_X, "method not allowed"),
    # Unregistered: "The device token is inactive for the specified topic";
    # ExpiredToken: "The device token has expired." Stop sending to it.
    (410, None): (_A, "device token is no longer active"),
    # PayloadTooLarge: "The message payload is too large."
    (413, None): (_X, "payload too large"),
    # TooManyRequests: "Too many requests were made consecutively to the same
    # device token"; TooManyProviderTokenUpdates: token updated too often.
    (429, None): (_R, "throttled by APNs"),
    # InternalServerError: "An internal server error occurred."
    (500, None): (_R, "APNs internal error"),
    # ServiceUnavailable: "The service is unavailable."; Shutdown: "The APNs server
    # is shutting down." A new connection reaches another server.
    (503, None): (_R, "APNs unavailable"),
}


def _is_expired_provider_token(verdict: Verdict) -> bool:
    return verdict.status_code == 403 and verdict.reason.startswith("ExpiredProviderToken ")


# -- channel -----------------------------------------------------------------------


class ApnsChannel:
    """Sends one notification per :meth:`send` over a long-lived HTTP/2 connection.

    ``client`` is ignored: the shared client speaks HTTP/1.1 and APNs speaks only
    HTTP/2 ("APNs requires the use of HTTP/2"), so the channel keeps its own.
    """

    def __init__(self, config: ApnsConfig, client: httpx.AsyncClient | None = None) -> None:
        del client
        self._config = config
        self._client = httpx.AsyncClient(
            http2=True,
            verify=ssl.create_default_context(cafile=config.ca_file) if config.ca_file else True,
            timeout=config.timeout_s,
        )
        self._token: ProviderToken | None = None

    async def send(self, message: Mapping[str, Any]) -> Verdict:
        """One attempt at ``message``; an expired provider token is re-signed and
        retried once within the attempt.

        Raises :class:`InvalidMessage` when the message cannot be sent.
        """
        now = int(time.time())
        token = self._token = current_token(self._token, self._config, now=now)
        verdict = await self._post(message, token, now)
        if _is_expired_provider_token(verdict):
            now = int(time.time())
            token = self._token = token_after_expiry(self._token, token, self._config, now=now)
            verdict = await self._post(message, token, now)
        return verdict

    async def _post(self, message: Mapping[str, Any], token: ProviderToken, now: int) -> Verdict:
        request = build_request(message, self._config, token=token.value, now=now)
        return await send(self._client, request, self._config.timeout_s, classify)

    async def aclose(self) -> None:
        await self._client.aclose()
