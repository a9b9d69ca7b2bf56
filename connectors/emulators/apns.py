"""Apple Push Notification service, played locally: HTTP/2 over TLS, for runs and tests.

Like APNs it speaks only HTTP/2 over TLS (ALPN ``h2``), here through hypercorn
with a certificate authority made at start-up (trust :attr:`ApnsEmulator.ca_file`).
It verifies each request as Apple documents ("Sending notification requests to
APNs", "Establishing a token-based connection to APNs") and answers with APNs'
statuses and ``{"reason": ...}`` bodies ("Handling notification responses")::

    key = make_signing_key()
    async with ApnsEmulator(key.team_id, key.key_id, key.private_key) as apns:
        apns.fail_next(token, [(429, "TooManyRequests")])
        apns.unregister(other_token)              # 410 Unregistered from now on
        ...  # point ApnsConfig(base_url=apns.url, ca_file=apns.ca_file) at it
        [notification] = await apns.wait_for(1, timeout=5)

Run it on its own (prints one line per notification, stops on Ctrl-C or SIGTERM)::

    python -m connectors.emulators.apns --port 2197 --team-id T --key-id K --key-file k.p8
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import re
import secrets
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypercorn.asyncio import serve
from hypercorn.config import Config
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, HTTPScope, Scope

from connectors.emulators._server import Emulator, serve_until_signalled, wait_until
from connectors.emulators._tls import write_certificates

# Apple's limits and rules, from the docs named in the module docstring.
MAX_PAYLOAD_BYTES = 4096
MAX_COLLAPSE_ID_BYTES = 64
TOKEN_MAX_AGE_S = 60 * 60
TOKEN_MIN_REFRESH_S = 20 * 60
PUSH_TYPES = frozenset(
    {"alert", "background", "location", "voip", "complication", "fileprovider", "mdm",
     "liveactivity", "pushtoapp", "widgets"}
)  # fmt: skip
_PATH = re.compile(r"/3/device/([^/]*)")
_DEVICE_TOKEN = re.compile(r"[0-9a-fA-F]{64,}")
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_CLOCK_SKEW_S = 60


class SigningKey(NamedTuple):
    """An APNs auth key as the developer account issues it: ids and the .p8 PEM."""

    key_id: str
    team_id: str
    private_key: str


def make_signing_key() -> SigningKey:
    """A fresh ES256 key with random 10-character key and team ids, for tests and runs."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return SigningKey(_apple_id(), _apple_id(), pem.decode())


def _apple_id() -> str:
    return "".join(secrets.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") for _ in range(10))


@dataclass(frozen=True, slots=True)
class Notification:
    """One request the emulator answered, whatever it answered."""

    device_token: str
    headers: dict[str, str]
    payload: dict[str, Any]
    """The JSON body; empty when it was not a JSON object."""
    http_version: str
    status: int
    reason: str | None
    """APNs' reason for a non-200 answer."""
    apns_id: str
    received_at: float

    @property
    def accepted(self) -> bool:
        return self.status == 200


class _Refused(Exception):
    def __init__(self, status: int, reason: str, **extra: Any) -> None:
        super().__init__(status, reason)
        self.status, self.reason, self.extra = status, reason, extra


@dataclass(slots=True)
class _ConnectionToken:
    token: str
    since: float
    may_refresh: bool = False


class ApnsEmulator(Emulator):
    """A local APNs that checks requests, records notifications and fails on cue.

    Checks, in order: HTTP/2 (else 400 ``HTTP2Required``, emulator-only: real APNs
    will not even negotiate HTTP/1.1), POST to ``/3/device/<token>``, the provider
    JWT (ES256 signature by the configured key, ``kid``, ``iss``, ``iat`` under an
    hour old, no new token on a connection within 20 minutes of the last unless
    the last one expired), the apns-* headers, the device token and the payload
    size. Then the token's script decides: :meth:`fail_next`, :meth:`unregister`,
    else 200.
    """

    def __init__(
        self,
        team_id: str,
        key_id: str,
        key: str,
        *,
        topic: str | None = None,
        clock: Callable[[], float] = time.time,
        on_received: Callable[[Notification], None] | None = None,
    ) -> None:
        """``key`` is the PEM of the auth key (private, as the .p8, or its public half);
        ``topic``, when given, is the only bundle id device tokens belong to."""
        if "PUBLIC KEY" in key:
            public = serialization.load_pem_public_key(key.encode())
        else:
            public = serialization.load_pem_private_key(key.encode(), password=None).public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey):
            raise ValueError("an APNs auth key is an EC P-256 key")
        self._public_key = public
        self._team_id, self._key_id, self._topic = team_id, key_id, topic
        self._clock = clock
        self._on_received = on_received
        self.received: list[Notification] = []
        """Every request answered, in arrival order, including refusals."""
        self._queued: dict[str, collections.deque[tuple[int, str]]] = collections.defaultdict(
            collections.deque
        )
        self._unregistered: dict[str, int] = {}
        self._connections: dict[tuple[str, int], _ConnectionToken] = {}
        self._arrived = asyncio.Event()
        self._cert_dir: tempfile.TemporaryDirectory[str] | None = None
        self._shutdown = asyncio.Event()
        self._started = asyncio.Event()
        self._server: asyncio.Task[None] | None = None
        self._url: str | None = None
        self.ca_file: str | None = None
        """PEM of the CA that signed the server certificate; set by :meth:`start`."""

    # -- lifecycle ---------------------------------------------------------------

    async def start(
        self, host: str = "127.0.0.1", port: int = 0, *, cert_dir: str | None = None
    ) -> None:
        """Listen on ``host:port`` (port 0 picks a free one, see :attr:`url`).

        The CA and server certificates go to ``cert_dir``, or a temporary directory
        removed by :meth:`stop`.
        """
        if self._server is not None:
            raise RuntimeError("emulator already started")
        if cert_dir is None:
            self._cert_dir = tempfile.TemporaryDirectory(prefix="apns-emulator-")
            cert_dir = self._cert_dir.name
        try:
            ca_file, bound_port = await self._serve(host, port, Path(cert_dir))
        except BaseException:
            await self.stop()
            raise
        self.ca_file = str(ca_file)
        self._url = f"https://{f'[{host}]' if ':' in host else host}:{bound_port}"

    async def _serve(self, host: str, port: int, cert_dir: Path) -> tuple[Path, int]:
        ca_file, cert_file, key_file = write_certificates(
            cert_dir, "Tidings APNs emulator CA", host
        )
        config = Config()
        config.certfile, config.keyfile = str(cert_file), str(key_file)
        config.alpn_protocols = ["h2", "http/1.1"]  # 1.1 only to refuse it with a reason
        config.loglevel = "WARNING"
        config.graceful_timeout = 1.0
        # Apple: "keep your connections with APNs open across multiple notifications";
        # hypercorn would otherwise close one after 1000 requests or 5 idle seconds,
        # failing the streams in flight on it.
        config.keep_alive_max_requests = sys.maxsize
        config.keep_alive_timeout = 60 * 60
        config.create_ssl_context()  # a bad certificate fails here, not in the server task
        # Bind first so port 0 resolves before serving; hypercorn adopts the descriptor.
        listener = socket.create_server((host, port))
        bound_port = listener.getsockname()[1]
        config.bind = [f"fd://{listener.detach()}"]
        self._shutdown, self._started = asyncio.Event(), asyncio.Event()
        self._server = server = asyncio.create_task(
            serve(self._app, config, shutdown_trigger=self._shutdown.wait, mode="asgi")
        )
        started = asyncio.create_task(self._started.wait())
        await asyncio.wait({server, started}, return_when=asyncio.FIRST_COMPLETED)
        started.cancel()
        if server.done():
            self._server = None
            await server  # raises what stopped it
            raise RuntimeError("APNs emulator stopped while starting")
        return ca_file, bound_port

    async def stop(self) -> None:
        if self._server is not None:
            server, self._server, self._url = self._server, None, None
            self._shutdown.set()
            await server
        if self._cert_dir is not None:
            self._cert_dir.cleanup()
            self._cert_dir = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``https://127.0.0.1:2197``; use it as ``ApnsConfig.base_url``."""
        if self._url is None:
            raise RuntimeError("emulator is not started")
        return self._url

    # -- scripting ---------------------------------------------------------------

    def fail_next(self, device_token: str, failures: Iterable[tuple[int, str]]) -> None:
        """Answer the next valid requests for ``device_token`` with these ``(status,
        reason)`` pairs, in order, e.g. ``[(503, "ServiceUnavailable")]``."""
        self._queued[device_token].extend(failures)

    def unregister(self, device_token: str) -> None:
        """From now on answer 410 Unregistered for ``device_token``, as for an app removed."""
        self._unregistered[device_token] = int(self._clock() * 1000)

    @property
    def delivered(self) -> list[Notification]:
        return [n for n in self.received if n.accepted]

    def by_apns_id(self) -> collections.Counter[str]:
        """How many times each apns-id was accepted; 1 everywhere means exactly once."""
        return collections.Counter(n.apns_id for n in self.delivered)

    # The timeout is part of the assertion (ASYNC109): the failure says how many arrived.
    async def wait_for(self, count: int, timeout: float) -> list[Notification]:  # noqa: ASYNC109
        """Wait until at least ``count`` notifications have been accepted; return them."""
        await wait_until(
            self._arrived,
            lambda: len(self.delivered) >= count,
            timeout,
            lambda: f"{len(self.delivered)} of {count} APNs notifications",
        )
        return self.delivered

    # -- the server --------------------------------------------------------------

    async def _app(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "lifespan":
            while (event := await receive())["type"] != "lifespan.shutdown":
                if event["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                    self._started.set()
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        body = bytearray()
        while True:
            event = await receive()
            if event["type"] != "http.request":
                return  # the client went away
            if len(body) <= MAX_PAYLOAD_BYTES:
                body += event.get("body", b"")
            if not event.get("more_body", False):
                break

        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        apns_id = headers.get("apns-id") or str(uuid.uuid4())
        match = _PATH.fullmatch(scope["path"])
        device_token = match.group(1) if match else ""
        try:
            self._check(scope, headers, device_token, bytes(body))
            status, answer = 200, None
        except _Refused as refusal:
            status, answer = refusal.status, {"reason": refusal.reason, **refusal.extra}
        # Recorded before answering, so a sender that has its answer finds the record.
        self._record(
            Notification(
                device_token=device_token,
                headers=headers,
                payload=_json_object(bytes(body)),
                http_version=scope["http_version"],
                status=status,
                reason=answer["reason"] if answer else None,
                apns_id=apns_id,
                received_at=time.time(),
            )
        )
        response_headers = [(b"apns-id", apns_id.encode())]
        if answer is not None:
            response_headers.append((b"content-type", b"application/json"))
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        content = orjson.dumps(answer) if answer is not None else b""
        await send({"type": "http.response.body", "body": content, "more_body": False})

    def _check(
        self, scope: HTTPScope, headers: dict[str, str], device_token: str, body: bytes
    ) -> None:
        """Return if APNs would accept the request; raise :class:`_Refused` if not."""
        if scope["http_version"] != "2":
            raise _Refused(
                400, "HTTP2Required", detail=f"APNs requires HTTP/2, got {scope['http_version']}"
            )
        names = [name for name, _ in scope["headers"]]
        if len(names) != len(set(names)):
            raise _Refused(400, "DuplicateHeaders")
        if not _PATH.fullmatch(scope["path"]):
            raise _Refused(404, "BadPath")
        if scope["method"] != "POST":
            raise _Refused(405, "MethodNotAllowed")
        self._check_provider_token(headers.get("authorization", ""), scope["client"])

        topic = headers.get("apns-topic")
        if not topic:
            raise _Refused(400, "MissingTopic")
        if not device_token:
            raise _Refused(400, "MissingDeviceToken")
        if not _DEVICE_TOKEN.fullmatch(device_token):
            raise _Refused(400, "BadDeviceToken")
        if self._topic is not None and topic != self._topic:
            raise _Refused(400, "DeviceTokenNotForTopic")
        # Apple: apns-push-type is required for watchOS 6 and later and recommended
        # everywhere; the emulator requires it so a connector that omits it fails.
        push_type = headers.get("apns-push-type")
        if push_type not in PUSH_TYPES:
            raise _Refused(400, "InvalidPushType")
        priority = headers.get("apns-priority", "10")
        if priority not in ("10", "5", "1") or (push_type == "background" and priority == "10"):
            raise _Refused(400, "BadPriority")  # background must be 5
        if not headers.get("apns-expiration", "0").isdigit():
            raise _Refused(400, "BadExpirationDate")
        if "apns-id" in headers and not _CANONICAL_UUID.fullmatch(headers["apns-id"]):
            raise _Refused(400, "BadMessageId")
        if len(headers.get("apns-collapse-id", "").encode()) > MAX_COLLAPSE_ID_BYTES:
            raise _Refused(400, "BadCollapseId")
        if not body:
            raise _Refused(400, "PayloadEmpty")
        if len(body) > MAX_PAYLOAD_BYTES:
            raise _Refused(413, "PayloadTooLarge")
        if not isinstance(_json_object(body).get("aps"), dict):
            # Apple documents no reason for this; the emulator checks it to catch bugs.
            raise _Refused(400, "BadPayload", detail="payload is not JSON with an aps dictionary")

        if queue := self._queued.get(device_token):
            status, reason = queue.popleft()
            if reason == "ExpiredProviderToken" and scope["client"] in self._connections:
                self._connections[scope["client"]].may_refresh = True
            extra = {"timestamp": int(self._clock() * 1000)} if status == 410 else {}
            raise _Refused(status, reason, **extra)
        if (since := self._unregistered.get(device_token)) is not None:
            raise _Refused(410, "Unregistered", timestamp=since)

    def _check_provider_token(self, authorization: str, client: tuple[str, int] | None) -> None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise _Refused(403, "MissingProviderToken")
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(
                token,
                self._public_key,
                algorithms=["ES256"],
                options={"require": ["iss", "iat"], "verify_iat": False},
            )
        except jwt.InvalidTokenError:
            raise _Refused(403, "InvalidProviderToken") from None
        if header.get("kid") != self._key_id or claims["iss"] != self._team_id:
            raise _Refused(403, "InvalidProviderToken")
        now = self._clock()
        age = now - claims["iat"] if isinstance(claims["iat"], int) else None
        if age is None or age < -_CLOCK_SKEW_S:
            raise _Refused(403, "InvalidProviderToken")
        seen = self._connections.get(client) if client else None
        if age > TOKEN_MAX_AGE_S:
            if seen is not None:
                seen.may_refresh = True
            raise _Refused(403, "ExpiredProviderToken")
        if client is None or (seen is not None and seen.token == token):
            return
        if seen is not None and not seen.may_refresh and now - seen.since < TOKEN_MIN_REFRESH_S:
            raise _Refused(429, "TooManyProviderTokenUpdates")
        self._connections[client] = _ConnectionToken(token, now)

    def _record(self, notification: Notification) -> None:
        self.received.append(notification)
        if notification.accepted:
            self._arrived.set()
        if self._on_received is not None:
            self._on_received(notification)


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


# -- command line ----------------------------------------------------------------


def _print_line(notification: Notification) -> None:
    alert = notification.payload.get("aps", {}).get("alert", {})
    title = alert.get("title", "") if isinstance(alert, dict) else ""
    print(
        f"{notification.status} {notification.reason or 'Success'} "
        f"token={notification.device_token[:12]}… apns-id={notification.apns_id} "
        f"push-type={notification.headers.get('apns-push-type', '-')} "
        f"HTTP/{notification.http_version} title={title!r}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m connectors.emulators.apns",
        description="Local APNs (HTTP/2 over TLS): verifies, records and prints notifications.",
    )
    env = os.environ.get
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=2197)
    parser.add_argument("--team-id", default=env("TIDINGS_APNS_TEAM_ID"))
    parser.add_argument("--key-id", default=env("TIDINGS_APNS_KEY_ID"))
    parser.add_argument(
        "--key-file",
        help="the .p8 auth key, or its public key (default: $TIDINGS_APNS_PRIVATE_KEY)",
    )
    parser.add_argument("--topic", help="the only bundle id to accept (default: any)")
    parser.add_argument("--cert-dir", help="write ca.pem etc. here (default: a temporary dir)")
    args = parser.parse_args(argv)
    key = Path(args.key_file).read_text() if args.key_file else env("TIDINGS_APNS_PRIVATE_KEY")
    if not (args.team_id and args.key_id and key):
        parser.error("--team-id, --key-id and --key-file (or TIDINGS_APNS_* variables) are needed")
    try:
        emulator = ApnsEmulator(
            args.team_id, args.key_id, key, topic=args.topic, on_received=_print_line
        )
    except (ValueError, TypeError) as exc:
        parser.error(f"the key is not an EC P-256 PEM key: {exc}")
    asyncio.run(
        serve_until_signalled(
            emulator,
            lambda: emulator.start(args.host, args.port, cert_dir=args.cert_dir),
            lambda: f"apns emulator listening on {emulator.url} ca_file={emulator.ca_file}",
            "apns emulator stopped",
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
