import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import orjson
import pytest

from connectors.emulators.fcm import FcmEmulator, make_service_account
from connectors.fcm import FcmChannel, FcmConfig, build_request
from connectors.oauth import (
    FIREBASE_MESSAGING_SCOPE,
    JWT_BEARER_GRANT_TYPE,
    build_assertion,
    load_service_account,
)
from connectors.verdict import Outcome, Verdict

ACCOUNT = make_service_account("demo-project")
REPO_ROOT = Path(__file__).resolve().parents[3]
DEVICE = "device-token-1"


def make_message(
    delivery_id: str = "dlv_1", token: str = DEVICE, **overrides: Any
) -> dict[str, Any]:
    message: dict[str, Any] = {
        "delivery_id": delivery_id,
        "notification_id": "ntf_1",
        "tenant_id": "acme",
        "channel": "push",
        "category": "billing",
        "priority": "high",
        "recipient": {"user_id": "u-42", "push_tokens": [f"fcm:{token}"]},
        "title": "Invoice paid",
        "body": "Invoice #7 was paid.",
        "data": {"invoice": "7"},
        "metadata": {},
        "attempt": 1,
        "created_at": 1_699_999_999_123,
    }
    message.update(overrides)
    return message


@pytest.fixture
async def fcm() -> AsyncIterator[FcmEmulator]:
    async with FcmEmulator(ACCOUNT) as emulator:
        yield emulator


@pytest.fixture
async def channel(fcm: FcmEmulator) -> AsyncIterator[FcmChannel]:
    config = FcmConfig(ACCOUNT, base_url=fcm.url, token_uri=fcm.token_uri)
    channel = FcmChannel(config)
    yield channel
    await channel.aclose()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


async def access_token(fcm: FcmEmulator, client: httpx.AsyncClient) -> str:
    assertion = build_assertion(
        load_service_account(ACCOUNT),
        scope=FIREBASE_MESSAGING_SCOPE,
        audience=fcm.token_uri,
        now=int(time.time()),
    )
    response = await client.post(
        fcm.token_uri, data={"grant_type": JWT_BEARER_GRANT_TYPE, "assertion": assertion}
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


# -- the channel against the emulator ---------------------------------------------------


async def test_delivered(fcm: FcmEmulator, channel: FcmChannel) -> None:
    verdict = await channel.send(make_message())

    assert verdict == Verdict.delivered(status_code=200)
    [received] = await fcm.wait_for(1, timeout=5)
    assert received.device_token == DEVICE
    assert received.name.startswith("projects/demo-project/messages/0:")
    assert received.message["notification"] == {
        "title": "Invoice paid",
        "body": "Invoice #7 was paid.",
    }
    assert received.message["data"] == {
        "invoice": "7",
        "delivery_id": "dlv_1",
        "notification_id": "ntf_1",
    }
    assert fcm.by_delivery_id() == {"dlv_1": 1}


async def test_token_is_fetched_once_and_reused(fcm: FcmEmulator, channel: FcmChannel) -> None:
    for n in range(3):
        assert (await channel.send(make_message(f"dlv_{n}"))).outcome is Outcome.DELIVERED
    await asyncio.gather(*(channel.send(make_message(f"dlv_c{n}")) for n in range(10)))

    assert fcm.issued_tokens == 1
    assert len(fcm.accepted) == 13


async def test_expired_token_is_refreshed_and_the_send_repeated(
    fcm: FcmEmulator, channel: FcmChannel
) -> None:
    await channel.send(make_message("dlv_a"))
    fcm.expire_tokens()

    verdict = await channel.send(make_message("dlv_b"))

    assert verdict.outcome is Outcome.DELIVERED
    assert [(r.status, r.error_code) for r in fcm.received] == [
        (200, ""),
        (401, "UNAUTHENTICATED"),
        (200, ""),
    ]
    assert fcm.issued_tokens == 2
    assert fcm.by_delivery_id() == {"dlv_a": 1, "dlv_b": 1}


async def test_short_lived_tokens_are_renewed_before_they_are_refused() -> None:
    async with FcmEmulator(ACCOUNT, token_lifetime_s=1) as fcm:
        channel = FcmChannel(FcmConfig(ACCOUNT, base_url=fcm.url, token_uri=fcm.token_uri))
        try:
            await channel.send(make_message("dlv_a"))
            await channel.send(make_message("dlv_b"))  # within half the lifetime: reused
            await asyncio.sleep(0.6)
            await channel.send(make_message("dlv_c"))
        finally:
            await channel.aclose()

    assert fcm.issued_tokens == 2
    assert [r.status for r in fcm.received] == [200, 200, 200]


async def test_unregistered_token_is_address_invalid_for_good(
    fcm: FcmEmulator, channel: FcmChannel
) -> None:
    fcm.unregister(DEVICE)

    verdicts = [await channel.send(make_message()) for _ in range(2)]

    assert [(v.outcome, v.status_code) for v in verdicts] == [
        (Outcome.ADDRESS_INVALID, 404),
        (Outcome.ADDRESS_INVALID, 404),
    ]
    assert "UNREGISTERED" in verdicts[0].reason
    assert (await channel.send(make_message(token="other"))).outcome is Outcome.DELIVERED


async def test_quota_exceeded_is_retried_after_what_fcm_says(
    fcm: FcmEmulator, channel: FcmChannel
) -> None:
    fcm.fail_next(DEVICE, ["QUOTA_EXCEEDED"], retry_after=30)

    first = await channel.send(make_message())
    second = await channel.send(make_message())

    assert (first.outcome, first.retry_after, first.status_code) == (Outcome.RETRY, 30.0, 429)
    assert second.outcome is Outcome.DELIVERED
    assert fcm.by_delivery_id() == {"dlv_1": 1}


async def test_invalid_argument_is_rejected(fcm: FcmEmulator, channel: FcmChannel) -> None:
    fcm.fail_next(DEVICE, ["INVALID_ARGUMENT"])

    verdict = await channel.send(make_message())

    assert (verdict.outcome, verdict.status_code) == (Outcome.REJECTED, 400)


@pytest.mark.parametrize(
    ("code", "outcome", "status"),
    [
        ("UNREGISTERED", Outcome.ADDRESS_INVALID, 404),
        ("SENDER_ID_MISMATCH", Outcome.ADDRESS_INVALID, 403),
        ("QUOTA_EXCEEDED", Outcome.RETRY, 429),
        ("UNAVAILABLE", Outcome.RETRY, 503),
        ("INTERNAL", Outcome.RETRY, 500),
        ("INVALID_ARGUMENT", Outcome.REJECTED, 400),
        ("THIRD_PARTY_AUTH_ERROR", Outcome.REJECTED, 401),
    ],
)
async def test_each_scripted_error_code(
    fcm: FcmEmulator, channel: FcmChannel, code: str, outcome: Outcome, status: int
) -> None:
    fcm.fail_next(DEVICE, [code])

    verdict = await channel.send(make_message())

    assert (verdict.outcome, verdict.status_code) == (outcome, status)
    assert code in verdict.reason
    assert fcm.issued_tokens == 1  # THIRD_PARTY_AUTH_ERROR is not our token's fault


def test_fail_next_takes_only_fcm_error_codes() -> None:
    with pytest.raises(ValueError, match="not FCM error codes"):
        FcmEmulator(ACCOUNT).fail_next(DEVICE, ["NOT_FOUND"])


async def test_a_key_the_emulator_does_not_know_is_refused(fcm: FcmEmulator) -> None:
    impostor = make_service_account("demo-project") | {"client_email": ACCOUNT["client_email"]}
    channel = FcmChannel(FcmConfig(impostor, base_url=fcm.url, token_uri=fcm.token_uri))
    try:
        verdict = await channel.send(make_message())
    finally:
        await channel.aclose()

    assert verdict.outcome is Outcome.REJECTED
    assert "invalid_grant" in verdict.reason
    assert [(r.status, r.error) for r in fcm.token_requests] == [(400, "invalid_grant")]
    assert fcm.received == []


async def test_another_projects_url_is_permission_denied(fcm: FcmEmulator) -> None:
    other = ACCOUNT | {"project_id": "other-project"}
    channel = FcmChannel(FcmConfig(other, base_url=fcm.url, token_uri=fcm.token_uri))
    try:
        verdict = await channel.send(make_message())
    finally:
        await channel.aclose()

    assert (verdict.outcome, verdict.status_code) == (Outcome.REJECTED, 403)


async def test_unreachable_emulator_is_a_retry(fcm: FcmEmulator) -> None:
    config = FcmConfig(ACCOUNT, base_url=fcm.url, token_uri=fcm.token_uri)
    await fcm.stop()
    channel = FcmChannel(config)
    try:
        verdict = await channel.send(make_message())
    finally:
        await channel.aclose()

    assert verdict.outcome is Outcome.RETRY
    assert verdict.reason.startswith("token endpoint: ConnectError")


# -- what the token endpoint checks -----------------------------------------------------


def assertion_with(fcm: FcmEmulator, **claims: Any) -> str:
    account = load_service_account(ACCOUNT)
    now = int(time.time())
    payload = {
        "iss": account.client_email,
        "scope": FIREBASE_MESSAGING_SCOPE,
        "aud": fcm.token_uri,
        "iat": now,
        "exp": now + 3600,
    } | claims
    return jwt.encode(payload, account.signing_key, algorithm="RS256")


# Times are seconds from when the test runs, not from when pytest collected it: a suite
# that takes minutes would otherwise bring "10 minutes ahead" within the clock skew.
@pytest.mark.parametrize(
    ("claims", "times", "error", "description"),
    [
        ({"aud": "https://oauth2.googleapis.com/token"}, {}, "invalid_grant", "audience"),
        ({"iss": "someone@else.iam.gserviceaccount.com"}, {}, "invalid_grant", "Signature"),
        ({"scope": "https://www.googleapis.com/auth/drive"}, {}, "invalid_scope", "scope"),
        ({}, {"exp": -10}, "invalid_grant", "iat and exp"),
        ({}, {"exp": 7200}, "invalid_grant", "iat and exp"),
        ({}, {"iat": 600}, "invalid_grant", "iat and exp"),
    ],
)
async def test_token_endpoint_checks_the_claims(
    fcm: FcmEmulator,
    client: httpx.AsyncClient,
    claims: dict[str, Any],
    times: dict[str, int],
    error: str,
    description: str,
) -> None:
    now = int(time.time())
    claims = claims | {name: now + seconds for name, seconds in times.items()}
    response = await client.post(
        fcm.token_uri,
        data={"grant_type": JWT_BEARER_GRANT_TYPE, "assertion": assertion_with(fcm, **claims)},
    )

    assert response.status_code == 400
    assert response.json()["error"] == error
    assert description in response.json()["error_description"]


async def test_token_endpoint_checks_the_signature(
    fcm: FcmEmulator, client: httpx.AsyncClient
) -> None:
    head, body, signature = assertion_with(fcm).split(".")
    forged = f"{head}.{body}.{signature[:-4]}AAAA"

    response = await client.post(
        fcm.token_uri, data={"grant_type": JWT_BEARER_GRANT_TYPE, "assertion": forged}
    )

    assert response.json()["error_description"] == "Invalid JWT Signature."


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({"grant_type": "client_credentials", "assertion": "x"}, "unsupported_grant_type"),
        ({"grant_type": JWT_BEARER_GRANT_TYPE}, "invalid_request"),
    ],
)
async def test_token_endpoint_checks_the_form(
    fcm: FcmEmulator, client: httpx.AsyncClient, form: dict[str, str], error: str
) -> None:
    response = await client.post(fcm.token_uri, data=form)

    assert (response.status_code, response.json()["error"]) == (400, error)


async def test_token_response_shape(fcm: FcmEmulator, client: httpx.AsyncClient) -> None:
    fcm.token_lifetime_s = 120
    response = await client.post(
        fcm.token_uri, data={"grant_type": JWT_BEARER_GRANT_TYPE, "assertion": assertion_with(fcm)}
    )

    answer = response.json()
    assert answer["token_type"] == "Bearer"
    assert answer["expires_in"] == 120
    assert answer["access_token"]


# -- what messages:send checks ----------------------------------------------------------


def send_url(fcm: FcmEmulator) -> str:
    return f"{fcm.url}/v1/projects/demo-project/messages:send"


@pytest.mark.parametrize("authorization", [None, "Bearer not-issued", "Basic dXNlcjpwYXNz"])
async def test_send_needs_an_issued_token(
    fcm: FcmEmulator, client: httpx.AsyncClient, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = await client.post(send_url(fcm), headers=headers, json={"message": {"token": "t"}})

    assert response.status_code == 401
    assert response.json()["error"]["status"] == "UNAUTHENTICATED"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    ("message", "phrase"),
    [
        ({}, "Recipient of the message is not set"),
        ({"token": ""}, "Recipient of the message is not set"),
        ({"token": "t", "topic": "news"}, "oneof field 'target' is already set"),
        ({"topic": "news"}, "not to a topic"),
        ({"token": 7}, "not a valid FCM registration token"),
        ({"token": "t", "data": {"n": 12}}, "message.data[0].value' (TYPE_STRING), 12"),
        ({"token": "t", "data": {"from": "x"}}, "Invalid data payload key: from"),
        ({"token": "t", "data": {"google.x": "x"}}, "Invalid data payload key"),
        ({"token": "t", "priority": "high"}, "Unknown name \"priority\" at 'message'"),
        ({"token": "t", "android": {"priority": "urgent"}}, "android.priority"),
        ({"token": "t", "notification": {"title": "t", "sound": "x"}}, 'Unknown name "sound"'),
        ({"token": "t", "data": {"pad": "x" * 4096}}, "too big"),
    ],
)
async def test_send_checks_the_message(
    fcm: FcmEmulator, client: httpx.AsyncClient, message: dict[str, Any], phrase: str
) -> None:
    token = await access_token(fcm, client)

    response = await client.post(
        send_url(fcm), headers={"Authorization": f"Bearer {token}"}, json={"message": message}
    )

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT"
    assert phrase in error["message"]
    assert error["details"][0]["errorCode"] == "INVALID_ARGUMENT"
    assert fcm.accepted == []


async def test_refused_sends_are_recorded_with_what_they_carried(
    fcm: FcmEmulator, client: httpx.AsyncClient
) -> None:
    token = await access_token(fcm, client)
    message = {"token": "t", "data": {"delivery_id": "dlv_x", "n": 1}}

    await client.post(
        send_url(fcm), headers={"Authorization": f"Bearer {token}"}, json={"message": message}
    )

    [received] = fcm.received
    assert (received.status, received.error_code) == (400, "INVALID_ARGUMENT")
    assert (received.device_token, received.delivery_id) == ("t", "dlv_x")
    assert not received.accepted


async def test_validate_only_is_checked_but_not_sent(
    fcm: FcmEmulator, client: httpx.AsyncClient
) -> None:
    token = await access_token(fcm, client)

    response = await client.post(
        send_url(fcm),
        headers={"Authorization": f"Bearer {token}"},
        json={"message": {"token": "t"}, "validate_only": True},
    )

    assert response.json() == {"name": "projects/demo-project/messages/fake_message_id"}
    assert fcm.received == []


async def test_send_accepts_uppercase_priority_and_records_the_request(
    fcm: FcmEmulator, client: httpx.AsyncClient
) -> None:
    token = await access_token(fcm, client)
    message = {"token": "t", "android": {"priority": "HIGH"}, "data": {"delivery_id": "dlv_x"}}

    response = await client.post(
        send_url(fcm), headers={"Authorization": f"Bearer {token}"}, json={"message": message}
    )

    assert response.status_code == 200
    assert response.json()["name"] == fcm.accepted[0].name
    assert fcm.by_delivery_id() == {"dlv_x": 1}


async def test_a_request_the_connector_builds_passes_every_check(
    fcm: FcmEmulator, client: httpx.AsyncClient
) -> None:
    token = await access_token(fcm, client)
    config = FcmConfig(ACCOUNT, base_url=fcm.url)
    message = make_message(metadata={"collapse_key": "k"}, priority="low")

    request = build_request(message, config, access_token=token)
    response = await client.post(request.url, headers=request.headers, content=request.content)

    assert response.status_code == 200, response.text
    assert fcm.accepted[0].message == orjson.loads(request.content)["message"]


async def test_wait_for_times_out_saying_how_many_arrived(fcm: FcmEmulator) -> None:
    with pytest.raises(TimeoutError, match="0 of 1"):
        await fcm.wait_for(1, timeout=0.05)


async def test_url_needs_a_started_emulator() -> None:
    emulator = FcmEmulator(ACCOUNT)
    with pytest.raises(RuntimeError):
        _ = emulator.url
    await emulator.start()
    await emulator.stop()
    with pytest.raises(RuntimeError):
        _ = emulator.token_uri


# -- command line -------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_command_line_prints_sends_and_stops_cleanly(
    tmp_path: Path, signum: signal.Signals, run_emulator: Callable[..., Any]
) -> None:
    account_file = tmp_path / "sa" / "fcm.json"
    async with run_emulator("fcm", "--write-service-account", str(account_file)) as cli:
        url = cli.banner.rsplit(" ", 1)[-1].strip()
        assert url.startswith("http://127.0.0.1:"), cli.banner

        # The written key file alone (token_uri included) is enough to send.
        channel = FcmChannel(FcmConfig(str(account_file), base_url=url))
        try:
            verdict = await channel.send(make_message("dlv_cli"))
        finally:
            await channel.aclose()
        line = await cli.readline()

        await cli.stop(signum)

    assert verdict.outcome is Outcome.DELIVERED
    assert line.startswith("200 OK")
    assert "delivery_id=dlv_cli" in line
    assert "Invoice paid" in line
    assert account_file.stat().st_mode & 0o777 == 0o600


def test_command_line_refuses_a_missing_key_file(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "connectors.emulators.fcm",
            "--service-account",
            str(tmp_path / "nope.json"),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        timeout=30,
    )

    assert result.returncode == 2
    assert b"--service-account" in result.stderr
    assert b"Traceback" not in result.stderr
