import asyncio
import base64
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from connectors.emulators.twilio import TwilioEmulator, signature
from connectors.sms import FailoverSmsChannel, TwilioChannel, TwilioConfig
from connectors.verdict import Outcome

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
OTHER_SID = "AC" + "f" * 32
SERVICE_SID = "MG" + "fedcba9876543210" * 2
TOKEN = "emulator-auth-token"
FROM = "+15005550006"
TO = "+14155552671"
REPO_ROOT = Path(__file__).resolve().parents[3]
EMOJI = "\N{GRINNING FACE}"


def make_message(delivery_id: str = "dlv_1", phone: str = TO, **overrides: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "delivery_id": delivery_id,
        "notification_id": "ntf_1",
        "tenant_id": "acme",
        "channel": "sms",
        "category": "security",
        "priority": "high",
        "recipient": {"user_id": "u-42", "phone": phone, "push_tokens": []},
        "title": "Sign-in code",
        "body": "Your code is 482910.",
        "data": {},
        "metadata": {},
        "attempt": 1,
        "created_at": 1_699_999_999_123,
        "not_before": 0,
        "last_error": None,
    }
    message.update(overrides)
    return message


def config_for(emulator: TwilioEmulator, **overrides: Any) -> TwilioConfig:
    fields: dict[str, Any] = {
        "account_sid": ACCOUNT_SID, "auth_token": TOKEN, "from_number": FROM,
        "base_url": emulator.url,
    } | overrides
    return TwilioConfig(**fields)


@pytest.fixture
async def twilio() -> AsyncIterator[TwilioEmulator]:
    async with TwilioEmulator(ACCOUNT_SID, TOKEN) as emulator:
        yield emulator


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
async def channel(
    twilio: TwilioEmulator, client: httpx.AsyncClient
) -> AsyncIterator[TwilioChannel]:
    channel = TwilioChannel(config_for(twilio), client)
    yield channel
    await channel.aclose()


async def post(
    client: httpx.AsyncClient,
    twilio: TwilioEmulator,
    form: dict[str, str],
    *,
    auth: tuple[str, str] = (ACCOUNT_SID, TOKEN),
    account_sid: str = ACCOUNT_SID,
) -> httpx.Response:
    return await client.post(
        f"{twilio.url}/2010-04-01/Accounts/{account_sid}/Messages.json", data=form, auth=auth
    )


# -- the channel against the emulator ------------------------------------------------


async def test_delivered(twilio: TwilioEmulator, channel: TwilioChannel) -> None:
    verdict = await channel.send(make_message())

    assert verdict.outcome is Outcome.DELIVERED
    assert verdict.status_code == 201
    [sms] = await twilio.wait_for(1, timeout=5)
    assert verdict.reason == f"sid={sms.sid}"
    assert (sms.to, sms.from_, sms.messaging_service_sid) == (TO, FROM, None)
    assert sms.body == "Sign-in code\nYour code is 482910."
    assert (sms.encoding, sms.num_segments) == ("GSM-7", 1)


async def test_rate_limited_then_delivered(twilio: TwilioEmulator, channel: TwilioChannel) -> None:
    twilio.fail_next(TO, [(429, 20429)], retry_after=2)

    first = await channel.send(make_message())
    second = await channel.send(make_message())

    assert (first.outcome, first.status_code, first.retry_after) == (Outcome.RETRY, 429, 2.0)
    assert "Twilio 20429: Too Many Requests" in first.reason
    assert second.outcome is Outcome.DELIVERED
    assert [(a.status, a.code) for a in twilio.answered] == [(429, 20429), (201, None)]
    assert len(twilio.messages) == 1


async def test_server_error_without_a_code_is_retried(
    twilio: TwilioEmulator, channel: TwilioChannel
) -> None:
    twilio.fail_next(TO, [(500, None), (503, 20503)])

    verdicts = [await channel.send(make_message()) for _ in range(3)]

    assert [(v.outcome, v.status_code) for v in verdicts] == [
        (Outcome.RETRY, 500), (Outcome.RETRY, 503), (Outcome.DELIVERED, 201),
    ]


async def test_unsubscribed_recipient_is_address_invalid(
    twilio: TwilioEmulator, channel: TwilioChannel
) -> None:
    twilio.fail_next(TO, [(400, 21610)])

    verdict = await channel.send(make_message())

    assert verdict.outcome is Outcome.ADDRESS_INVALID
    assert "Twilio 21610: Attempt to send to unsubscribed recipient" in verdict.reason
    assert twilio.messages == []


async def test_unsubscribe_lasts(twilio: TwilioEmulator, channel: TwilioChannel) -> None:
    twilio.unsubscribe(TO)

    verdicts = [await channel.send(make_message()) for _ in range(2)]

    assert {v.outcome for v in verdicts} == {Outcome.ADDRESS_INVALID}
    assert (await channel.send(make_message(phone="+447911123456"))).outcome is Outcome.DELIVERED


@pytest.mark.parametrize(("code", "outcome"), [(21211, Outcome.REJECTED),
                                               (21614, Outcome.REJECTED),
                                               (21611, Outcome.RETRY)])
async def test_scripted_codes(
    twilio: TwilioEmulator, channel: TwilioChannel, code: int, outcome: Outcome
) -> None:
    twilio.fail_next(TO, [(400, code)])

    verdict = await channel.send(make_message())

    assert (verdict.outcome, verdict.status_code) == (outcome, 400)
    assert f"Twilio {code}" in verdict.reason


async def test_fail_next_only_touches_its_number(
    twilio: TwilioEmulator, channel: TwilioChannel
) -> None:
    twilio.fail_next("+447911123456", [(500, None)])

    assert (await channel.send(make_message())).outcome is Outcome.DELIVERED


async def test_wrong_token_is_rejected(twilio: TwilioEmulator, client: httpx.AsyncClient) -> None:
    channel = TwilioChannel(config_for(twilio, auth_token="wrong"), client)

    verdict = await channel.send(make_message())

    assert (verdict.outcome, verdict.status_code) == (Outcome.REJECTED, 401)
    assert "Twilio 20003: Authenticate" in verdict.reason
    assert twilio.messages == []
    assert [(a.status, a.code) for a in twilio.answered] == [(401, 20003)]


async def test_another_accounts_sid_is_rejected(
    twilio: TwilioEmulator, client: httpx.AsyncClient
) -> None:
    verdict = await TwilioChannel(config_for(twilio, account_sid=OTHER_SID), client).send(
        make_message()
    )

    assert verdict.status_code == 401


async def test_messaging_service(twilio: TwilioEmulator, client: httpx.AsyncClient) -> None:
    config = config_for(twilio, from_number=None, messaging_service_sid=SERVICE_SID)

    verdict = await TwilioChannel(config, client).send(make_message())

    assert verdict.outcome is Outcome.DELIVERED
    [sms] = twilio.messages
    assert (sms.from_, sms.messaging_service_sid) == (None, SERVICE_SID)


async def test_unicode_and_long_bodies_are_counted(
    twilio: TwilioEmulator, channel: TwilioChannel
) -> None:
    await channel.send(make_message(title=None, body="Ça marche " + EMOJI))
    await channel.send(make_message(title=None, body="x" * 161))

    assert [(m.encoding, m.num_segments) for m in twilio.messages] == [("UCS-2", 1), ("GSM-7", 2)]


async def test_network_failure_is_a_retry(client: httpx.AsyncClient) -> None:
    emulator = TwilioEmulator(ACCOUNT_SID, TOKEN)
    await emulator.start()
    url = emulator.url
    await emulator.stop()
    config = TwilioConfig(ACCOUNT_SID, TOKEN, from_number=FROM, base_url=url)

    verdict = await TwilioChannel(config, client).send(make_message())

    assert verdict.outcome is Outcome.RETRY
    assert verdict.status_code is None


async def test_failover_to_a_second_account(client: httpx.AsyncClient) -> None:
    async with (
        TwilioEmulator(ACCOUNT_SID, TOKEN) as primary,
        TwilioEmulator(OTHER_SID, TOKEN) as secondary,
    ):
        primary.fail_next(TO, [(503, 20503)])
        failover = FailoverSmsChannel([
            TwilioChannel(config_for(primary), client),
            TwilioChannel(config_for(secondary, account_sid=OTHER_SID), client),
        ])

        first = await failover.send(make_message("dlv_a"))
        second = await failover.send(make_message("dlv_b"))
        await failover.aclose()

    assert first.outcome is second.outcome is Outcome.DELIVERED
    assert first.reason.startswith("channel 2 after 1 retried: sid=SM")
    assert (len(primary.messages), len(secondary.messages)) == (1, 1)


# -- what the emulator checks ----------------------------------------------------------


@pytest.mark.parametrize(
    ("form", "status", "code"),
    [
        ({"From": FROM, "Body": "hi"}, 400, 21604),
        ({"To": TO, "Body": "hi"}, 400, 21603),
        ({"To": TO, "MessagingServiceSid": "MG123", "Body": "hi"}, 400, 21705),
        ({"To": TO, "From": FROM}, 400, 21602),
        ({"To": TO, "From": FROM, "Body": ""}, 400, 21602),
        ({"To": "4155552671", "From": FROM, "Body": "hi"}, 400, 21211),
        ({"To": "+1 415 555 2671", "From": FROM, "Body": "hi"}, 400, 21211),
        ({"To": "+1415555267", "From": FROM, "Body": "hi"}, 400, 21211),
        ({"To": TO, "From": FROM, "Body": "x" * 1601}, 400, 21617),
        ({"To": TO, "From": FROM, "Body": EMOJI * 801}, 400, 21617),
        ({"To": TO, "From": FROM, "Body": "hi", "StatusCallback": "not a url"}, 400, 21609),
        ({"To": TO, "From": FROM, "Body": "hi", "StatusCallback": "http://a_b.example/x"},
         400, 21609),
    ],
)
async def test_validation(
    twilio: TwilioEmulator,
    client: httpx.AsyncClient,
    form: dict[str, str],
    status: int,
    code: int,
) -> None:
    response = await post(client, twilio, form)

    assert response.status_code == status
    document = response.json()
    assert document["code"] == code
    assert document["status"] == status
    assert document["more_info"] == f"https://www.twilio.com/docs/errors/{code}"
    assert document["message"]
    assert twilio.messages == []


async def test_body_at_the_limit_is_accepted(
    twilio: TwilioEmulator, client: httpx.AsyncClient
) -> None:
    response = await post(client, twilio, {"To": TO, "From": FROM, "Body": "x" * 1600})

    assert response.status_code == 201
    assert response.json()["num_segments"] == "11"


async def test_json_body_is_not_read_as_form(
    twilio: TwilioEmulator, client: httpx.AsyncClient
) -> None:
    # Twilio 21604's causes include a body that is not application/x-www-form-urlencoded.
    response = await client.post(
        f"{twilio.url}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json",
        json={"To": TO, "From": FROM, "Body": "hi"}, auth=(ACCOUNT_SID, TOKEN),
    )

    assert response.json()["code"] == 21604


@pytest.mark.parametrize(
    "auth",
    [None, (ACCOUNT_SID, "wrong"), (OTHER_SID, TOKEN), ("", "")],
)
async def test_authentication(
    twilio: TwilioEmulator, client: httpx.AsyncClient, auth: tuple[str, str] | None
) -> None:
    response = await client.post(
        f"{twilio.url}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json",
        data={"To": TO, "From": FROM, "Body": "hi"}, auth=auth,
    )

    assert response.status_code == 401
    assert response.json()["code"] == 20003
    assert response.headers["WWW-Authenticate"].startswith("Basic")


async def test_garbled_authorization_header(
    twilio: TwilioEmulator, client: httpx.AsyncClient
) -> None:
    response = await client.post(
        f"{twilio.url}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json",
        data={"To": TO, "From": FROM, "Body": "hi"},
        headers={"Authorization": "Basic %%%" + base64.b64encode(b"\xff").decode()},
    )

    assert response.status_code == 401


async def test_senders_are_checked_when_given(client: httpx.AsyncClient) -> None:
    async with TwilioEmulator(ACCOUNT_SID, TOKEN, senders=[FROM, SERVICE_SID]) as twilio:
        not_ours = await post(client, twilio, {"To": TO, "From": "+15005550001", "Body": "hi"})
        no_service = await post(
            client, twilio, {"To": TO, "MessagingServiceSid": "MG" + "1" * 32, "Body": "hi"}
        )
        ours = await post(client, twilio, {"To": TO, "MessagingServiceSid": SERVICE_SID,
                                           "Body": "hi"})

    assert not_ours.json()["code"] == 21606
    assert no_service.json()["code"] == 21701
    assert ours.status_code == 201
    assert ours.json()["status"] == "accepted"


async def test_message_resource(twilio: TwilioEmulator, client: httpx.AsyncClient) -> None:
    response = await post(client, twilio, {"To": TO, "From": FROM, "Body": "Prix: 5 €"})

    assert response.status_code == 201
    resource = response.json()
    sid = resource["sid"]
    assert sid.startswith("SM") and len(sid) == 34
    int(sid[2:], 16)
    assert resource | {"date_created": None, "date_updated": None} == {
        "account_sid": ACCOUNT_SID,
        "api_version": "2010-04-01",
        "body": "Prix: 5 €",
        "date_created": None,
        "date_sent": None,
        "date_updated": None,
        "direction": "outbound-api",
        "error_code": None,
        "error_message": None,
        "from": FROM,
        "messaging_service_sid": None,
        "num_media": "0",
        "num_segments": "1",
        "price": None,
        "price_unit": "USD",
        "sid": sid,
        "status": "queued",
        "subresource_uris": {
            "media": f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{sid}/Media.json"
        },
        "to": TO,
        "uri": f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{sid}.json",
    }
    assert resource["date_created"].endswith("+0000")


async def test_wait_for_times_out_saying_how_many_arrived(twilio: TwilioEmulator) -> None:
    with pytest.raises(TimeoutError, match="0 of 1 messages"):
        await twilio.wait_for(1, timeout=0.05)


async def test_url_needs_a_started_emulator() -> None:
    emulator = TwilioEmulator(ACCOUNT_SID, TOKEN)
    with pytest.raises(RuntimeError):
        _ = emulator.url
    await emulator.start()
    with pytest.raises(RuntimeError, match="already started"):
        await emulator.start()
    await emulator.stop()
    with pytest.raises(RuntimeError):
        _ = emulator.url


# -- status callbacks ------------------------------------------------------------------


async def test_status_callbacks_are_posted_and_signed(client: httpx.AsyncClient) -> None:
    received: list[tuple[str, dict[str, str], str]] = []

    async def status_hook(request: web.Request) -> web.Response:
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        received.append((str(request.url), form, request.headers["X-Twilio-Signature"]))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/twilio/status", status_hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with TwilioEmulator(ACCOUNT_SID, TOKEN) as twilio:
            config = config_for(twilio, status_callback=f"http://127.0.0.1:{port}/twilio/status")
            verdict = await TwilioChannel(config, client).send(make_message("dlv_cb"))
            callbacks = await twilio.wait_for_callbacks(2, timeout=5)
    finally:
        await runner.cleanup()

    assert verdict.outcome is Outcome.DELIVERED
    assert [(c.message_status, c.status) for c in callbacks] == [("sent", 204), ("delivered", 204)]
    [sms] = twilio.messages
    for (url, form, sig), expected in zip(received, ["sent", "delivered"], strict=True):
        assert url == f"http://127.0.0.1:{port}/twilio/status?delivery_id=dlv_cb"
        assert form["MessageSid"] == form["SmsSid"] == sms.sid
        assert form["MessageStatus"] == expected
        assert (form["To"], form["From"], form["AccountSid"]) == (TO, FROM, ACCOUNT_SID)
        assert sig == signature(TOKEN, url, form)
        assert sig != signature("another token", url, form)


def test_signature_matches_twilios_documented_example() -> None:
    # The worked example in https://www.twilio.com/docs/usage/security#validating-requests
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Caller": "+12349013030",
        "Digits": "1234",
        "From": "+12349013030",
        "To": "+18005551212",
    }

    assert signature("12345", url, params) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="


async def test_unreachable_status_callback_is_recorded(client: httpx.AsyncClient) -> None:
    async with TwilioEmulator(ACCOUNT_SID, TOKEN) as twilio:
        config = config_for(twilio, status_callback="http://127.0.0.1:9/unreachable")
        verdict = await TwilioChannel(config, client).send(make_message())
        callbacks = await twilio.wait_for_callbacks(2, timeout=10)

    assert verdict.outcome is Outcome.DELIVERED
    assert [c.status for c in callbacks] == [None, None]


async def test_status_callbacks_can_be_turned_off(client: httpx.AsyncClient) -> None:
    async with TwilioEmulator(ACCOUNT_SID, TOKEN, status_callbacks=False) as twilio:
        config = config_for(twilio, status_callback="http://127.0.0.1:9/unreachable")
        await TwilioChannel(config, client).send(make_message())
        await asyncio.sleep(0.05)

    assert twilio.callbacks == []


# -- command line ------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_command_line_prints_messages_and_stops_cleanly(
    client: httpx.AsyncClient, signum: signal.Signals, run_emulator: Callable[..., Any]
) -> None:
    args = ["--account-sid", ACCOUNT_SID, "--auth-token", TOKEN]
    async with run_emulator("twilio", *args, timeout=10) as cli:
        url = cli.banner.rsplit(" ", 1)[-1].strip()
        assert url.startswith("http://127.0.0.1:"), cli.banner

        config = TwilioConfig(ACCOUNT_SID, TOKEN, from_number=FROM, base_url=url)
        verdict = await TwilioChannel(config, client).send(make_message())
        line = await cli.readline()

        await cli.stop(signum)

    assert verdict.outcome is Outcome.DELIVERED
    assert line.startswith("201 SM")
    assert f"to={TO}" in line
    assert "GSM-7x1" in line
    assert "Sign-in code" in line


async def test_command_line_needs_credentials() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "connectors.emulators.twilio", "--port", "0",
        cwd=REPO_ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin"},
    )
    _, errors = await process.communicate()

    assert process.returncode == 2
    assert b"--account-sid and --auth-token" in errors
