"""ApnsChannel against the real APNs emulator (HTTP/2 over TLS on 127.0.0.1)."""

import asyncio
import signal
import ssl
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.apns import (
    ApnsChannel,
    ApnsConfig,
    apns_id_for,
    build_request,
    mint_provider_token,
)
from connectors.emulators.apns import ApnsEmulator, make_signing_key
from connectors.verdict import Outcome, Verdict

KEY = make_signing_key()
TOPIC = "com.example.app"
DEVICE = "a1b2c3d4" * 8
OTHER_DEVICE = "0f" * 32


def make_message(
    delivery_id: str = "dlv_1", device: str = DEVICE, **overrides: Any
) -> dict[str, Any]:
    message: dict[str, Any] = {
        "delivery_id": delivery_id,
        "notification_id": "ntf_1",
        "tenant_id": "acme",
        "channel": "push",
        "category": "billing",
        "priority": "high",
        "recipient": {"user_id": "u-42", "push_tokens": [f"apns:{device}"]},
        "title": "Invoice paid",
        "body": "Invoice #7 was paid.",
        "data": {"invoice": "7", "collapse_id": "invoice-7"},
        "metadata": {},
        "attempt": 1,
        "created_at": 1_699_999_999_123,
    }
    message.update(overrides)
    return message


def config_for(emulator: ApnsEmulator, **overrides: Any) -> ApnsConfig:
    fields: dict[str, Any] = {
        "team_id": KEY.team_id,
        "key_id": KEY.key_id,
        "private_key": KEY.private_key,
        "topic": TOPIC,
        "base_url": emulator.url,
        "ca_file": emulator.ca_file,
    }
    return ApnsConfig(**(fields | overrides))


@pytest.fixture
async def emulator() -> AsyncIterator[ApnsEmulator]:
    async with ApnsEmulator(KEY.team_id, KEY.key_id, KEY.private_key, topic=TOPIC) as emulator:
        yield emulator


@pytest.fixture
async def channel(emulator: ApnsEmulator) -> AsyncIterator[ApnsChannel]:
    channel = ApnsChannel(config_for(emulator))
    yield channel
    await channel.aclose()


@pytest.fixture
async def raw_client(emulator: ApnsEmulator) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP/2 client for requests the channel would never build."""
    context = ssl.create_default_context(cafile=emulator.ca_file)
    async with httpx.AsyncClient(http2=True, verify=context) as client:
        yield client


def raw_request(emulator: ApnsEmulator, **overrides: Any) -> tuple[str, dict[str, str], bytes]:
    """A valid request for DEVICE, as the channel builds it, for tests to spoil."""
    token = mint_provider_token(config_for(emulator), now=int(time.time()))
    request = build_request(make_message(), config_for(emulator), token=token.value, now=0)
    return request.url, request.headers, request.content


# -- deliveries -------------------------------------------------------------------


async def test_delivered_over_http2_with_apns_headers(
    emulator: ApnsEmulator, channel: ApnsChannel
) -> None:
    before = int(time.time())

    verdict = await channel.send(make_message(priority="normal"))

    assert verdict == Verdict.delivered(status_code=200)
    [notification] = await emulator.wait_for(1, timeout=5)
    assert notification.http_version == "2"
    assert notification.device_token == DEVICE
    headers = notification.headers
    assert headers["apns-push-type"] == "alert"
    assert headers["apns-priority"] == "5"
    assert headers["apns-topic"] == TOPIC
    assert headers["apns-collapse-id"] == "invoice-7"
    assert headers["apns-id"] == apns_id_for("dlv_1") == notification.apns_id
    assert 0 <= int(headers["apns-expiration"]) - before - 24 * 3600 <= 5
    assert notification.payload["aps"]["alert"] == {
        "title": "Invoice paid",
        "body": "Invoice #7 was paid.",
    }
    assert notification.payload["delivery_id"] == "dlv_1"


async def test_background_notification(emulator: ApnsEmulator, channel: ApnsChannel) -> None:
    verdict = await channel.send(make_message(title=None, body=None, priority="critical"))

    assert verdict.outcome is Outcome.DELIVERED
    [notification] = emulator.delivered
    assert notification.headers["apns-push-type"] == "background"
    assert notification.headers["apns-priority"] == "5"
    assert notification.payload["aps"] == {"content-available": 1}


async def test_shared_http11_client_is_ignored(emulator: ApnsEmulator) -> None:
    async with httpx.AsyncClient() as shared:
        channel = ApnsChannel(config_for(emulator), shared)
        try:
            verdict = await channel.send(make_message())
        finally:
            await channel.aclose()

    assert verdict.outcome is Outcome.DELIVERED
    assert emulator.received[0].http_version == "2"


async def test_provider_token_is_reused_across_sends(
    emulator: ApnsEmulator, channel: ApnsChannel
) -> None:
    verdicts = await asyncio.gather(*(channel.send(make_message(f"dlv_{n}")) for n in range(20)))

    assert {v.outcome for v in verdicts} == {Outcome.DELIVERED}
    assert len({n.headers["authorization"] for n in emulator.received}) == 1
    assert emulator.by_apns_id() == {apns_id_for(f"dlv_{n}"): 1 for n in range(20)}


# -- scripted and real failures ---------------------------------------------------


async def test_expired_provider_token_is_refreshed_within_one_send(
    emulator: ApnsEmulator, channel: ApnsChannel
) -> None:
    await channel.send(make_message("dlv_0"))
    emulator.fail_next(DEVICE, [(403, "ExpiredProviderToken")])

    verdict = await channel.send(make_message("dlv_1"))

    assert verdict.outcome is Outcome.DELIVERED
    first, expired, retried = emulator.received
    assert (expired.status, expired.reason) == (403, "ExpiredProviderToken")
    assert expired.apns_id == retried.apns_id == apns_id_for("dlv_1")
    assert retried.headers["authorization"] != expired.headers["authorization"]
    assert first.headers["authorization"] == expired.headers["authorization"]


async def test_stale_token_is_refreshed_only_once() -> None:
    # An emulator two hours ahead finds every token the channel signs expired.
    async with ApnsEmulator(
        KEY.team_id, KEY.key_id, KEY.private_key, clock=lambda: time.time() + 7200
    ) as ahead:
        channel = ApnsChannel(config_for(ahead))
        try:
            verdict = await channel.send(make_message())
        finally:
            await channel.aclose()

    assert verdict.outcome is Outcome.RETRY
    assert verdict.reason.startswith("ExpiredProviderToken (HTTP 403)")
    assert [n.reason for n in ahead.received] == ["ExpiredProviderToken"] * 2


async def test_unregistered_device_is_an_invalid_address(
    emulator: ApnsEmulator, channel: ApnsChannel
) -> None:
    emulator.unregister(DEVICE)

    verdict = await channel.send(make_message())
    other = await channel.send(make_message("dlv_2", device=OTHER_DEVICE))

    assert verdict.outcome is Outcome.ADDRESS_INVALID
    assert verdict.status_code == 410
    assert verdict.reason.startswith("Unregistered (HTTP 410)")
    assert "inactive since" in verdict.reason
    assert other.outcome is Outcome.DELIVERED


@pytest.mark.parametrize(
    ("status", "reason", "outcome"),
    [
        (429, "TooManyRequests", Outcome.RETRY),
        (500, "InternalServerError", Outcome.RETRY),
        (503, "ServiceUnavailable", Outcome.RETRY),
        (503, "Shutdown", Outcome.RETRY),
        (400, "BadDeviceToken", Outcome.ADDRESS_INVALID),
        (400, "DeviceTokenNotForTopic", Outcome.ADDRESS_INVALID),
        (410, "ExpiredToken", Outcome.ADDRESS_INVALID),
        (413, "PayloadTooLarge", Outcome.REJECTED),
        (400, "BadCollapseId", Outcome.REJECTED),
    ],
)
async def test_scripted_failure_then_delivered(
    emulator: ApnsEmulator, channel: ApnsChannel, status: int, reason: str, outcome: Outcome
) -> None:
    emulator.fail_next(DEVICE, [(status, reason)])

    first = await channel.send(make_message())
    second = await channel.send(make_message())

    assert (first.outcome, first.status_code) == (outcome, status)
    assert first.reason.startswith(f"{reason} (HTTP {status})")
    assert second.outcome is Outcome.DELIVERED
    assert [n.status for n in emulator.received] == [status, 200]


async def test_wrong_signing_key_is_rejected(emulator: ApnsEmulator) -> None:
    stranger = make_signing_key()
    channel = ApnsChannel(config_for(emulator, private_key=stranger.private_key))
    try:
        verdict = await channel.send(make_message())
    finally:
        await channel.aclose()

    assert verdict.outcome is Outcome.REJECTED
    assert verdict.reason.startswith("InvalidProviderToken (HTTP 403)")


@pytest.mark.parametrize("field", ["team_id", "key_id"])
async def test_wrong_team_or_key_id_is_rejected(emulator: ApnsEmulator, field: str) -> None:
    channel = ApnsChannel(config_for(emulator, **{field: "WRONG00000"}))
    try:
        verdict = await channel.send(make_message())
    finally:
        await channel.aclose()

    assert verdict.reason.startswith("InvalidProviderToken (HTTP 403)")


async def test_wrong_topic_does_not_match_the_device(emulator: ApnsEmulator) -> None:
    channel = ApnsChannel(config_for(emulator, topic="com.example.other"))
    try:
        verdict = await channel.send(make_message())
    finally:
        await channel.aclose()

    assert verdict.outcome is Outcome.ADDRESS_INVALID
    assert verdict.reason.startswith("DeviceTokenNotForTopic")


async def test_untrusted_certificate_is_a_retry(emulator: ApnsEmulator) -> None:
    channel = ApnsChannel(config_for(emulator, ca_file=None))
    try:
        verdict = await channel.send(make_message())
    finally:
        await channel.aclose()

    assert verdict.outcome is Outcome.RETRY
    assert "CERTIFICATE_VERIFY_FAILED" in verdict.reason
    assert emulator.received == []


async def test_stopped_emulator_is_a_retry(tmp_path: Path) -> None:
    emulator = ApnsEmulator(KEY.team_id, KEY.key_id, KEY.private_key)
    await emulator.start(cert_dir=str(tmp_path))  # kept after stop, unlike the default
    config = config_for(emulator)
    await emulator.stop()
    channel = ApnsChannel(config)
    try:
        verdict = await channel.send(make_message())
    finally:
        await channel.aclose()

    assert verdict.outcome is Outcome.RETRY


# -- what the emulator checks ------------------------------------------------------


async def test_http11_is_refused_with_a_reason(emulator: ApnsEmulator) -> None:
    url, headers, content = raw_request(emulator)
    context = ssl.create_default_context(cafile=emulator.ca_file)
    async with httpx.AsyncClient(verify=context) as http11:
        response = await http11.post(url, headers=headers, content=content)

    assert response.status_code == 400
    assert response.json()["reason"] == "HTTP2Required"
    [notification] = emulator.received
    assert notification.http_version == "1.1"


@pytest.mark.parametrize(
    ("spoil", "status", "reason"),
    [
        ({"apns-topic": None}, 400, "MissingTopic"),
        ({"authorization": None}, 403, "MissingProviderToken"),
        ({"authorization": "bearer not.a.jwt"}, 403, "InvalidProviderToken"),
        ({"apns-push-type": "shout"}, 400, "InvalidPushType"),
        ({"apns-push-type": None}, 400, "InvalidPushType"),
        ({"apns-priority": "7"}, 400, "BadPriority"),
        ({"apns-push-type": "background", "apns-priority": "10"}, 400, "BadPriority"),
        ({"apns-expiration": "tomorrow"}, 400, "BadExpirationDate"),
        ({"apns-id": "dlv_1"}, 400, "BadMessageId"),
        ({"apns-collapse-id": "c" * 65}, 400, "BadCollapseId"),
        ({"url": "/3/device/not-hex"}, 400, "BadDeviceToken"),
        ({"url": "/3/device/"}, 400, "MissingDeviceToken"),
        ({"url": "/2/device/" + DEVICE}, 404, "BadPath"),
        ({"content": b""}, 400, "PayloadEmpty"),
        ({"content": b'{"aps": {}, "x": "' + b"x" * 4096 + b'"}'}, 413, "PayloadTooLarge"),
    ],
)
async def test_emulator_refuses(
    emulator: ApnsEmulator,
    raw_client: httpx.AsyncClient,
    spoil: dict[str, Any],
    status: int,
    reason: str,
) -> None:
    url, headers, content = raw_request(emulator)
    url = emulator.url + spoil.pop("url") if "url" in spoil else url
    content = spoil.pop("content", content)
    headers = {k: v for k, v in (headers | spoil).items() if v is not None}

    response = await raw_client.post(url, headers=headers, content=content)

    assert (response.status_code, response.json()["reason"]) == (status, reason)
    assert emulator.received[-1].reason == reason
    assert emulator.delivered == []


async def test_get_is_not_allowed(emulator: ApnsEmulator, raw_client: httpx.AsyncClient) -> None:
    url, headers, _ = raw_request(emulator)

    response = await raw_client.get(url, headers=headers)

    assert (response.status_code, response.json()["reason"]) == (405, "MethodNotAllowed")


async def test_new_token_within_20_minutes_is_throttled(
    emulator: ApnsEmulator, raw_client: httpx.AsyncClient
) -> None:
    url, headers, content = raw_request(emulator)
    other = mint_provider_token(config_for(emulator), now=int(time.time()) - 1)
    assert other.value not in headers["authorization"]

    first = await raw_client.post(url, headers=headers, content=content)
    second = await raw_client.post(
        url, headers=headers | {"authorization": f"bearer {other.value}"}, content=content
    )

    assert first.status_code == 200
    assert (second.status_code, second.json()["reason"]) == (429, "TooManyProviderTokenUpdates")


async def test_stale_token_answer(emulator: ApnsEmulator, raw_client: httpx.AsyncClient) -> None:
    url, headers, content = raw_request(emulator)
    stale = mint_provider_token(config_for(emulator), now=int(time.time()) - 3601)

    response = await raw_client.post(
        url, headers=headers | {"authorization": f"bearer {stale.value}"}, content=content
    )

    assert (response.status_code, response.json()["reason"]) == (403, "ExpiredProviderToken")


async def test_answers_echo_apns_id(emulator: ApnsEmulator, raw_client: httpx.AsyncClient) -> None:
    url, headers, content = raw_request(emulator)

    response = await raw_client.post(url, headers=headers, content=content)

    assert response.headers["apns-id"] == headers["apns-id"]
    assert response.content == b""


async def test_wait_for_times_out_saying_how_many_arrived(emulator: ApnsEmulator) -> None:
    with pytest.raises(TimeoutError, match="0 of 1"):
        await emulator.wait_for(1, timeout=0.05)


async def test_url_needs_a_started_emulator() -> None:
    emulator = ApnsEmulator(KEY.team_id, KEY.key_id, KEY.private_key)
    with pytest.raises(RuntimeError):
        _ = emulator.url
    await emulator.start()
    assert emulator.ca_file is not None
    ca_file = Path(emulator.ca_file)
    assert ca_file.exists()
    await emulator.stop()
    assert not ca_file.exists()
    with pytest.raises(RuntimeError):
        _ = emulator.url


# -- command line -----------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_command_line_prints_notifications_and_stops_cleanly(
    tmp_path: Path, signum: signal.Signals, run_emulator: Callable[..., Any]
) -> None:
    key_file = tmp_path / "AuthKey.p8"
    key_file.write_text(KEY.private_key)
    args = ["--team-id", KEY.team_id, "--key-id", KEY.key_id, "--key-file", str(key_file)]
    async with run_emulator("apns", *args) as cli:
        fields = dict(part.split("=", 1) for part in cli.banner.split() if "=" in part)
        url = cli.banner.split()[4]
        assert url.startswith("https://127.0.0.1:"), cli.banner

        config = ApnsConfig(
            KEY.team_id,
            KEY.key_id,
            KEY.private_key,
            TOPIC,
            base_url=url,
            ca_file=fields["ca_file"],
        )
        channel = ApnsChannel(config)
        try:
            verdict = await channel.send(make_message("dlv_cli"))
        finally:
            await channel.aclose()
        line = await cli.readline()

        await cli.stop(signum)

    assert verdict.outcome is Outcome.DELIVERED
    assert f"apns-id={apns_id_for('dlv_cli')}" in line
    assert "HTTP/2" in line
    assert "Invoice paid" in line


async def test_port_in_use_fails_start_and_cleans_up(emulator: ApnsEmulator) -> None:
    port = int(emulator.url.rsplit(":", 1)[1])
    second = ApnsEmulator(KEY.team_id, KEY.key_id, KEY.private_key)

    with pytest.raises(OSError):
        await second.start(port=port)

    with pytest.raises(RuntimeError):
        _ = second.url
    with pytest.raises(RuntimeError, match="already started"):
        await emulator.start()
