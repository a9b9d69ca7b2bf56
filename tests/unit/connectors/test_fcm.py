import asyncio
from typing import Any

import httpx
import orjson
import pytest

from connectors.emulators.fcm import make_service_account
from connectors.fcm import (
    MAX_PAYLOAD_BYTES,
    FcmChannel,
    FcmConfig,
    build_request,
    classify,
    encode_message,
    needs_fresh_token,
)
from connectors.verdict import InvalidMessage, Outcome, Verdict

ACCOUNT = make_service_account("demo-project", "https://oauth.test/token")
CONFIG = FcmConfig(service_account=ACCOUNT)
FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"


def make_message(**overrides: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "delivery_id": "dlv_0123456789abcdef0123456789abcdef",
        "notification_id": "ntf_1",
        "tenant_id": "acme",
        "channel": "push",
        "category": "billing",
        "priority": "high",
        "recipient": {"user_id": "u-42", "push_tokens": ["fcm:device-token-1"]},
        "title": "Invoice paid",
        "body": "Invoice #7 was paid — thank you.",
        "data": {"invoice": "7"},
        "metadata": {},
        "attempt": 1,
        "created_at": 1_699_999_999_123,
    }
    message.update(overrides)
    return message


def fcm_message(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = orjson.loads(encode_message(make_message(**overrides)))
    return body["message"]


def google_error(status: int, google_status: str, message: str, code: str | None = None) -> bytes:
    error: dict[str, Any] = {"code": status, "message": message, "status": google_status}
    if code is not None:
        error["details"] = [{"@type": FCM_ERROR, "errorCode": code}]
    return orjson.dumps({"error": error})


# -- config -------------------------------------------------------------------------------


def test_config_is_hashable_with_a_decoded_key_file() -> None:
    assert hash(CONFIG) == hash(FcmConfig(service_account=dict(ACCOUNT)))


def test_config_hides_the_service_account() -> None:
    text = repr(CONFIG)

    assert "PRIVATE KEY" not in text
    assert ACCOUNT["private_key_id"] not in text
    assert "base_url='https://fcm.googleapis.com'" in text


def test_token_endpoint_defaults_to_the_service_accounts() -> None:
    assert CONFIG.token_endpoint == "https://oauth.test/token"
    assert FcmConfig(ACCOUNT, token_uri="http://127.0.0.1:9/token").token_endpoint == (
        "http://127.0.0.1:9/token"
    )


@pytest.mark.parametrize(
    "overrides",
    [{"base_url": "fcm.googleapis.com"}, {"token_uri": "file:///token"}, {"timeout_s": 0}],
)
def test_config_is_validated(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        FcmConfig(ACCOUNT, **overrides)


def test_config_refuses_a_broken_service_account() -> None:
    with pytest.raises(ValueError, match="client_email"):
        FcmConfig({k: v for k, v in ACCOUNT.items() if k != "client_email"})


# -- the request ----------------------------------------------------------------------------


def test_request_url_and_headers() -> None:
    request = build_request(make_message(), CONFIG, access_token="ya29.abc")

    assert request.method == "POST"
    assert request.url == "https://fcm.googleapis.com/v1/projects/demo-project/messages:send"
    assert request.headers["authorization"] == "Bearer ya29.abc"
    assert request.headers["content-type"] == "application/json; charset=UTF-8"


def test_base_url_points_elsewhere() -> None:
    config = FcmConfig(ACCOUNT, base_url="http://127.0.0.1:8090/")

    request = build_request(make_message(), config, access_token="t")

    assert request.url == "http://127.0.0.1:8090/v1/projects/demo-project/messages:send"


def test_message_body() -> None:
    assert fcm_message() == {
        "token": "device-token-1",
        "notification": {"title": "Invoice paid", "body": "Invoice #7 was paid — thank you."},
        "data": {
            "invoice": "7",
            "delivery_id": "dlv_0123456789abcdef0123456789abcdef",
            "notification_id": "ntf_1",
        },
        "android": {
            "priority": "high",
            "notification": {"tag": "dlv_0123456789abcdef0123456789abcdef"},
        },
        "apns": {
            "headers": {
                "apns-priority": "10",
                "apns-collapse-id": "dlv_0123456789abcdef0123456789abcdef",
            }
        },
    }


@pytest.mark.parametrize(
    ("priority", "android", "apns"),
    [
        ("low", "normal", "5"),
        ("normal", "normal", "5"),
        ("high", "high", "10"),
        ("critical", "high", "10"),
    ],
)
def test_priority_mapping(priority: str, android: str, apns: str) -> None:
    message = fcm_message(priority=priority)

    assert message["android"]["priority"] == android
    assert message["apns"]["headers"]["apns-priority"] == apns


def test_a_token_without_prefix_is_used_as_it_is() -> None:
    message = fcm_message(recipient={"push_tokens": ["cXk1:APA91bH-abc_def"]})

    assert message["token"] == "cXk1:APA91bH-abc_def"


def test_our_ids_win_over_the_producers_data() -> None:
    message = fcm_message(data={"delivery_id": "forged", "k": "v"})

    assert message["data"]["delivery_id"] == "dlv_0123456789abcdef0123456789abcdef"
    assert message["data"]["k"] == "v"


def test_without_title_or_body_it_is_a_data_message() -> None:
    message = fcm_message(title=None, body="")

    assert "notification" not in message
    assert "apns" not in message
    assert message["android"] == {"priority": "high"}


def test_collapse_key_comes_from_metadata() -> None:
    assert fcm_message(metadata={"collapse_key": "score"})["android"]["collapse_key"] == "score"
    assert "collapse_key" not in fcm_message()["android"]


def test_a_delivery_id_too_long_for_apns_is_not_its_collapse_id() -> None:
    message = fcm_message(delivery_id="dlv_" + "a" * 61)

    assert "apns-collapse-id" not in message["apns"]["headers"]
    assert message["data"]["delivery_id"] == "dlv_" + "a" * 61


def payload_of_size(size: int) -> dict[str, Any]:
    message = make_message(data={"pad": ""})
    body = orjson.loads(encode_message(message))["message"]
    base = len(orjson.dumps({"notification": body["notification"], "data": body["data"]}))
    return make_message(data={"pad": "x" * (size - base)})


def test_payload_up_to_the_limit_is_sent() -> None:
    encode_message(payload_of_size(MAX_PAYLOAD_BYTES))


def test_payload_over_the_limit_is_invalid() -> None:
    with pytest.raises(InvalidMessage, match="4097 bytes; the limit is 4096"):
        encode_message(payload_of_size(MAX_PAYLOAD_BYTES + 1))


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        ({"recipient": {"push_tokens": []}}, "exactly one push token, not 0"),
        ({"recipient": {"push_tokens": ["fcm:a", "fcm:b"]}}, "exactly one push token, not 2"),
        ({"recipient": {"user_id": "u"}}, "exactly one push token"),
        ({"recipient": {"push_tokens": ["apns:abcdef"]}}, "APNs token"),
        ({"recipient": {"push_tokens": ["fcm:"]}}, "empty"),
        ({"recipient": {"push_tokens": ["fcm:has space"]}}, "printable"),
        ({"recipient": {"push_tokens": [42]}}, "not a string"),
        ({"data": {"n": 1}}, "string to string"),
        ({"data": {"from": "x"}}, "reserved"),
        ({"data": {"gcm": "x"}}, "reserved"),
        ({"data": {"google.c.a.e": "1"}}, "reserved"),
        ({"priority": "urgent"}, "priority"),
        ({"delivery_id": ""}, "delivery_id"),
        ({"notification_id": None}, "notification_id"),
        ({"title": 7}, "title"),
    ],
)
def test_messages_that_can_never_be_sent(overrides: dict[str, Any], complaint: str) -> None:
    with pytest.raises(InvalidMessage, match=complaint):
        encode_message(make_message(**overrides))


# -- classify -------------------------------------------------------------------------------

RA = {"Retry-After": "30"}

# One row per documented answer: (status, headers, body, outcome, retry_after).
# Source: FCM HTTP v1 reference "ErrorCode", unless the comment says otherwise.
ANSWERS: list[tuple[str, int, dict[str, str], bytes, Outcome, float | None]] = [
    ("sent", 200, {}, b'{"name": "projects/p/messages/0:1%ab"}', Outcome.DELIVERED, None),
    (
        "UNREGISTERED",
        404,
        {},
        google_error(404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED"),
        Outcome.ADDRESS_INVALID,
        None,
    ),
    (
        "SENDER_ID_MISMATCH",
        403,
        {},
        google_error(403, "PERMISSION_DENIED", "SenderId mismatch", "SENDER_ID_MISMATCH"),
        Outcome.ADDRESS_INVALID,
        None,
    ),
    (
        "QUOTA_EXCEEDED",
        429,
        RA,
        google_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded.", "QUOTA_EXCEEDED"),
        Outcome.RETRY,
        30.0,
    ),
    (
        "QUOTA_EXCEEDED without Retry-After",
        429,
        {},
        google_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded.", "QUOTA_EXCEEDED"),
        Outcome.RETRY,
        None,
    ),
    (
        "UNAVAILABLE",
        503,
        RA,
        google_error(503, "UNAVAILABLE", "The service is currently unavailable.", "UNAVAILABLE"),
        Outcome.RETRY,
        30.0,
    ),
    (
        "INTERNAL",
        500,
        RA,
        google_error(500, "INTERNAL", "Internal error encountered.", "INTERNAL"),
        Outcome.RETRY,
        30.0,
    ),
    (
        "INVALID_ARGUMENT",
        400,
        {},
        google_error(
            400, "INVALID_ARGUMENT", "Request contains an invalid argument.", "INVALID_ARGUMENT"
        ),
        Outcome.REJECTED,
        None,
    ),
    # "Best practices for FCM registration token management": this message means a bad token.
    (
        "INVALID_ARGUMENT, bad token",
        400,
        {},
        google_error(
            400,
            "INVALID_ARGUMENT",
            "The registration token is not a valid FCM registration token",
            "INVALID_ARGUMENT",
        ),
        Outcome.ADDRESS_INVALID,
        None,
    ),
    # Error codes page, example 1: a BadRequest detail and no FcmError.
    (
        "INVALID_ARGUMENT, field violation",
        400,
        {},
        google_error(
            400, "INVALID_ARGUMENT", "Invalid value at 'message.data[0].value' (TYPE_STRING), 12"
        ),
        Outcome.REJECTED,
        None,
    ),
    (
        "THIRD_PARTY_AUTH_ERROR",
        401,
        {},
        google_error(
            401,
            "UNAUTHENTICATED",
            "Auth error from APNS or Web Push Service",
            "THIRD_PARTY_AUTH_ERROR",
        ),
        Outcome.REJECTED,
        None,
    ),
    (
        "UNAUTHENTICATED (after the refresh)",
        401,
        {},
        google_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials."),
        Outcome.REJECTED,
        None,
    ),
    (
        "UNSPECIFIED_ERROR falls back to the status",
        503,
        {},
        google_error(503, "UNAVAILABLE", "?", "UNSPECIFIED_ERROR"),
        Outcome.RETRY,
        None,
    ),
    (
        "PERMISSION_DENIED (no FcmError)",
        403,
        {},
        google_error(
            403, "PERMISSION_DENIED", "Permission 'cloudmessaging.messages.create' denied"
        ),
        Outcome.REJECTED,
        None,
    ),
    (
        "NOT_FOUND project (no FcmError)",
        404,
        {},
        google_error(404, "NOT_FOUND", "Requested entity was not found."),
        Outcome.REJECTED,
        None,
    ),
    # firebase-admin-go#719: project quota with only a google.rpc.ErrorInfo detail.
    (
        "RESOURCE_EXHAUSTED (no FcmError)",
        429,
        {"Retry-After": "60"},
        google_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded for quota metric 'Send requests'"),
        Outcome.RETRY,
        60.0,
    ),
    ("502 from a proxy, HTML body", 502, {}, b"<html>Bad Gateway</html>", Outcome.RETRY, None),
    ("redirect", 302, {}, b"", Outcome.REJECTED, None),
]


@pytest.mark.parametrize(
    ("status", "headers", "body", "outcome", "retry_after"),
    [row[1:] for row in ANSWERS],
    ids=[row[0] for row in ANSWERS],
)
def test_classify(
    status: int,
    headers: dict[str, str],
    body: bytes,
    outcome: Outcome,
    retry_after: float | None,
) -> None:
    verdict = classify(status, headers, body)

    assert verdict.outcome is outcome
    assert verdict.retry_after == retry_after
    assert verdict.status_code == status


def test_reason_names_the_error_code_and_quotes_googles_message() -> None:
    verdict = classify(
        404, {}, google_error(404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED")
    )

    assert verdict.reason == (
        "FCM HTTP 404 UNREGISTERED: device token is no longer registered "
        "(Requested entity was not found.)"
    )


@pytest.mark.parametrize(
    ("status", "body", "fresh"),
    [
        (401, google_error(401, "UNAUTHENTICATED", "Request had invalid authentication"), True),
        (401, b"", True),
        (401, google_error(401, "UNAUTHENTICATED", "x", "THIRD_PARTY_AUTH_ERROR"), False),
        (403, google_error(403, "PERMISSION_DENIED", "x"), False),
        (200, b"{}", False),
    ],
)
def test_needs_fresh_token(status: int, body: bytes, fresh: bool) -> None:
    assert needs_fresh_token(status, body) is fresh


# -- the channel over a mock transport ------------------------------------------------------


class FakeGoogle:
    """Answers the token endpoint and messages:send from scripted queues, counting calls."""

    def __init__(self, sends: list[httpx.Response], tokens: list[httpx.Response] | None = None):
        self.sends, self.tokens = sends, tokens or []
        self.calls: list[str] = []
        self.revoked: set[str] = set()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token":
            self.calls.append("token")
            if self.tokens:
                return self.tokens.pop(0)
            n = self.calls.count("token")
            return httpx.Response(
                200, json={"access_token": f"t{n}", "expires_in": 3599, "token_type": "Bearer"}
            )
        authorization = request.headers["authorization"]
        self.calls.append(f"send {authorization}")
        if authorization.removeprefix("Bearer ") in self.revoked:
            return UNAUTHENTICATED
        return self.sends.pop(0) if self.sends else httpx.Response(200, json={"name": "n"})


def channel_for(google: FakeGoogle) -> FcmChannel:
    return FcmChannel(CONFIG, httpx.AsyncClient(transport=httpx.MockTransport(google)))


UNAUTHENTICATED = httpx.Response(
    401, content=google_error(401, "UNAUTHENTICATED", "Request had invalid authentication")
)


async def test_a_401_is_retried_once_with_a_new_token_then_rejected() -> None:
    google = FakeGoogle(sends=[UNAUTHENTICATED, UNAUTHENTICATED])
    channel = channel_for(google)

    verdict = await channel.send(make_message())

    assert verdict.outcome is Outcome.REJECTED
    assert verdict.status_code == 401
    assert google.calls == ["token", "send Bearer t1", "token", "send Bearer t2"]


async def test_third_party_auth_error_does_not_refresh_the_token() -> None:
    body = google_error(401, "UNAUTHENTICATED", "Auth error", "THIRD_PARTY_AUTH_ERROR")
    google = FakeGoogle(sends=[httpx.Response(401, content=body)])

    verdict = await channel_for(google).send(make_message())

    assert verdict.outcome is Outcome.REJECTED
    assert google.calls == ["token", "send Bearer t1"]


async def test_concurrent_sends_share_one_token_fetch() -> None:
    google = FakeGoogle(sends=[])
    channel = channel_for(google)

    verdicts = await asyncio.gather(*(channel.send(make_message()) for _ in range(20)))

    assert all(v.outcome is Outcome.DELIVERED for v in verdicts)
    assert google.calls.count("token") == 1


async def test_concurrent_401s_refresh_the_token_once() -> None:
    google = FakeGoogle(sends=[])
    channel = channel_for(google)
    await channel.send(make_message())
    google.revoked.add("t1")

    verdicts = await asyncio.gather(*(channel.send(make_message()) for _ in range(5)))

    assert all(v.outcome is Outcome.DELIVERED for v in verdicts)
    assert google.calls.count("token") == 2
    assert google.calls.count("send Bearer t2") == 5


async def test_a_refused_grant_is_the_verdict_and_nothing_is_sent() -> None:
    refused = httpx.Response(400, json={"error": "invalid_grant", "error_description": "Bad"})
    google = FakeGoogle(sends=[], tokens=[refused])

    verdict = await channel_for(google).send(make_message())

    assert verdict == Verdict.rejected(
        "token endpoint HTTP 400: grant refused: invalid_grant - Bad", status_code=400
    )
    assert google.calls == ["token"]


async def test_token_endpoint_unreachable_is_a_retry() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    channel = FcmChannel(CONFIG, httpx.AsyncClient(transport=httpx.MockTransport(refuse)))

    verdict = await channel.send(make_message())

    assert verdict.outcome is Outcome.RETRY
    assert verdict.reason == "token endpoint: ConnectError: connection refused"


async def test_an_invalid_message_fetches_no_token() -> None:
    google = FakeGoogle(sends=[])

    with pytest.raises(InvalidMessage):
        await channel_for(google).send(make_message(recipient={"push_tokens": []}))
    assert google.calls == []


async def test_aclose_closes_only_a_client_it_made() -> None:
    client = httpx.AsyncClient(transport=httpx.MockTransport(FakeGoogle(sends=[])))
    await FcmChannel(CONFIG, client).aclose()
    assert not client.is_closed
    await client.aclose()

    own = FcmChannel(CONFIG)
    await own.aclose()
    assert own._client.is_closed
