"""Push connector: Firebase Cloud Messaging HTTP v1 (firebase.google.com/docs/reference/fcm/rest).

Pure core: :func:`encode_message` turns a channel message into the
``messages:send`` body, :func:`build_request` adds the URL and bearer token,
and :func:`classify` turns FCM's answer into a :class:`Verdict`. Access tokens
come from the service-account JWT grant in :mod:`connectors.oauth`.
:class:`FcmChannel` is the thin async edge: it caches the token, sends, and on
a 401 fetches a new token and repeats the send once.

One message goes to one device token (the router fans out per token). The
delivery id travels in ``data.delivery_id``, as the Android notification
``tag`` and as APNs' ``apns-collapse-id``, so a repeated attempt replaces the
notification already shown instead of showing a second one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote, urlsplit

import httpx
import orjson

from connectors.oauth import (
    FIREBASE_MESSAGING_SCOPE,
    AccessToken,
    Response,
    ServiceAccount,
    TokenCache,
    TokenFlow,
    load_service_account,
    token_flow,
)
from connectors.transport import retry_after_seconds, send
from connectors.verdict import HttpRequest, InvalidMessage, Outcome, Verdict

__all__ = [
    "FcmChannel",
    "FcmConfig",
    "build_request",
    "classify",
    "encode_message",
    "needs_fresh_token",
]

FCM_BASE_URL: Final = "https://fcm.googleapis.com"
# Our own bound on one HTTP exchange (token or send); FCM publishes none. The
# Firebase Admin SDKs wait up to 120 s, far longer than a worker should hold one attempt.
REQUEST_TIMEOUT_S: Final = 10.0

# FCM "Message types": "Maximum payload for both message types is 4096 bytes";
# ErrorCode INVALID_ARGUMENT: the total size of the payload data, "both the keys and
# the values", must not exceed 4096 bytes. Measured here as the compact JSON of the
# notification and data objects, which errs on the safe side of FCM's own count.
MAX_PAYLOAD_BYTES: Final = 4096

# FCM ErrorCode INVALID_ARGUMENT, "Invalid data key": keys FCM uses internally.
_RESERVED_DATA_KEYS: Final = frozenset({"from", "gcm"})
_RESERVED_DATA_PREFIX: Final = "google"

# Apple, "Sending notification requests to APNs": apns-collapse-id "must not exceed 64 bytes".
_APNS_COLLAPSE_ID_BYTES: Final = 64

# Our priority -> (AndroidConfig.priority, apns-priority). FCM "Setting the priority
# of a message": high wakes a dozing device at once and is for time-sensitive,
# user-visible messages; normal may be delayed to save battery. APNs: 10 sends
# immediately, 5 "based on power considerations on the user's device".
_PRIORITIES: Final[Mapping[str, tuple[str, str]]] = {
    "low": ("normal", "5"),
    "normal": ("normal", "5"),
    "high": ("high", "10"),
    "critical": ("high", "10"),
}

_FCM_ADDRESS_PREFIX: Final = "fcm:"
_APNS_ADDRESS_PREFIX: Final = "apns:"
# Registration tokens are URL-safe text (letters, digits, '-', '_', ':'); anything
# outside visible ASCII cannot be one.
_DEVICE_TOKEN = re.compile(r"[!-~]+")

_FCM_ERROR_TYPE: Final = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
_EXCERPT_CHARS: Final = 200


@dataclass(frozen=True, slots=True)
class FcmConfig:
    # hash=False: a decoded key file is a dict, which would make the config unhashable.
    service_account: Mapping[str, Any] | str | os.PathLike[str] = field(repr=False, hash=False)
    """The service-account key file: decoded, as JSON text, or a path to it."""
    base_url: str = FCM_BASE_URL
    token_uri: str | None = None
    """Token endpoint; None uses the service account's ``token_uri``."""
    timeout_s: float = REQUEST_TIMEOUT_S
    user_agent: str = "Tidings-FCM/0.1"
    account: ServiceAccount = field(init=False, repr=False, compare=False)
    """The validated service account, parsed once from :attr:`service_account`."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "account", load_service_account(self.service_account))
        for name, url in (("base_url", self.base_url), ("token_uri", self.token_uri)):
            if url is not None and (
                urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname
            ):
                raise ValueError(f"{name} {url!r} is not an http(s) URL")
        if self.timeout_s <= 0:
            raise ValueError("timeout_s must be positive")

    @property
    def token_endpoint(self) -> str:
        return self.token_uri or self.account.token_uri


# -- the request ---------------------------------------------------------------------


def build_request(
    message: Mapping[str, Any], config: FcmConfig, *, access_token: str
) -> HttpRequest:
    """The ``messages:send`` POST for ``message``, authorised by ``access_token``.

    Raises :class:`InvalidMessage` when the message cannot be sent as it is.
    """
    return _send_request(config, encode_message(message), access_token)


def _send_request(config: FcmConfig, body: bytes, access_token: str) -> HttpRequest:
    project = quote(config.account.project_id, safe="")
    return HttpRequest(
        method="POST",
        url=f"{config.base_url.rstrip('/')}/v1/projects/{project}/messages:send",
        headers={
            "authorization": f"Bearer {access_token}",
            "content-type": "application/json; charset=UTF-8",
            "user-agent": config.user_agent,
        },
        content=body,
    )


def encode_message(message: Mapping[str, Any]) -> bytes:
    """The JSON body ``{"message": {...}}`` for one device; raises :class:`InvalidMessage`."""
    delivery_id = _required_str(message, "delivery_id")
    notification_id = _required_str(message, "notification_id")
    priority = message.get("priority")
    if not isinstance(priority, str) or priority not in _PRIORITIES:
        raise InvalidMessage(f"priority {priority!r} is not one we send")
    android_priority, apns_priority = _PRIORITIES[priority]

    fcm: dict[str, Any] = {"token": _device_token(message)}
    notification = {
        key: value for key in ("title", "body") if (value := _optional_str(message, key))
    }
    if notification:
        fcm["notification"] = notification
    # Ours last: the ids identify the delivery, whatever the producer's data says.
    fcm["data"] = {
        **_data(message),
        "delivery_id": delivery_id,
        "notification_id": notification_id,
    }
    size = len(orjson.dumps({k: fcm[k] for k in ("notification", "data") if k in fcm}))
    if size > MAX_PAYLOAD_BYTES:
        raise InvalidMessage(f"FCM payload is {size} bytes; the limit is {MAX_PAYLOAD_BYTES}")

    android: dict[str, Any] = {"priority": android_priority}
    metadata = message.get("metadata") or {}
    # A producer opts into FCM collapsing (newest replaces older undelivered ones
    # with the same key) through metadata; FCM keeps at most four per device.
    if isinstance(metadata, Mapping) and (collapse_key := metadata.get("collapse_key")):
        android["collapse_key"] = str(collapse_key)
    if notification:
        # AndroidNotification.tag: a notification with the same tag replaces the one shown.
        android["notification"] = {"tag": delivery_id}
        apns_headers = {"apns-priority": apns_priority}
        if len(delivery_id.encode()) <= _APNS_COLLAPSE_ID_BYTES:
            apns_headers["apns-collapse-id"] = delivery_id
        fcm["apns"] = {"headers": apns_headers}
    fcm["android"] = android
    return orjson.dumps({"message": fcm})


def _device_token(message: Mapping[str, Any]) -> str:
    recipient = message.get("recipient") or {}
    tokens = recipient.get("push_tokens") if isinstance(recipient, Mapping) else None
    if not isinstance(tokens, list) or len(tokens) != 1:
        count = len(tokens) if isinstance(tokens, list) else 0
        raise InvalidMessage(f"a push message needs exactly one push token, not {count}")
    token = tokens[0]
    if not isinstance(token, str):
        raise InvalidMessage("push token is not a string")
    if token.startswith(_APNS_ADDRESS_PREFIX):
        raise InvalidMessage("push token is an APNs token, not an FCM registration token")
    token = token.removeprefix(_FCM_ADDRESS_PREFIX)
    if not _DEVICE_TOKEN.fullmatch(token):
        raise InvalidMessage("push token is empty or not printable ASCII")
    return token


def _data(message: Mapping[str, Any]) -> dict[str, str]:
    data = message.get("data") or {}
    if not isinstance(data, Mapping):
        raise InvalidMessage("data is not a map")
    for key, value in data.items():
        # FCM's data is map<string, string>: a number there is answered INVALID_ARGUMENT.
        if not isinstance(key, str) or not isinstance(value, str):
            raise InvalidMessage(f"data entry {key!r} is not a string to string pair")
        if key in _RESERVED_DATA_KEYS or key.startswith(_RESERVED_DATA_PREFIX):
            raise InvalidMessage(f"data key {key!r} is reserved by FCM")
    return dict(data)


def _required_str(message: Mapping[str, Any], key: str) -> str:
    value = message.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidMessage(f"message has no {key!r}")
    return value


def _optional_str(message: Mapping[str, Any], key: str) -> str | None:
    value = message.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidMessage(f"{key} is not a string")
    return value


# -- the answer ----------------------------------------------------------------------


def classify(
    status: int, headers: Mapping[str, str], body: bytes, *, now: float | None = None
) -> Verdict:
    """Verdict for FCM's answer to ``messages:send``.

    The FcmError ``errorCode`` in the error's details decides when there is one;
    otherwise the HTTP status does. ``now`` only matters for a Retry-After date.
    """
    if 200 <= status <= 299:
        # The body is {"name": "projects/<id>/messages/<id>"}.
        return Verdict.delivered(status_code=status)
    error_code, google_status, text = _google_error(body)
    rule = next(
        (
            (outcome, why)
            for code, phrase, outcome, why in _FCM_ERROR_RULES
            if code == error_code and (phrase is None or phrase in text)
        ),
        None,
    )
    if rule is None:
        rule = next(
            ((outcome, why) for low, high, outcome, why in _STATUS_RULES if low <= status <= high),
            (Outcome.REJECTED, "unexpected status"),
        )
    outcome, why = rule
    label = error_code or google_status or "no error code"
    reason = f"FCM HTTP {status} {label}: {why}" + (f" ({text[:_EXCERPT_CHARS]})" if text else "")
    if outcome is Outcome.ADDRESS_INVALID:
        return Verdict.address_invalid(reason, status_code=status)
    if outcome is Outcome.RETRY:
        return Verdict.retry(
            reason, retry_after=retry_after_seconds(headers, now=now), status_code=status
        )
    return Verdict.rejected(reason, status_code=status)


# (FcmError errorCode, phrase the error message must contain or None, outcome, why);
# the first match wins. Source: FCM HTTP v1 reference, "ErrorCode", unless noted.
_FCM_ERROR_RULES: Final[tuple[tuple[str, str | None, Outcome, str], ...]] = (
    # 404: "App instance was unregistered from FCM. This usually means that the token
    # used is no longer valid and a new one must be used."
    ("UNREGISTERED", None, Outcome.ADDRESS_INVALID, "device token is no longer registered"),
    # 403: "The authenticated sender ID is different from the sender ID for the
    # registration token": the token belongs to another Firebase project.
    ("SENDER_ID_MISMATCH", None, Outcome.ADDRESS_INVALID, "token belongs to another sender"),
    # 429: "Sending limit exceeded"; retry with backoff, honouring Retry-After
    # ("Best practices when sending FCM messages at scale").
    ("QUOTA_EXCEEDED", None, Outcome.RETRY, "sending quota exceeded"),
    # 503: "The server is overloaded"; retry honouring Retry-After, with backoff.
    ("UNAVAILABLE", None, Outcome.RETRY, "FCM overloaded"),
    # 500: "An unknown internal error occurred"; retry as for UNAVAILABLE.
    ("INTERNAL", None, Outcome.RETRY, "FCM internal error"),
    # 401: the APNs certificate or auth key, or the web push auth key, in the Firebase
    # project is invalid or missing. A new access token will not fix that; an operator must.
    ("THIRD_PARTY_AUTH_ERROR", None, Outcome.REJECTED, "APNs or web push credentials refused"),
    # "Best practices for FCM registration token management", detecting invalid tokens:
    # INVALID_ARGUMENT with this message means the token itself is malformed.
    (
        "INVALID_ARGUMENT",
        "not a valid FCM registration token",
        Outcome.ADDRESS_INVALID,
        "malformed registration token",
    ),
    # 400: invalid registration, package name, data key or TTL, or a message too big;
    # the same message fails the same way every time.
    ("INVALID_ARGUMENT", None, Outcome.REJECTED, "request is invalid"),
)

# (lowest status, highest status, outcome, why) for answers with no FcmError code,
# such as Google API errors raised before FCM looks at the message (AIP-193 status codes).
_STATUS_RULES: Final[tuple[tuple[int, int, Outcome, str], ...]] = (
    # UNAUTHENTICATED: the channel fetches a new token and repeats the send once
    # before a 401 gets here, so the new token was refused too.
    (401, 401, Outcome.REJECTED, "access token refused"),
    # PERMISSION_DENIED: the service account lacks cloudmessaging.messages.create for
    # the project, or the FCM API is disabled in it.
    (403, 403, Outcome.REJECTED, "service account may not send for this project"),
    # NOT_FOUND without UNREGISTERED: the project in the URL does not exist.
    (404, 404, Outcome.REJECTED, "project not found"),
    # RESOURCE_EXHAUSTED without an FcmError detail: the project's per-minute quota
    # (seen in firebase-admin-go#719 with only a google.rpc.ErrorInfo detail).
    (429, 429, Outcome.RETRY, "quota exceeded"),
    (400, 499, Outcome.REJECTED, "request refused"),
    # INTERNAL, UNAVAILABLE, DEADLINE_EXCEEDED: transient.
    (500, 599, Outcome.RETRY, "server error"),
    # FCM does not redirect; a 3xx means base_url points somewhere else.
    (300, 399, Outcome.REJECTED, "redirected; check base_url"),
)


def needs_fresh_token(status: int, body: bytes) -> bool:
    """Whether FCM refused our access token (401 UNAUTHENTICATED), so a new one may help.

    A 401 carrying THIRD_PARTY_AUTH_ERROR is about APNs or web push credentials
    stored in the Firebase project, not about our token.
    """
    return status == 401 and _google_error(body)[0] != "THIRD_PARTY_AUTH_ERROR"


def _google_error(body: bytes) -> tuple[str | None, str, str]:
    """(FcmError errorCode or None, google.rpc status, message) from a Google API error body:
    ``{"error": {"code", "message", "status", "details": [...]}}``."""
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, "", body[: _EXCERPT_CHARS * 4].decode("utf-8", "replace").strip()
    error = answer.get("error") if isinstance(answer, dict) else None
    if not isinstance(error, dict):
        return None, "", ""
    details = error.get("details")
    code = next(
        (
            detail["errorCode"]
            for detail in (details if isinstance(details, list) else [])
            if isinstance(detail, dict)
            and detail.get("@type") == _FCM_ERROR_TYPE
            and isinstance(detail.get("errorCode"), str)
        ),
        None,
    )
    return code, str(error.get("status") or ""), str(error.get("message") or "")


# -- the I/O edge --------------------------------------------------------------------


class FcmChannel:
    """Sends one push notification per call through FCM HTTP v1.

    Safe to share between concurrent tasks: one access token serves them all,
    and only one task at a time fetches a new one.
    """

    def __init__(self, config: FcmConfig, client: httpx.AsyncClient | None = None) -> None:
        self._config = config
        self._owns_client = client is None
        # HTTP/2 multiplexes concurrent sends over one connection to fcm.googleapis.com.
        self._client = client if client is not None else httpx.AsyncClient(http2=True)
        self._tokens = TokenCache()
        self._token_lock = asyncio.Lock()

    async def send(self, message: Mapping[str, Any]) -> Verdict:
        """One attempt at ``message``; raises :class:`InvalidMessage` if it can never be sent."""
        body = encode_message(message)  # before any I/O: a bad message costs no token fetch
        token = await self._access_token()
        if isinstance(token, Verdict):
            return token
        answer = await self._exchange(_send_request(self._config, body, token.value))
        if isinstance(answer, Response) and needs_fresh_token(answer.status, answer.body):
            # The token expired early or was revoked: fetch another, repeat the send once.
            token = await self._access_token(stale=token)
            if isinstance(token, Verdict):
                return token
            answer = await self._exchange(_send_request(self._config, body, token.value))
        if isinstance(answer, Verdict):
            return answer
        return classify(answer.status, answer.headers, answer.body)

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def _access_token(self, *, stale: AccessToken | None = None) -> AccessToken | Verdict:
        if stale is None and (cached := self._tokens.get(time.time())) is not None:
            return cached
        async with self._token_lock:
            if stale is not None:
                self._tokens.invalidate(stale)
            flow = token_flow(
                self._config.account,
                self._tokens,
                scope=FIREBASE_MESSAGING_SCOPE,
                token_uri=self._config.token_endpoint,
                clock=time.time,
            )
            return await self._drive(flow)

    async def _drive(self, flow: TokenFlow) -> AccessToken | Verdict:
        try:
            request = next(flow)
            while True:
                answer = await self._exchange(request)
                if isinstance(answer, Verdict):
                    flow.close()
                    # Not the recipient's fault whatever happened: only retry or reject.
                    outcome = Outcome.RETRY if answer.outcome is Outcome.RETRY else Outcome.REJECTED
                    return dataclasses.replace(
                        answer, outcome=outcome, reason=f"token endpoint: {answer.reason}"
                    )
                request = flow.send(answer)
        except StopIteration as done:
            result: AccessToken | Verdict = done.value
            return result

    async def _exchange(self, request: HttpRequest) -> Response | Verdict:
        """The provider's raw answer, or the verdict for a network failure.

        Goes through the shared transport (deadline, bounded body, failures as
        verdicts) with a classifier that keeps the answer: the OAuth flow and
        the 401 check need the answer itself, not a verdict on it.
        """
        answers: list[Response] = []

        def keep(status: int, headers: Mapping[str, str], body: bytes) -> Verdict:
            answers.append(Response(status, headers, body))
            return _KEPT

        verdict = await send(self._client, request, self._config.timeout_s, keep)
        return answers[0] if answers else verdict


# Placeholder the keeping classifier returns; _exchange never passes it on.
_KEPT: Final = Verdict.retry("answer kept for the caller")
