from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from connectors.emulators.fcm import make_service_account
from connectors.oauth import (
    FIREBASE_MESSAGING_SCOPE,
    GOOGLE_TOKEN_URI,
    JWT_BEARER_GRANT_TYPE,
    AccessToken,
    Response,
    TokenCache,
    build_assertion,
    load_service_account,
    parse_token_response,
    token_flow,
    token_request,
)
from connectors.verdict import HttpRequest, Outcome, Verdict

INFO = make_service_account("demo-project")
ACCOUNT = load_service_account(INFO)
NOW = 1_700_000_000


class FakeClock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def public_key(info: dict[str, str]) -> Any:
    key = serialization.load_pem_private_key(info["private_key"].encode(), password=None)
    return key.public_key()


def token_body(**overrides: Any) -> bytes:
    answer = {"access_token": "ya29.abc", "expires_in": 3599, "token_type": "Bearer"}
    answer.update(overrides)
    return orjson.dumps({k: v for k, v in answer.items() if v is not None})


# -- the service account ------------------------------------------------------------


def test_loads_a_decoded_key_file() -> None:
    assert ACCOUNT.project_id == "demo-project"
    assert ACCOUNT.client_email == INFO["client_email"]
    assert ACCOUNT.private_key_id == INFO["private_key_id"]
    assert ACCOUNT.token_uri == GOOGLE_TOKEN_URI


def test_loads_json_text_and_a_path(tmp_path: Path) -> None:
    path = tmp_path / "sa.json"
    path.write_bytes(orjson.dumps(INFO))

    assert load_service_account(orjson.dumps(INFO).decode()) == ACCOUNT
    assert load_service_account(path) == ACCOUNT
    assert load_service_account(str(path)) == ACCOUNT


def test_repr_shows_no_key() -> None:
    assert "PRIVATE KEY" not in repr(ACCOUNT)
    assert "signing_key" not in repr(ACCOUNT)


def _ec_key_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"client_email": None}, "no client_email"),
        ({"private_key": None, "token_uri": None}, "no private_key, token_uri"),
        ({"type": "authorized_user"}, "not 'service_account'"),
        ({"token_uri": "ftp://example.com/token"}, "not an http"),
        ({"private_key": "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n"}, "PEM"),
        ({"private_key": _ec_key_pem()}, "not an RSA key"),
    ],
)
def test_invalid_key_files_are_refused(change: dict[str, Any], complaint: str) -> None:
    info = {k: v for k, v in (INFO | change).items() if v is not None}

    with pytest.raises(ValueError, match=complaint):
        load_service_account(info)


def test_unreadable_or_malformed_sources_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read"):
        load_service_account(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="not JSON"):
        load_service_account("{not json")
    with pytest.raises(ValueError, match="not a JSON object"):
        (tmp_path / "list.json").write_text("[1]")
        load_service_account(tmp_path / "list.json")


# -- the assertion --------------------------------------------------------------------


def test_assertion_claims_and_header() -> None:
    assertion = build_assertion(
        ACCOUNT, scope=FIREBASE_MESSAGING_SCOPE, audience=GOOGLE_TOKEN_URI, now=NOW
    )

    header = jwt.get_unverified_header(assertion)
    claims = jwt.decode(assertion, options={"verify_signature": False})
    assert header == {"alg": "RS256", "typ": "JWT", "kid": INFO["private_key_id"]}
    assert claims == {
        "iss": INFO["client_email"],
        "scope": "https://www.googleapis.com/auth/firebase.messaging",
        "aud": "https://oauth2.googleapis.com/token",
        "iat": NOW,
        "exp": NOW + 3600,
    }


def test_assertion_signature_verifies_with_the_public_key() -> None:
    assertion = build_assertion(
        ACCOUNT, scope=FIREBASE_MESSAGING_SCOPE, audience=GOOGLE_TOKEN_URI, now=NOW
    )

    claims = jwt.decode(
        assertion,
        public_key(INFO),
        algorithms=["RS256"],
        audience=GOOGLE_TOKEN_URI,
        issuer=INFO["client_email"],
        options={"verify_exp": False},
    )
    assert claims["iat"] == NOW


def test_assertion_signature_does_not_verify_with_another_key() -> None:
    assertion = build_assertion(
        ACCOUNT, scope=FIREBASE_MESSAGING_SCOPE, audience=GOOGLE_TOKEN_URI, now=NOW
    )
    other = make_service_account("demo-project")

    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(
            assertion, public_key(other), algorithms=["RS256"], options={"verify_aud": False}
        )


@pytest.mark.parametrize("lifetime_s", [0, 3601])
def test_assertion_lifetime_is_at_most_an_hour(lifetime_s: int) -> None:
    with pytest.raises(ValueError, match="lifetime"):
        build_assertion(
            ACCOUNT, scope="s", audience=GOOGLE_TOKEN_URI, now=NOW, lifetime_s=lifetime_s
        )


def test_token_request_is_the_jwt_bearer_form_post() -> None:
    request = token_request(
        ACCOUNT, scope=FIREBASE_MESSAGING_SCOPE, token_uri="http://127.0.0.1:1/token", now=NOW
    )

    assert request.method == "POST"
    assert request.url == "http://127.0.0.1:1/token"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    form = parse_qs(request.content.decode(), strict_parsing=True)
    assert form["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
    assert form["grant_type"] == [JWT_BEARER_GRANT_TYPE]
    claims = jwt.decode(form["assertion"][0], options={"verify_signature": False})
    assert claims["aud"] == "http://127.0.0.1:1/token"


# -- the token endpoint's answer ------------------------------------------------------


def test_a_granted_token_expires_after_expires_in_from_when_it_was_asked_for() -> None:
    token = parse_token_response(200, {}, token_body(), issued_at=NOW)

    assert token == AccessToken(value="ya29.abc", issued_at=NOW, expires_at=NOW + 3599)
    assert "ya29" not in repr(token)


# One row per answer: (status, headers, body, outcome, retry_after, reason fragment).
TOKEN_ANSWERS: list[tuple[int, dict[str, str], bytes, Outcome, float | None, str]] = [
    # RFC 6749 §5.1: a 200 must carry access_token, token_type (and Google sends expires_in).
    (200, {}, token_body(access_token=None), Outcome.RETRY, None, "without a bearer"),
    (200, {}, token_body(token_type="mac"), Outcome.RETRY, None, "without a bearer"),
    (200, {}, token_body(expires_in=0), Outcome.RETRY, None, "without a bearer"),
    (200, {}, token_body(expires_in="3599"), Outcome.RETRY, None, "without a bearer"),
    (200, {}, b"<html>", Outcome.RETRY, None, "without a bearer"),
    # RFC 6749 §5.2 errors, as Google words them.
    (
        400,
        {},
        b'{"error": "invalid_grant", "error_description": "Invalid JWT Signature."}',
        Outcome.REJECTED,
        None,
        "invalid_grant - Invalid JWT Signature.",
    ),
    (400, {}, b'{"error": "invalid_scope"}', Outcome.REJECTED, None, "invalid_scope"),
    (401, {}, b'{"error": "invalid_client"}', Outcome.REJECTED, None, "invalid_client"),
    (429, {"Retry-After": "7"}, b"", Outcome.RETRY, 7.0, "rate limited"),
    (500, {}, b"oops", Outcome.RETRY, None, "token endpoint error: oops"),
    (503, {"retry-after": "2"}, b"{}", Outcome.RETRY, 2.0, "token endpoint error"),
    (302, {}, b"", Outcome.REJECTED, None, "unexpected status"),
]


@pytest.mark.parametrize(
    ("status", "headers", "body", "outcome", "retry_after", "fragment"), TOKEN_ANSWERS
)
def test_token_endpoint_answers(
    status: int,
    headers: dict[str, str],
    body: bytes,
    outcome: Outcome,
    retry_after: float | None,
    fragment: str,
) -> None:
    verdict = parse_token_response(status, headers, body, issued_at=NOW)

    assert isinstance(verdict, Verdict)
    assert (verdict.outcome, verdict.retry_after, verdict.status_code) == (
        outcome,
        retry_after,
        status,
    )
    assert fragment in verdict.reason


# -- the cache --------------------------------------------------------------------------


def test_token_is_refreshed_ahead_of_expiry() -> None:
    token = AccessToken("t", issued_at=NOW, expires_at=NOW + 3600)

    assert token.usable_at(NOW + 3600 - 226)
    assert not token.usable_at(NOW + 3600 - 225)  # google-auth's 3 min 45 s
    assert not token.usable_at(NOW + 3600)


def test_a_short_lived_token_is_used_for_half_its_life() -> None:
    token = AccessToken("t", issued_at=NOW, expires_at=NOW + 2)

    assert token.usable_at(NOW + 0.9)
    assert not token.usable_at(NOW + 1)


def test_cache_keeps_a_token_until_shortly_before_expiry() -> None:
    cache = TokenCache(refresh_margin_s=60)
    token = AccessToken("t", issued_at=NOW, expires_at=NOW + 3600)

    assert cache.get(NOW) is None
    cache.store(token)
    assert cache.get(NOW) is token
    assert cache.get(NOW + 3539) is token
    assert cache.get(NOW + 3540) is None


def test_invalidate_forgets_only_the_token_it_names() -> None:
    cache = TokenCache()
    old = AccessToken("old", issued_at=NOW, expires_at=NOW + 3600)
    new = AccessToken("new", issued_at=NOW, expires_at=NOW + 3600)
    cache.store(old)

    cache.invalidate(old)
    assert cache.get(NOW) is None

    cache.store(new)
    cache.invalidate(old)  # a second task refused the old token too
    assert cache.get(NOW) is new


# -- the flow ---------------------------------------------------------------------------


def run_flow(
    cache: TokenCache, clock: FakeClock, answer: Response | None
) -> tuple[list[HttpRequest], object]:
    flow = token_flow(
        ACCOUNT, cache, scope=FIREBASE_MESSAGING_SCOPE, token_uri=GOOGLE_TOKEN_URI, clock=clock
    )
    sent: list[HttpRequest] = []
    try:
        request = next(flow)
        while True:
            sent.append(request)
            assert answer is not None, "flow sent a request when none was expected"
            request = flow.send(answer)
    except StopIteration as done:
        return sent, done.value


def test_flow_fetches_a_token_then_serves_it_from_the_cache() -> None:
    cache, clock = TokenCache(), FakeClock()

    sent, token = run_flow(cache, clock, Response(200, {}, token_body()))
    assert [r.url for r in sent] == [GOOGLE_TOKEN_URI]
    assert token == AccessToken("ya29.abc", issued_at=NOW, expires_at=NOW + 3599)
    claims = jwt.decode(
        parse_qs(sent[0].content.decode())["assertion"][0], options={"verify_signature": False}
    )
    assert claims["iat"] == NOW

    clock.now = NOW + 3000
    assert run_flow(cache, clock, None) == ([], token)

    clock.now = NOW + 3599 - 225
    sent, fresh = run_flow(cache, clock, Response(200, {}, token_body(access_token="ya29.new")))
    assert len(sent) == 1
    assert isinstance(fresh, AccessToken) and fresh.value == "ya29.new"


def test_flow_returns_the_verdict_of_a_refused_grant_and_caches_nothing() -> None:
    cache, clock = TokenCache(), FakeClock()

    _, verdict = run_flow(cache, clock, Response(400, {}, b'{"error": "invalid_grant"}'))

    assert isinstance(verdict, Verdict)
    assert verdict.outcome is Outcome.REJECTED
    assert cache.get(NOW) is None
