import asyncio
import base64
import signal
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from connectors.emulators.webhook_receiver import WebhookReceiver
from connectors.verdict import InvalidMessage, Outcome, Verdict
from connectors.webhook import WebhookChannel, WebhookConfig, build_request, deliver

SECRET = "whsec_" + base64.b64encode(b"0" * 32).decode()
LOCAL = ("127.0.0.0/8",)  # the receiver listens on loopback, which the SSRF guard refuses
CONFIG = WebhookConfig(secret=SECRET, allowed_networks=LOCAL)


def make_message(url: str, delivery_id: str = "dlv_1", **overrides: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "delivery_id": delivery_id,
        "notification_id": "ntf_1",
        "tenant_id": "acme",
        "channel": "webhook",
        "category": "billing",
        "priority": "normal",
        "recipient": {"user_id": "u-42", "webhook_url": url},
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
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver(SECRET) as receiver:
        yield receiver


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


async def test_signed_delivery_is_accepted_and_recorded(
    receiver: WebhookReceiver, client: httpx.AsyncClient
) -> None:
    message = make_message(receiver.url + "/hook")

    verdict = await deliver(client, message, CONFIG)

    assert verdict == Verdict.delivered(status_code=200)
    [received] = await receiver.wait_for(1, timeout=5)
    assert received.webhook_id == "dlv_1"
    assert received.path == "/hook"
    assert received.verified
    assert received.status == 200
    assert received.payload["type"] == "notification.billing"
    assert received.payload["data"]["title"] == "Invoice paid"
    assert receiver.by_id() == {"dlv_1": 1}


async def test_host_header_is_recorded(
    receiver: WebhookReceiver, client: httpx.AsyncClient
) -> None:
    await deliver(client, make_message(receiver.url + "/hook"), CONFIG)

    [received] = await receiver.wait_for(1, timeout=5)
    assert received.host == f"127.0.0.1:{receiver.port}"


@pytest.mark.parametrize("held", ["new", "old"])
async def test_a_receiver_holding_one_rotating_secret_accepts(
    client: httpx.AsyncClient, held: str
) -> None:
    new = "whsec_" + base64.b64encode(b"n" * 32).decode()
    rotating = WebhookConfig(secrets=(new, SECRET), allowed_networks=LOCAL)

    async with WebhookReceiver(new if held == "new" else SECRET) as receiver:
        verdict = await deliver(client, make_message(receiver.url + "/hook"), rotating)

        assert verdict.outcome is Outcome.DELIVERED
        assert receiver.by_id() == {"dlv_1": 1}


async def test_the_ssrf_guard_keeps_loopback_out_by_default(
    receiver: WebhookReceiver, client: httpx.AsyncClient
) -> None:
    verdict = await deliver(client, make_message(receiver.url + "/hook"), WebhookConfig(SECRET))

    assert verdict.outcome is Outcome.ADDRESS_INVALID
    assert "127.0.0.1 (loopback) refused" in verdict.reason
    assert receiver.received == []


async def test_any_path_is_received(receiver: WebhookReceiver, client: httpx.AsyncClient) -> None:
    await deliver(client, make_message(receiver.url + "/hook/tenant/acme?x=1"), CONFIG)

    [received] = await receiver.wait_for(1, timeout=5)
    assert received.path == "/hook/tenant/acme"


async def test_tampered_body_is_answered_401(
    receiver: WebhookReceiver, client: httpx.AsyncClient
) -> None:
    request = build_request(make_message(receiver.url + "/hook"), CONFIG, now=int(time.time()))
    tampered = request.content.replace(b"Invoice paid", b"Invoice void")

    response = await client.post(request.url, headers=request.headers, content=tampered)

    assert response.status_code == 401
    [received] = receiver.received
    assert not received.verified
    assert received.status == 401
    assert received.payload["data"]["title"] == "Invoice void"
    assert receiver.delivered == []
    assert receiver.by_id() == {}


async def test_wrong_secret_is_answered_401(
    receiver: WebhookReceiver, client: httpx.AsyncClient
) -> None:
    other = WebhookConfig(
        secret="whsec_" + base64.b64encode(b"1" * 32).decode(), allowed_networks=LOCAL
    )

    verdict = await deliver(client, make_message(receiver.url + "/hook"), other)

    assert verdict.outcome is Outcome.REJECTED
    assert verdict.status_code == 401


async def test_stale_timestamp_is_answered_401(
    receiver: WebhookReceiver, client: httpx.AsyncClient
) -> None:
    stale = int(time.time()) - 6 * 60  # outside the 5-minute tolerance

    verdict = await deliver(client, make_message(receiver.url + "/hook"), CONFIG, now=stale)

    assert verdict.status_code == 401


async def test_missing_signature_headers_are_answered_401(
    receiver: WebhookReceiver, client: httpx.AsyncClient
) -> None:
    response = await client.post(receiver.url + "/hook", json={"type": "x"})

    assert response.status_code == 401
    assert receiver.received[0].webhook_id == ""


async def test_malformed_signature_is_answered_401(
    receiver: WebhookReceiver, client: httpx.AsyncClient
) -> None:
    request = build_request(make_message(receiver.url + "/hook"), CONFIG, now=int(time.time()))
    headers = request.headers | {"webhook-signature": "no-comma-here"}

    response = await client.post(request.url, headers=headers, content=request.content)

    assert response.status_code == 401


async def test_fail_next_then_succeed(receiver: WebhookReceiver, client: httpx.AsyncClient) -> None:
    receiver.fail_next("/hook", [503, 503], retry_after=2)
    message = make_message(receiver.url + "/hook")

    verdicts = [await deliver(client, message, CONFIG) for _ in range(3)]

    assert [(v.outcome, v.status_code, v.retry_after) for v in verdicts] == [
        (Outcome.RETRY, 503, 2.0),
        (Outcome.RETRY, 503, 2.0),
        (Outcome.DELIVERED, 200, None),
    ]
    assert [r.status for r in receiver.received] == [503, 503, 200]
    assert all(r.verified for r in receiver.received)
    assert receiver.by_id() == {"dlv_1": 1}


async def test_fail_next_only_touches_its_path(
    receiver: WebhookReceiver, client: httpx.AsyncClient
) -> None:
    receiver.fail_next("other", [500])

    verdict = await deliver(client, make_message(receiver.url + "/hook"), CONFIG)

    assert verdict.outcome is Outcome.DELIVERED


@pytest.mark.parametrize(
    ("status", "outcome"),
    [(410, Outcome.ADDRESS_INVALID), (400, Outcome.REJECTED), (500, Outcome.RETRY)],
)
async def test_always(
    receiver: WebhookReceiver, client: httpx.AsyncClient, status: int, outcome: Outcome
) -> None:
    receiver.always("/hook", status)
    message = make_message(receiver.url + "/hook")

    verdicts = [await deliver(client, message, CONFIG) for _ in range(2)]

    assert [v.outcome for v in verdicts] == [outcome, outcome]
    assert [r.status for r in receiver.received] == [status, status]
    assert receiver.delivered == []


async def test_always_200_restores_normal_answers(
    receiver: WebhookReceiver, client: httpx.AsyncClient
) -> None:
    receiver.always("/hook", 400)
    receiver.always("/hook", 200)

    verdict = await deliver(client, make_message(receiver.url + "/hook"), CONFIG)

    assert verdict.outcome is Outcome.DELIVERED


async def test_a_held_request_is_answered_once_released(
    receiver: WebhookReceiver, client: httpx.AsyncClient
) -> None:
    receiver.hold("/slow")
    sending = asyncio.create_task(deliver(client, make_message(receiver.url + "/slow"), CONFIG))
    await receiver.wait_holding("/slow", 1, timeout=5)
    assert not sending.done() and receiver.received == []

    receiver.release("/slow")

    assert (await sending).outcome is Outcome.DELIVERED
    assert receiver.by_id() == {"dlv_1": 1}
    assert receiver.holding["/slow"] == 0


async def test_a_held_request_whose_sender_hung_up_is_not_accepted(
    receiver: WebhookReceiver,
) -> None:
    receiver.hold("/slow")
    async with httpx.AsyncClient() as gone:
        sending = asyncio.create_task(
            deliver(gone, make_message(receiver.url + "/slow"), CONFIG))
        await receiver.wait_holding("/slow", 1, timeout=5)
        sending.cancel()
    await asyncio.sleep(0.2)  # the receiver's side of the connection closes meanwhile

    receiver.release("/slow")
    async with asyncio.timeout(5):
        while not receiver.received:
            await asyncio.sleep(0.01)

    assert [r.status for r in receiver.received] == [499]
    assert receiver.delivered == []


async def test_scripted_failure_body_is_json(
    receiver: WebhookReceiver, client: httpx.AsyncClient
) -> None:
    receiver.always("/hook", 400)
    request = build_request(make_message(receiver.url + "/hook"), CONFIG, now=int(time.time()))

    response = await client.post(request.url, headers=request.headers, content=request.content)

    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["status"] == 400


async def test_by_id_counts_each_accepted_delivery(
    receiver: WebhookReceiver, client: httpx.AsyncClient
) -> None:
    for delivery_id in ["dlv_a", "dlv_b", "dlv_a"]:
        await deliver(client, make_message(receiver.url + "/hook", delivery_id), CONFIG)

    assert receiver.by_id() == {"dlv_a": 2, "dlv_b": 1}


async def test_wait_for_wakes_on_concurrent_deliveries(
    receiver: WebhookReceiver, client: httpx.AsyncClient
) -> None:
    waiter = asyncio.create_task(receiver.wait_for(3, timeout=5))
    await asyncio.sleep(0)
    for n in range(3):
        await deliver(client, make_message(receiver.url + "/hook", f"dlv_{n}"), CONFIG)

    assert len(await waiter) == 3


async def test_wait_for_times_out_saying_how_many_arrived(receiver: WebhookReceiver) -> None:
    with pytest.raises(TimeoutError, match="0 of 1"):
        await receiver.wait_for(1, timeout=0.05)


async def test_url_needs_a_started_receiver() -> None:
    receiver = WebhookReceiver(SECRET)
    with pytest.raises(RuntimeError):
        _ = receiver.url
    await receiver.start()
    await receiver.stop()
    with pytest.raises(RuntimeError):
        _ = receiver.url


# -- command line -----------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_command_line_prints_deliveries_and_stops_cleanly(
    client: httpx.AsyncClient, signum: signal.Signals, run_emulator: Callable[..., Any]
) -> None:
    async with run_emulator("webhook_receiver", "--secret", SECRET, timeout=10) as cli:
        url = cli.banner.rsplit(" ", 1)[-1].strip()
        assert url.startswith("http://127.0.0.1:"), cli.banner

        verdict = await deliver(client, make_message(url + "/hook", "dlv_cli"), CONFIG)
        line = await cli.readline()

        await cli.stop(signum)

    assert verdict.outcome is Outcome.DELIVERED
    assert "webhook-id=dlv_cli" in line
    assert "verified=True" in line
    assert "Invoice paid" in line


# -- WebhookChannel -----------------------------------------------------------------


async def test_channel_with_its_own_client(receiver: WebhookReceiver) -> None:
    channel = WebhookChannel(CONFIG)
    receiver.fail_next("/hook", [503], retry_after=4)
    message = make_message(receiver.url + "/hook")
    try:
        verdicts = [await channel.send(message) for _ in range(2)]
    finally:
        await channel.aclose()

    assert [(v.outcome, v.retry_after) for v in verdicts] == [
        (Outcome.RETRY, 4.0),
        (Outcome.DELIVERED, None),
    ]
    assert receiver.by_id() == {"dlv_1": 1}


async def test_channel_leaves_a_shared_client_open(
    receiver: WebhookReceiver, client: httpx.AsyncClient
) -> None:
    channel = WebhookChannel(CONFIG, client)
    await channel.aclose()

    verdict = await deliver(client, make_message(receiver.url + "/hook"), CONFIG)

    assert verdict.outcome is Outcome.DELIVERED


async def test_channel_raises_for_a_message_that_can_never_be_sent() -> None:
    channel = WebhookChannel(CONFIG)
    try:
        with pytest.raises(InvalidMessage, match="no webhook_url"):
            await channel.send(make_message("", recipient={"user_id": "u-42"}))
    finally:
        await channel.aclose()
