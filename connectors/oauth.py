"""Google service-account OAuth 2.0, sans-IO: the JWT bearer grant and an access-token cache.

Google's documented flow for server-to-server calls ("Using OAuth 2.0 for
Server to Server Applications", developers.google.com/identity/protocols/oauth2/
service-account#authorizingrequests), which is the JWT bearer grant of RFC 7523
§2.1:

1. sign a JWT with the service account's RSA key (RS256) claiming
   ``iss`` = the account's email, ``scope``, ``aud`` = the token endpoint,
   ``iat`` and ``exp`` at most one hour later;
2. POST it as ``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<jwt>``
   (form-encoded) to the token endpoint;
3. use the ``access_token`` from the answer until ``expires_in`` runs out.

Nothing here does I/O. :func:`token_flow` is a generator in the style of
httpx's ``Auth.auth_flow``: it yields the :class:`HttpRequest` to send (if the
cache has no usable token) and receives the :class:`Response`; a connector's
thin async edge drives it. A refused or failed grant becomes a :class:`Verdict`,
like any other provider answer.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, NamedTuple
from urllib.parse import urlencode, urlsplit

import jwt
import orjson
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from connectors.transport import retry_after_seconds
from connectors.verdict import HttpRequest, Outcome, Verdict

__all__ = [
    "FIREBASE_MESSAGING_SCOPE",
    "GOOGLE_TOKEN_URI",
    "JWT_BEARER_GRANT_TYPE",
    "AccessToken",
    "Response",
    "ServiceAccount",
    "TokenCache",
    "build_assertion",
    "load_service_account",
    "parse_token_response",
    "token_flow",
    "token_request",
]

# FCM HTTP v1 "Authorize send requests": the scope a send token needs.
FIREBASE_MESSAGING_SCOPE: Final = "https://www.googleapis.com/auth/firebase.messaging"
# RFC 7523 §2.1: the grant type that carries a JWT as the authorization grant.
JWT_BEARER_GRANT_TYPE: Final = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# The token_uri in every Google service-account key file.
GOOGLE_TOKEN_URI: Final = "https://oauth2.googleapis.com/token"  # noqa: S105 (a URL)
# Google, service-account flow, JWT claim set: "exp ... has a maximum of 1 hour
# after the issued time".
MAX_ASSERTION_LIFETIME_S: Final = 3600
# google-auth (google/auth/_helpers.py REFRESH_THRESHOLD) refreshes 3 min 45 s
# before expiry, so a token is never presented in the last moments of its life.
REFRESH_MARGIN_S: Final = 225.0

_REQUIRED_FIELDS: Final = (
    "type",
    "project_id",
    "private_key_id",
    "private_key",
    "client_email",
    "token_uri",
)
_EXCERPT_CHARS: Final = 200


class Response(NamedTuple):
    """The parts of an HTTP answer a sans-IO flow reads."""

    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class ServiceAccount:
    """The fields of a Google service-account key file that the grant uses."""

    project_id: str
    client_email: str
    private_key_id: str
    token_uri: str
    signing_key: RSAPrivateKey = field(repr=False, compare=False)

    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> ServiceAccount:
        """Validate a decoded key file; raises ValueError naming what is wrong."""
        missing = [name for name in _REQUIRED_FIELDS if not isinstance(info.get(name), str)]
        if missing:
            raise ValueError(f"service account has no {', '.join(missing)}")
        if info["type"] != "service_account":
            raise ValueError(f"service account type is {info['type']!r}, not 'service_account'")
        if urlsplit(info["token_uri"]).scheme not in ("http", "https"):
            raise ValueError("service account token_uri is not an http(s) URL")
        try:
            key = serialization.load_pem_private_key(info["private_key"].encode(), password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise ValueError(f"service account private_key is not a PEM key: {exc}") from exc
        if not isinstance(key, RSAPrivateKey):
            raise ValueError("service account private_key is not an RSA key (RS256 needs one)")
        return cls(
            project_id=info["project_id"],
            client_email=info["client_email"],
            private_key_id=info["private_key_id"],
            token_uri=info["token_uri"],
            signing_key=key,
        )


def load_service_account(source: Mapping[str, Any] | str | os.PathLike[str]) -> ServiceAccount:
    """A service account from a decoded key file, its JSON text, or a path to it.

    A string starting with ``{`` is taken as the JSON itself (the usual way to
    pass a secret through one environment variable); any other string is a path.
    """
    if isinstance(source, Mapping):
        return ServiceAccount.from_info(source)
    if isinstance(source, str) and source.lstrip().startswith("{"):
        text: str | bytes = source
        origin = "service account JSON"
    else:
        path = Path(source)
        origin = f"service account file {str(path)!r}"
        try:
            text = path.read_bytes()
        except OSError as exc:
            raise ValueError(f"cannot read {origin}: {exc.strerror or exc}") from exc
    try:
        info = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"{origin} is not JSON: {exc}") from exc
    if not isinstance(info, dict):
        raise ValueError(f"{origin} is not a JSON object")
    return ServiceAccount.from_info(info)


# -- the grant ---------------------------------------------------------------------


def build_assertion(
    account: ServiceAccount,
    *,
    scope: str,
    audience: str,
    now: int,
    lifetime_s: int = MAX_ASSERTION_LIFETIME_S,
) -> str:
    """The signed JWT for the grant, issued at ``now`` (Unix seconds)."""
    if not 0 < lifetime_s <= MAX_ASSERTION_LIFETIME_S:
        raise ValueError(f"assertion lifetime must be 1..{MAX_ASSERTION_LIFETIME_S} s")
    claims = {
        "iss": account.client_email,
        "scope": scope,
        "aud": audience,
        "iat": now,
        "exp": now + lifetime_s,
    }
    # The key id lets Google pick the public key without trying each of the account's.
    return jwt.encode(
        claims, account.signing_key, algorithm="RS256", headers={"kid": account.private_key_id}
    )


def token_request(account: ServiceAccount, *, scope: str, token_uri: str, now: int) -> HttpRequest:
    """The form POST that exchanges a fresh assertion for an access token."""
    assertion = build_assertion(account, scope=scope, audience=token_uri, now=now)
    return HttpRequest(
        method="POST",
        url=token_uri,
        headers={
            "content-type": "application/x-www-form-urlencoded",
            "accept": "application/json",
        },
        content=urlencode({"grant_type": JWT_BEARER_GRANT_TYPE, "assertion": assertion}).encode(),
    )


@dataclass(frozen=True, slots=True)
class AccessToken:
    value: str = field(repr=False)
    issued_at: float
    """When it was requested (Unix seconds): its lifetime is counted from before the round trip."""
    expires_at: float

    def usable_at(self, now: float, refresh_margin_s: float = REFRESH_MARGIN_S) -> bool:
        """Whether to present it at ``now`` rather than fetch a new one.

        The margin is capped at half the token's lifetime so that a short-lived
        token (an emulator's, in tests) is still reused rather than refetched on
        every call.
        """
        lead = min(refresh_margin_s, (self.expires_at - self.issued_at) / 2)
        return now < self.expires_at - lead


def parse_token_response(
    status: int, headers: Mapping[str, str], body: bytes, *, issued_at: float
) -> AccessToken | Verdict:
    """The access token from the token endpoint's answer, or the verdict for a failed grant."""
    if 200 <= status <= 299:
        token = _access_token(body, issued_at)
        if token is not None:
            return token
        # A provider fault, not ours: the same grant may well succeed next time.
        return Verdict.retry(
            f"token endpoint answered HTTP {status} without a bearer access_token",
            status_code=status,
        )
    outcome, why = next(
        ((outcome, why) for low, high, outcome, why in _TOKEN_RULES if low <= status <= high),
        (Outcome.REJECTED, "unexpected status"),
    )
    reason = f"token endpoint HTTP {status}: {why}{_oauth_error(body)}"
    if outcome is Outcome.RETRY:
        return Verdict.retry(reason, retry_after=retry_after_seconds(headers), status_code=status)
    return Verdict.rejected(reason, status_code=status)


# (lowest status, highest status, outcome, why); first match wins.
_TOKEN_RULES: Final[tuple[tuple[int, int, Outcome, str], ...]] = (
    # Throttled; Google's token endpoint may add Retry-After.
    (429, 429, Outcome.RETRY, "rate limited"),
    # RFC 6749 §5.2: errors are 400, or 401 for invalid_client. Google answers
    # invalid_grant for a bad signature, an unknown or deleted key, or iat/exp outside
    # its window (clock skew), and invalid_scope for a scope it does not know: all need
    # an operator, not another attempt with the same credentials.
    (400, 499, Outcome.REJECTED, "grant refused"),
    (500, 599, Outcome.RETRY, "token endpoint error"),
)


def _access_token(body: bytes, issued_at: float) -> AccessToken | None:
    # RFC 6749 §5.1: access_token and token_type are required; expires_in is
    # recommended, and Google always sends it (3599 for a fresh token).
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(answer, dict):
        return None
    value, token_type, expires_in = (
        answer.get("access_token"),
        answer.get("token_type"),
        answer.get("expires_in"),
    )
    if not isinstance(value, str) or not value:
        return None
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        return None
    if isinstance(expires_in, bool) or not isinstance(expires_in, int) or expires_in <= 0:
        return None
    return AccessToken(value=value, issued_at=issued_at, expires_at=issued_at + expires_in)


def _oauth_error(body: bytes) -> str:
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        excerpt = body[: _EXCERPT_CHARS * 4].decode("utf-8", "replace").strip()
        return f": {excerpt[:_EXCERPT_CHARS]}" if excerpt else ""
    if not isinstance(answer, dict):
        return ""
    parts = [str(answer[k])[:_EXCERPT_CHARS] for k in ("error", "error_description") if k in answer]
    return f": {' - '.join(parts)}" if parts else ""


# -- the cache and the flow ----------------------------------------------------------


class TokenCache:
    """Holds the one access token an account and scope need, until shortly before it expires."""

    def __init__(self, refresh_margin_s: float = REFRESH_MARGIN_S) -> None:
        self._refresh_margin_s = refresh_margin_s
        self._token: AccessToken | None = None

    def get(self, now: float) -> AccessToken | None:
        token = self._token
        if token is not None and token.usable_at(now, self._refresh_margin_s):
            return token
        return None

    def store(self, token: AccessToken) -> None:
        self._token = token

    def invalidate(self, token: AccessToken) -> None:
        """Forget ``token`` after the API refused it.

        Only that token: when several sends were refused the same stale token at
        once, the first to refresh stores a new one, which the others must keep.
        """
        if self._token is token:
            self._token = None


TokenFlow = Generator[HttpRequest, Response, AccessToken | Verdict]
"""Yields the token request to send, receives its :class:`Response`, returns the outcome."""


def token_flow(
    account: ServiceAccount,
    cache: TokenCache,
    *,
    scope: str,
    token_uri: str,
    clock: Callable[[], float],
) -> TokenFlow:
    """A usable access token: the cached one, else one fetched with a fresh JWT grant.

    Yields nothing when the cache has a usable token. ``clock`` gives Unix
    seconds; it stamps the assertion and times the token's expiry.
    """
    cached = cache.get(clock())
    if cached is not None:
        return cached
    issued_at = clock()
    response = yield token_request(account, scope=scope, token_uri=token_uri, now=int(issued_at))
    result = parse_token_response(
        response.status, response.headers, response.body, issued_at=issued_at
    )
    if isinstance(result, AccessToken):
        cache.store(result)
    return result
