"""Tests for connectors/apns.py: the provider token, request building and classification."""

import uuid
from typing import Any

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from connectors.apns import (
    MAX_PAYLOAD_BYTES,
    TOKEN_MAX_AGE_S,
    TOKEN_MIN_REFRESH_S,
    TOKEN_REFRESH_AFTER_S,
    ApnsConfig,
    apns_id_for,
    build_request,
    classify,
    current_token,
    mint_provider_token,
    token_after_expiry,
)
from connectors.emulators.apns import make_signing_key
from connectors.verdict import InvalidMessage, Outcome

KEY = make_signing_key()
CONFIG = ApnsConfig(KEY.team_id, KEY.key_id, KEY.private_key, "com.example.app")
NOW = 1_700_000_000
DEVICE = "a1b2c3d4" * 8


def make_message(**overrides: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "delivery_id": "dlv_0123456789abcdef0123456789abcdef",
        "notification_id": "ntf_1",
        "tenant_id": "acme",
        "channel": "push",
        "category": "billing",
        "priority": "high",
        "recipient": {"user_id": "u-42", "push_tokens": [f"apns:{DEVICE}"]},
        "title": "Invoice paid",
        "body": "Invoice #7 was paid.",
        "data": {"invoice": "7"},
        "metadata": {},
        "attempt": 1,
        "created_at": 1_699_999_999_123,
    }
    message.update(overrides)
    return message


def public_key_pem(private_pem: str) -> bytes:
    key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# -- config -----------------------------------------------------------------------


def pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"team_id": "team"}, "team_id"),
        ({"key_id": "ABC"}, "key_id"),
        ({"private_key": "not a key"}, "not an unencrypted PEM"),
        ({"private_key": pem(rsa.generate_private_key(65537, 2048))}, "EC P-256"),
        ({"private_key": pem(ec.generate_private_key(ec.SECP384R1()))}, "EC P-256"),
        ({"topic": ""}, "bundle id"),
        ({"topic": "com.example\r\nx: 1"}, "bundle id"),
        ({"base_url": "api.push.apple.com"}, "base_url"),
        ({"ttl_s": -1}, "ttl_s"),
        ({"timeout_s": 0}, "timeout_s"),
    ],
)
def test_config_rejects(overrides: dict[str, Any], match: str) -> None:
    fields = {"team_id": KEY.team_id, "key_id": KEY.key_id, "private_key": KEY.private_key}
    with pytest.raises(ValueError, match=match):
        ApnsConfig(**(fields | {"topic": "com.example.app"} | overrides))


def test_config_repr_hides_the_key() -> None:
    assert "PRIVATE KEY" not in repr(CONFIG)
    assert CONFIG.base_url == "https://api.push.apple.com"


# -- provider token ---------------------------------------------------------------


def test_provider_token_header_is_exactly_alg_and_kid() -> None:
    token = mint_provider_token(CONFIG, now=NOW)

    assert jwt.get_unverified_header(token.value) == {"alg": "ES256", "kid": KEY.key_id}


def test_provider_token_claims_verify_with_the_public_key() -> None:
    token = mint_provider_token(CONFIG, now=NOW)

    claims = jwt.decode(
        token.value,
        public_key_pem(KEY.private_key),
        algorithms=["ES256"],
        options={"verify_iat": False},
    )
    assert claims == {"iss": KEY.team_id, "iat": NOW}
    assert token.issued_at == NOW
    assert token.value not in repr(token)


def test_refresh_schedule_sits_between_apples_limits() -> None:
    assert TOKEN_MIN_REFRESH_S < TOKEN_REFRESH_AFTER_S < TOKEN_MAX_AGE_S


@pytest.mark.parametrize(
    ("age_s", "reused"),
    [
        (0, True),
        (TOKEN_MIN_REFRESH_S, True),
        (TOKEN_REFRESH_AFTER_S - 1, True),
        (TOKEN_REFRESH_AFTER_S, False),
        (TOKEN_MAX_AGE_S + 1, False),
    ],
)
def test_current_token_is_cached_until_the_refresh_age(age_s: int, reused: bool) -> None:
    cached = mint_provider_token(CONFIG, now=NOW)

    token = current_token(cached, CONFIG, now=NOW + age_s)

    assert (token is cached) is reused
    assert token.issued_at == (NOW if reused else NOW + age_s)


def test_current_token_without_a_cache_mints_one() -> None:
    assert current_token(None, CONFIG, now=NOW).issued_at == NOW


def test_expired_token_is_replaced_once() -> None:
    rejected = mint_provider_token(CONFIG, now=NOW)

    first = token_after_expiry(rejected, rejected, CONFIG, now=NOW + 10)
    second = token_after_expiry(first, rejected, CONFIG, now=NOW + 11)

    assert first is not rejected
    assert first.issued_at == NOW + 10
    assert second is first  # a concurrent send reuses the replacement


# -- build_request ----------------------------------------------------------------


def test_request() -> None:
    request = build_request(make_message(), CONFIG, token="tkn", now=NOW)

    assert request.method == "POST"
    assert request.url == f"https://api.push.apple.com/3/device/{DEVICE}"
    assert request.headers == {
        "authorization": "bearer tkn",
        "apns-topic": "com.example.app",
        "apns-push-type": "alert",
        "apns-priority": "10",
        "apns-expiration": str(NOW + CONFIG.ttl_s),
        "apns-id": apns_id_for("dlv_0123456789abcdef0123456789abcdef"),
        "content-type": "application/json",
    }
    assert orjson.loads(request.content) == {
        "aps": {"alert": {"title": "Invoice paid", "body": "Invoice #7 was paid."}},
        "delivery_id": "dlv_0123456789abcdef0123456789abcdef",
        "invoice": "7",
    }


def test_apns_id_is_a_canonical_uuid_stable_per_delivery() -> None:
    apns_id = apns_id_for("dlv_1")

    assert str(uuid.UUID(apns_id)) == apns_id  # canonical 8-4-4-4-12 lower case
    assert apns_id_for("dlv_1") == apns_id
    assert apns_id_for("dlv_2") != apns_id
    retry = build_request(make_message(delivery_id="dlv_1", attempt=3), CONFIG, token="t", now=NOW)
    assert retry.headers["apns-id"] == apns_id


@pytest.mark.parametrize(
    ("priority", "title", "body", "push_type", "apns_priority"),
    [
        ("critical", "T", "B", "alert", "10"),
        ("high", "T", "B", "alert", "10"),
        ("normal", "T", "B", "alert", "5"),
        ("low", "T", "B", "alert", "5"),
        ("high", "T", None, "alert", "10"),
        ("high", None, "B", "alert", "10"),
        ("critical", None, None, "background", "5"),  # Apple: background must be 5
        ("low", "", "", "background", "5"),
    ],
)
def test_push_type_and_priority(
    priority: str, title: str | None, body: str | None, push_type: str, apns_priority: str
) -> None:
    message = make_message(priority=priority, title=title, body=body)

    request = build_request(message, CONFIG, token="t", now=NOW)

    assert request.headers["apns-push-type"] == push_type
    assert request.headers["apns-priority"] == apns_priority


def test_alert_has_only_the_parts_given() -> None:
    request = build_request(make_message(title=None), CONFIG, token="t", now=NOW)

    assert orjson.loads(request.content)["aps"] == {"alert": {"body": "Invoice #7 was paid."}}


def test_background_payload_is_content_available() -> None:
    request = build_request(make_message(title=None, body=None), CONFIG, token="t", now=NOW)

    assert orjson.loads(request.content)["aps"] == {"content-available": 1}


def test_sound_and_collapse_id_come_from_data() -> None:
    data = {"sound": "chime.caf", "collapse_id": "invoice-7"}

    request = build_request(make_message(data=data), CONFIG, token="t", now=NOW)

    assert request.headers["apns-collapse-id"] == "invoice-7"
    payload = orjson.loads(request.content)
    assert payload["aps"]["sound"] == "chime.caf"
    assert payload["collapse_id"] == "invoice-7"


def test_zero_ttl_asks_apns_to_try_once() -> None:
    config = ApnsConfig(KEY.team_id, KEY.key_id, KEY.private_key, "com.example.app", ttl_s=0)

    request = build_request(make_message(), config, token="t", now=NOW)

    assert request.headers["apns-expiration"] == "0"


def test_unprefixed_token_and_sandbox_url() -> None:
    config = ApnsConfig(
        KEY.team_id,
        KEY.key_id,
        KEY.private_key,
        "com.example.app",
        base_url="https://api.sandbox.push.apple.com/",
    )
    message = make_message(recipient={"push_tokens": [DEVICE.upper() + "00"]})

    request = build_request(message, config, token="t", now=NOW)

    assert request.url == f"https://api.sandbox.push.apple.com/3/device/{DEVICE.upper()}00"


def test_payload_of_exactly_the_limit_is_sent() -> None:
    overhead = len(build_request(make_message(body="x"), CONFIG, token="t", now=NOW).content) - 1
    body = "x" * (MAX_PAYLOAD_BYTES - overhead)

    request = build_request(make_message(body=body), CONFIG, token="t", now=NOW)

    assert len(request.content) == MAX_PAYLOAD_BYTES


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"recipient": {"push_tokens": []}}, "no push token"),
        ({"recipient": {"user_id": "u-42"}}, "no push token"),
        ({"recipient": None}, "no push token"),
        ({"recipient": {"push_tokens": [DEVICE, DEVICE]}}, "has 2 push tokens"),
        ({"recipient": {"push_tokens": [f"fcm:{DEVICE}"]}}, "FCM token"),
        ({"recipient": {"push_tokens": ["apns:" + "g" * 64]}}, "64\\+ hex"),
        ({"recipient": {"push_tokens": ["apns:" + "a" * 63]}}, "64\\+ hex"),
        ({"recipient": {"push_tokens": [f"apns:{DEVICE}/../x"]}}, "64\\+ hex"),
        ({"delivery_id": ""}, "no delivery_id"),
        ({"data": {"aps": "x"}}, "reserved"),
        ({"data": {"delivery_id": "x"}}, "reserved"),
        ({"data": {"collapse_id": "c" * 65}}, "APNs allows 64"),
        ({"data": {"collapse_id": "a\r\napns-topic: evil"}}, "printable ASCII"),
        ({"data": {"collapse_id": "café"}}, "printable ASCII"),
        ({"body": "x" * MAX_PAYLOAD_BYTES}, f"the limit is {MAX_PAYLOAD_BYTES}"),
    ],
)
def test_invalid_message(overrides: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidMessage, match=reason):
        build_request(make_message(**overrides), CONFIG, token="t", now=NOW)


def test_collapse_id_of_64_bytes_is_sent() -> None:
    message = make_message(data={"collapse_id": "c" * 64})

    assert build_request(message, CONFIG, token="t", now=NOW).headers["apns-collapse-id"]


# -- classify ---------------------------------------------------------------------

_A, _R, _X, _D = Outcome.ADDRESS_INVALID, Outcome.RETRY, Outcome.REJECTED, Outcome.DELIVERED

# One row per status and reason in Apple's "Handling notification responses from APNs".
CLASSIFY_ROWS = [
    (200, None, _D),
    (400, "BadCollapseId", _X),
    (400, "BadDeviceToken", _A),
    (400, "BadExpirationDate", _X),
    (400, "BadMessageId", _X),
    (400, "BadPriority", _X),
    (400, "BadTopic", _X),
    (400, "DeviceTokenNotForTopic", _A),
    (400, "DuplicateHeaders", _X),
    (400, "IdleTimeout", _R),
    (400, "InvalidPushType", _X),
    (400, "MissingDeviceToken", _X),
    (400, "MissingTopic", _X),
    (400, "PayloadEmpty", _X),
    (400, "TopicDisallowed", _X),
    (403, "BadCertificate", _X),
    (403, "BadCertificateEnvironment", _X),
    (403, "ExpiredProviderToken", _R),
    (403, "Forbidden", _X),
    (403, "InvalidProviderToken", _X),
    (403, "MissingProviderToken", _X),
    (403, "UnrelatedKeyIdInToken", _X),
    (403, "BadEnvironmentKeyInToken", _X),
    (404, "BadPath", _X),
    (405, "MethodNotAllowed", _X),
    (410, "ExpiredToken", _A),
    (410, "Unregistered", _A),
    (413, "PayloadTooLarge", _X),
    (429, "TooManyProviderTokenUpdates", _R),
    (429, "TooManyRequests", _R),
    (500, "InternalServerError", _R),
    (503, "ServiceUnavailable", _R),
    (503, "Shutdown", _R),
    # Not documented: a proxy's or load balancer's answer.
    (502, None, _R),
    (401, None, _X),
    (301, None, _X),
]


@pytest.mark.parametrize(("status", "reason", "outcome"), CLASSIFY_ROWS)
def test_classify(status: int, reason: str | None, outcome: Outcome) -> None:
    body = orjson.dumps({"reason": reason}) if reason else b""

    verdict = classify(status, {"apns-id": "0f0e"}, body)

    assert verdict.outcome is outcome
    assert verdict.status_code == status
    if reason:
        assert verdict.reason.startswith(f"{reason} (HTTP {status}): ")
        assert "[apns-id 0f0e]" in verdict.reason


def test_unregistered_says_since_when() -> None:
    body = orjson.dumps({"reason": "Unregistered", "timestamp": 1_700_000_000_000})

    verdict = classify(410, {}, body)

    assert verdict.reason == (
        "Unregistered (HTTP 410): device token is no longer active; "
        "inactive since 2023-11-14T22:13:20+00:00"
    )


def test_retry_after_is_honoured_when_given() -> None:
    body = orjson.dumps({"reason": "TooManyRequests"})

    assert classify(429, {"Retry-After": "7"}, body).retry_after == 7.0
    assert classify(429, {}, body).retry_after is None


@pytest.mark.parametrize("body", [b"<html>502</html>", b"[1]", b'{"reason": 7}', b"\xff"])
def test_unreadable_body_still_classifies(body: bytes) -> None:
    verdict = classify(400, {}, body)

    assert verdict.outcome is Outcome.REJECTED
    assert verdict.reason.startswith("no reason (HTTP 400)")
