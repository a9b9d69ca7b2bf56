"""Firebase Cloud Messaging played locally: Google's OAuth token endpoint and FCM HTTP v1.

One aiohttp server answers both halves of a real send:

- ``POST /token`` is the service-account JWT bearer grant (RFC 7523): it
  verifies the assertion's RS256 signature with the account's public key and
  its ``iss``, ``aud``, ``scope``, ``iat`` and ``exp``, and issues opaque
  access tokens that live ``token_lifetime_s`` seconds;
- ``POST /v1/projects/{project}/messages:send`` checks the bearer token is one
  it issued and still valid (401 UNAUTHENTICATED otherwise), checks the message
  as FCM does (one target, string data, no reserved keys, 4096-byte payload)
  and answers with Google's error shape and FCM error codes.

Scripting::

    account = make_service_account("demo-project")
    async with FcmEmulator(account) as fcm:
        config = FcmConfig(account, base_url=fcm.url, token_uri=fcm.token_uri)
        fcm.fail_next("device-1", ["QUOTA_EXCEEDED"], retry_after=30)
        fcm.unregister("device-2")       # UNREGISTERED from now on
        fcm.expire_tokens()              # next send with an old token gets 401
        await fcm.wait_for(1, timeout=5)

Run it on its own (prints one line per answered send, stops on Ctrl-C or SIGTERM)::

    python -m connectors.emulators.fcm --port 8090 --write-service-account .cache/fcm-sa.json
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import secrets
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import jwt
import orjson
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from connectors.emulators._server import HttpEmulator, serve_until_signalled, wait_until
from connectors.oauth import (
    FIREBASE_MESSAGING_SCOPE,
    GOOGLE_TOKEN_URI,
    JWT_BEARER_GRANT_TYPE,
    MAX_ASSERTION_LIFETIME_S,
    load_service_account,
)

# FCM "Message types": 4096 bytes of payload; counted like the connector does.
MAX_PAYLOAD_BYTES: Final = 4096
_CLOUD_PLATFORM_SCOPE: Final = "https://www.googleapis.com/auth/cloud-platform"
_FCM_ERROR_TYPE: Final = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
_CLOCK_SKEW_S: Final = 60  # tolerance for an iat a little in the future

# FCM error code -> (HTTP status, google.rpc status, message); FCM reference, "ErrorCode".
FCM_ERRORS: Final[Mapping[str, tuple[int, str, str]]] = {
    "INVALID_ARGUMENT": (400, "INVALID_ARGUMENT", "Request contains an invalid argument."),
    "UNREGISTERED": (404, "NOT_FOUND", "Requested entity was not found."),
    "SENDER_ID_MISMATCH": (403, "PERMISSION_DENIED", "SenderId mismatch"),
    "QUOTA_EXCEEDED": (429, "RESOURCE_EXHAUSTED", "Quota exceeded."),
    "UNAVAILABLE": (503, "UNAVAILABLE", "The service is currently unavailable."),
    "INTERNAL": (500, "INTERNAL", "Internal error encountered."),
    "THIRD_PARTY_AUTH_ERROR": (401, "UNAUTHENTICATED", "Auth error from APNS or Web Push Service"),
}

# The fields of the v1 Message and the parts the connector fills, to refuse unknown
# names as Google's JSON parser does ("Unknown name ... Cannot find field").
_MESSAGE_FIELDS: Final = frozenset(
    {"name", "data", "notification", "android", "webpush", "apns", "fcm_options"}
    | {"token", "topic", "condition"}
)
_NOTIFICATION_FIELDS: Final = frozenset({"title", "body", "image"})
_ANDROID_FIELDS: Final = frozenset(
    {"collapse_key", "priority", "ttl", "restricted_package_name", "data", "notification"}
    | {"fcm_options", "direct_boot_ok"}
)
_APNS_FIELDS: Final = frozenset({"headers", "payload", "fcm_options", "live_activity_token"})


def make_service_account(
    project_id: str = "tidings-local", token_uri: str = GOOGLE_TOKEN_URI
) -> dict[str, str]:
    """A fresh service-account key file (a new 2048-bit RSA key) shaped like Google's."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    email = f"tidings-sender@{project_id}.iam.gserviceaccount.com"
    return {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": secrets.token_hex(20),
        "private_key": pem,
        "client_email": email,
        "client_id": str(secrets.randbelow(10**21)),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": f"https://www.googleapis.com/robot/v1/metadata/x509/{email}",
        "universe_domain": "googleapis.com",
    }


@dataclass(frozen=True, slots=True)
class Received:
    """One ``messages:send`` the emulator answered, whatever it answered."""

    device_token: str
    message: dict[str, Any]
    status: int
    error_code: str
    """The FCM error code (or google.rpc status) answered; empty when accepted."""
    name: str
    """``projects/<id>/messages/<id>`` for an accepted message; empty otherwise."""
    received_at: float

    @property
    def accepted(self) -> bool:
        return self.status == 200

    @property
    def delivery_id(self) -> str:
        data = self.message.get("data")
        return str(data.get("delivery_id", "")) if isinstance(data, dict) else ""


@dataclass(frozen=True, slots=True)
class TokenRequest:
    """One request to the token endpoint."""

    status: int
    error: str
    """The OAuth error code (``invalid_grant`` ...); empty when a token was issued."""
    error_description: str


@dataclass(slots=True)
class _Failure:
    code: str
    retry_after: int | None


class _Refusal(Exception):
    """An answer other than success, raised by a check and turned into a response."""

    def __init__(self, response: web.Response, code: str) -> None:
        super().__init__(code)
        self.response = response
        self.code = code


class FcmEmulator(HttpEmulator):
    """A local FCM HTTP v1 endpoint and OAuth token endpoint for one service account."""

    def __init__(
        self,
        service_account: Mapping[str, Any],
        *,
        token_lifetime_s: int = 3600,
        on_received: Callable[[Received], None] | None = None,
    ) -> None:
        account = load_service_account(service_account)
        self.project_id = account.project_id
        self._client_email = account.client_email
        self._key_id = account.private_key_id
        self._public_key = account.signing_key.public_key()
        self.token_lifetime_s = token_lifetime_s
        """Seconds each newly issued access token lives; tests may set it short."""
        self._on_received = on_received
        self._issued: dict[str, float] = {}  # access token -> expiry (Unix seconds)
        self.received: list[Received] = []
        """Every send answered, in arrival order, including refusals."""
        self.token_requests: list[TokenRequest] = []
        self._queued: dict[str, collections.deque[_Failure]] = collections.defaultdict(
            collections.deque
        )
        self._unregistered: set[str] = set()
        self._arrived = asyncio.Event()

    # -- lifecycle (start, stop, async with, url: HttpEmulator) -------------------

    def _application(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/token", self._token)
        app.router.add_post("/v1/projects/{project}/messages:send", self._send)
        return app

    @property
    def token_uri(self) -> str:
        """The token endpoint (FcmConfig.token_uri, or the account's token_uri)."""
        return f"{self.url}/token"

    # -- scripting ---------------------------------------------------------------

    def fail_next(
        self, device_token: str, error_codes: list[str], retry_after: int | None = None
    ) -> None:
        """Answer the next ``len(error_codes)`` valid sends to ``device_token`` with these
        FCM error codes, in order, adding ``Retry-After`` when given."""
        unknown = [code for code in error_codes if code not in FCM_ERRORS]
        if unknown:
            raise ValueError(f"not FCM error codes: {unknown}; use one of {sorted(FCM_ERRORS)}")
        self._queued[device_token].extend(_Failure(c, retry_after) for c in error_codes)

    def unregister(self, device_token: str) -> None:
        """Answer UNREGISTERED for ``device_token`` from now on, as for an uninstalled app."""
        self._unregistered.add(device_token)

    def expire_tokens(self) -> None:
        """End every access token issued so far: the next send with one gets 401."""
        self._issued = dict.fromkeys(self._issued, 0.0)

    # -- what arrived ------------------------------------------------------------

    @property
    def accepted(self) -> list[Received]:
        return [r for r in self.received if r.accepted]

    def by_delivery_id(self) -> collections.Counter[str]:
        """How many times each delivery id was accepted; 1 everywhere means exactly once."""
        return collections.Counter(r.delivery_id for r in self.accepted)

    @property
    def issued_tokens(self) -> int:
        return sum(1 for request in self.token_requests if request.status == 200)

    # The timeout is part of the assertion (ASYNC109), so the failure says how many arrived.
    async def wait_for(self, count: int, timeout: float) -> list[Received]:  # noqa: ASYNC109
        """Wait until at least ``count`` messages were accepted; return them.

        Raises TimeoutError, saying how many arrived, after ``timeout`` seconds.
        """
        await wait_until(
            self._arrived,
            lambda: len(self.accepted) >= count,
            timeout,
            lambda: f"{len(self.accepted)} of {count} FCM messages",
        )
        return self.accepted

    # -- the token endpoint ------------------------------------------------------

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        grant_type, assertion = form.get("grant_type"), form.get("assertion")
        audience = str(request.url.with_query(None))
        if grant_type != JWT_BEARER_GRANT_TYPE:
            return self._oauth_error(400, "unsupported_grant_type", "Invalid grant_type.")
        if not isinstance(assertion, str) or not assertion:
            return self._oauth_error(
                400, "invalid_request", "Missing required parameter: assertion"
            )
        problem = self._check_assertion(assertion, audience)
        if problem is not None:
            return self._oauth_error(400, *problem)
        access_token = "ya29.emu-" + secrets.token_urlsafe(32)
        self._issued[access_token] = time.time() + self.token_lifetime_s
        self.token_requests.append(TokenRequest(200, "", ""))
        return web.json_response(
            {
                "access_token": access_token,
                "expires_in": self.token_lifetime_s,
                "token_type": "Bearer",
            }
        )

    def _check_assertion(self, assertion: str, audience: str) -> tuple[str, str] | None:
        """(OAuth error, description) for an assertion Google would refuse, else None."""
        try:
            header = jwt.get_unverified_header(assertion)
            if header.get("kid") not in (None, self._key_id):
                return "invalid_grant", "Invalid JWT Signature."
            # Claims are checked below, so each gets Google's own error text.
            claims = jwt.decode(
                assertion,
                self._public_key,
                algorithms=["RS256"],
                options={"verify_exp": False, "verify_iat": False, "verify_aud": False},
            )
        except jwt.InvalidTokenError:
            return "invalid_grant", "Invalid JWT Signature."
        if claims.get("iss") != self._client_email:
            return "invalid_grant", "Invalid JWT Signature."
        if claims.get("aud") != audience:
            return "invalid_grant", "Invalid JWT: Failed audience check."
        scopes = str(claims.get("scope", "")).split()
        if not {FIREBASE_MESSAGING_SCOPE, _CLOUD_PLATFORM_SCOPE} & set(scopes):
            return "invalid_scope", "Invalid OAuth scope or ID token audience provided."
        iat, exp, now = claims.get("iat"), claims.get("exp"), time.time()
        if (
            not isinstance(iat, int)
            or not isinstance(exp, int)
            or exp <= now
            or iat > now + _CLOCK_SKEW_S
            or exp - iat > MAX_ASSERTION_LIFETIME_S
        ):
            return "invalid_grant", (
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a "
                "reasonable timeframe. Check your iat and exp values in the JWT claim."
            )
        return None

    def _oauth_error(self, status: int, error: str, description: str) -> web.Response:
        # RFC 6749 §5.2 error response.
        self.token_requests.append(TokenRequest(status, error, description))
        return web.json_response({"error": error, "error_description": description}, status=status)

    # -- messages:send -----------------------------------------------------------

    async def _send(self, request: web.Request) -> web.Response:
        body = await request.read()
        message: dict[str, Any] = {}
        try:
            self._authorise(request)
            message, validate_only = _parse_message(body)
            device_token = message["token"]
            if validate_only:  # checked, not sent: FCM answers with a placeholder id
                name = f"projects/{self.project_id}/messages/fake_message_id"
                return web.json_response({"name": name})
            self._scripted_failure(device_token)
            # Shaped like FCM's: "projects/<id>/messages/0:<micros>%<16 hex>".
            message_id = f"0:{time.time_ns() // 1000}%{secrets.token_hex(8)}"
            name = f"projects/{self.project_id}/messages/{message_id}"
            response, code = web.json_response({"name": name}), ""
        except _Refusal as refusal:
            response, code, name = refusal.response, refusal.code, ""
            message = message or _loose_message(body)
            device_token = str(message.get("token", ""))
        self._record(Received(device_token, message, response.status, code, name, time.time()))
        return response

    def _authorise(self, request: web.Request) -> None:
        scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
        expires_at = self._issued.get(credential) if scheme.lower() == "bearer" else None
        if expires_at is None or expires_at <= time.time():
            raise _Refusal(
                _google_error(
                    401,
                    "UNAUTHENTICATED",
                    "Request had invalid authentication credentials. Expected OAuth 2 access "
                    "token, login cookie or other valid authentication credential.",
                    headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'},
                ),
                "UNAUTHENTICATED",
            )
        if request.match_info["project"] != self.project_id:
            raise _Refusal(
                _google_error(
                    403,
                    "PERMISSION_DENIED",
                    "Permission 'cloudmessaging.messages.create' denied on resource "
                    f"'//cloudresourcemanager.googleapis.com/projects/{request.match_info['project']}'"
                    " (or it may not exist).",
                ),
                "PERMISSION_DENIED",
            )

    def _scripted_failure(self, device_token: str) -> None:
        queue = self._queued.get(device_token)
        failure = queue.popleft() if queue else None
        if failure is None and device_token in self._unregistered:
            failure = _Failure("UNREGISTERED", None)
        if failure is not None:
            status, google_status, text = FCM_ERRORS[failure.code]
            headers = (
                {} if failure.retry_after is None else {"Retry-After": str(failure.retry_after)}
            )
            raise _Refusal(
                _google_error(status, google_status, text, failure.code, headers=headers),
                failure.code,
            )

    def _record(self, received: Received) -> None:
        self.received.append(received)
        if received.accepted:
            self._arrived.set()
        if self._on_received is not None:
            self._on_received(received)


def _parse_message(body: bytes) -> tuple[dict[str, Any], bool]:
    """The ``message`` of a send request, checked as FCM checks it, and its
    ``validate_only`` flag; raises :class:`_Refusal`."""
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _invalid(f"Invalid JSON payload received. {exc}") from exc
    if not isinstance(request, dict) or not isinstance(request.get("message"), dict):
        raise _invalid("Invalid JSON payload received. 'message' is required.")
    _known(request, {"message", "validate_only"}, "")
    message: dict[str, Any] = request["message"]
    _known(message, _MESSAGE_FIELDS, "message")
    targets = [key for key in ("token", "topic", "condition") if message.get(key)]
    if len(targets) != 1:
        raise _invalid(
            "Recipient of the message is not set."
            if not targets
            else "Invalid value at 'message' (oneof), oneof field 'target' is already set."
        )
    if targets != ["token"]:
        raise _invalid(f"this emulator sends to registration tokens, not to a {targets[0]}")
    if not isinstance(message["token"], str):
        raise _invalid("The registration token is not a valid FCM registration token")
    for name, allowed in (
        ("notification", _NOTIFICATION_FIELDS),
        ("android", _ANDROID_FIELDS),
        ("apns", _APNS_FIELDS),
    ):
        if name in message:
            if not isinstance(message[name], dict):
                raise _invalid(f"Invalid value at 'message.{name}': not an object")
            _known(message[name], allowed, f"message.{name}")
    data = message.get("data", {})
    if not isinstance(data, dict):
        raise _invalid("Invalid value at 'message.data': not a map")
    for index, (key, value) in enumerate(data.items()):
        if not isinstance(value, str):
            raise _invalid(f"Invalid value at 'message.data[{index}].value' (TYPE_STRING), {value}")
        if key in ("from", "gcm") or key.startswith("google"):
            raise _invalid(f"Invalid data payload key: {key}")
    priority = message.get("android", {}).get("priority", "normal")
    if not isinstance(priority, str) or priority.upper() not in ("NORMAL", "HIGH"):
        raise _invalid(
            "Invalid value at 'message.android.priority' "
            f"(type.googleapis.com/google.firebase.fcm.v1.AndroidMessagePriority), {priority!r}"
        )
    payload = {key: message[key] for key in ("notification", "data") if key in message}
    if len(orjson.dumps(payload)) > MAX_PAYLOAD_BYTES:
        raise _invalid("Message is too big")
    return message, request.get("validate_only") is True


def _loose_message(body: bytes) -> dict[str, Any]:
    """Whatever ``message`` object a refused request carried, for the record."""
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    message = request.get("message") if isinstance(request, dict) else None
    return message if isinstance(message, dict) else {}


def _known(obj: dict[str, Any], allowed: frozenset[str] | set[str], where: str) -> None:
    for key in obj:
        if key not in allowed:
            raise _invalid(
                f"Invalid JSON payload received. Unknown name \"{key}\" at '{where}': "
                "Cannot find field."
            )


def _invalid(text: str) -> _Refusal:
    return _Refusal(
        _google_error(400, "INVALID_ARGUMENT", text, "INVALID_ARGUMENT"), "INVALID_ARGUMENT"
    )


def _google_error(
    status: int,
    google_status: str,
    text: str,
    fcm_code: str | None = None,
    *,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """Google's error body: ``{"error": {"code", "message", "status", "details"}}``."""
    error: dict[str, Any] = {"code": status, "message": text, "status": google_status}
    if fcm_code is not None:
        error["details"] = [{"@type": _FCM_ERROR_TYPE, "errorCode": fcm_code}]
    return web.json_response({"error": error}, status=status, headers=headers)


# -- command line ----------------------------------------------------------------


def _print_line(received: Received) -> None:
    notification = received.message.get("notification")
    title = notification.get("title", "") if isinstance(notification, dict) else ""
    print(
        f"{received.status} {received.error_code or 'OK'} token={received.device_token or '-'} "
        f"delivery_id={received.delivery_id or '-'} title={title!r}",
        flush=True,
    )


def _write_account(path: Path, info: Mapping[str, str], token_uri: str) -> None:
    account = dict(info, token_uri=token_uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The file holds a private key: readable by its owner only.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(orjson.dumps(account, option=orjson.OPT_INDENT_2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m connectors.emulators.fcm",
        description="Local FCM HTTP v1 and Google OAuth token endpoint; prints each send.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    accounts = parser.add_mutually_exclusive_group(required=True)
    accounts.add_argument("--service-account", type=Path, help="key file whose grants to accept")
    accounts.add_argument(
        "--write-service-account",
        type=Path,
        metavar="PATH",
        help="make a new key file, with token_uri pointing here, and write it to PATH",
    )
    parser.add_argument("--project-id", default="tidings-local", help="for a new key file")
    parser.add_argument("--token-lifetime", type=int, default=3600, help="seconds (default 3600)")
    args = parser.parse_args(argv)
    if args.service_account is not None:
        try:
            info = orjson.loads(args.service_account.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            parser.error(f"--service-account: {exc}")
    else:
        info = make_service_account(args.project_id)
    try:
        emulator = FcmEmulator(info, token_lifetime_s=args.token_lifetime, on_received=_print_line)
    except ValueError as exc:
        parser.error(f"--service-account: {exc}")

    def announce() -> str:
        # The key file's token_uri needs the bound port, so it is written once started.
        if args.write_service_account is not None:
            _write_account(args.write_service_account, info, emulator.token_uri)
        return (
            f"fcm emulator for project {emulator.project_id} (token endpoint /token) "
            f"listening on {emulator.url}"
        )

    asyncio.run(
        serve_until_signalled(
            emulator,
            lambda: emulator.start(args.host, args.port),
            announce,
            "fcm emulator stopped",
        )
    )
    return 0

if __name__ == "__main__":
    sys.exit(main())
