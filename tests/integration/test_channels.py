"""Every channel end to end: real broker, a worker process, the provider's emulator."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from connectors.emulators.apns import ApnsEmulator, make_signing_key
from connectors.emulators.fcm import FcmEmulator, make_service_account
from connectors.emulators.slack import SlackEmulator
from connectors.emulators.smtp_server import SmtpServer
from connectors.emulators.twilio import TwilioEmulator
from streams.publisher import Publisher

pytestmark = pytest.mark.integration

SLACK_TOKEN = "xoxb-tidings-test-token"
SLACK_HOOK = "/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"


def request(channels: list[str], recipient: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "tenant_id": "acme",
        "idempotency_key": f"k-{time.monotonic_ns()}",
        "category": "orders",
        "channels": channels,
        "recipients": [{"user_id": "u1", **recipient}],
        "title": "Order shipped",
        "content": "Your order <1> & more has shipped",
        **extra,
    }


async def publish(env: Any, requests: list[dict[str, Any]]) -> list[str]:
    def send() -> list[str]:
        with Publisher(env.settings()) as publisher:
            return publisher.publish_many(requests)

    return await asyncio.to_thread(send)


def of(records: list[dict[str, Any]], status: str) -> list[dict[str, Any]]:
    return [r for r in records if r["status"] == status]


@pytest.fixture
async def slack_emulator():
    emulator = SlackEmulator(bot_tokens=[SLACK_TOKEN], channels={"C0123456789": "general"},
                             webhooks={SLACK_HOOK: "C0123456789"})
    async with emulator:
        yield emulator


@pytest.fixture
def slack_env(tidings_env, slack_emulator):
    tidings_env.update(
        TIDINGS_ENABLED_CHANNELS='["webhook", "slack"]',
        TIDINGS_SLACK_BOT_TOKEN=SLACK_TOKEN,
        TIDINGS_SLACK_BASE_URL=slack_emulator.url,
        TIDINGS_SLACK_WEBHOOK_URL_PREFIXES=f'["{slack_emulator.url}/services/"]',
    )
    return tidings_env


async def test_slack_web_api_and_incoming_webhook(slack_env, slack_emulator, worker,
                                                  read_topic):
    worker()
    await publish(slack_env, [
        request(["slack"], {"slack": "C0123456789"}),
        request(["slack"], {"slack": f"{slack_emulator.url}{SLACK_HOOK}"}),
    ])
    posted = await slack_emulator.wait_for(2, timeout=60)
    assert sorted(p.via for p in posted) == ["web_api", "webhook"]
    web = next(p for p in posted if p.via == "web_api")
    assert web.metadata["event_payload"]["delivery_id"].startswith("dlv_")
    assert "&lt;1&gt; &amp; more" in web.text  # escaped for mrkdwn


async def test_slack_rate_limit_is_retried_after_retry_after(slack_env, slack_emulator, worker,
                                                             read_topic):
    slack_emulator.fail_next("C0123456789", [429], retry_after=1)
    worker()
    (nid,) = await publish(slack_env, [request(["slack"], {"slack": "C0123456789"})])
    await slack_emulator.wait_for(1, timeout=60)
    statuses = read_topic(slack_env.topic("status"), "DeliveryStatus")
    records = await statuses.wait_until(lambda r: of(r, "delivered"), 30)
    assert [r["status"] for r in records if r["notification_id"] == nid][-2:] == [
        "retrying", "delivered"
    ]


@pytest.fixture
async def apns_emulator():
    key = make_signing_key()
    emulator = ApnsEmulator(key.team_id, key.key_id, key.private_key, topic="com.acme.app")
    async with emulator:
        emulator.signing_key = key
        yield emulator


@pytest.fixture
async def fcm_emulator():
    account = make_service_account("tidings-test")
    emulator = FcmEmulator(account)
    async with emulator:
        emulator.account = {**account, "token_uri": emulator.token_uri}
        yield emulator


@pytest.fixture
def push_env(tidings_env, apns_emulator, fcm_emulator):
    key = apns_emulator.signing_key
    tidings_env.update(
        TIDINGS_FCM_SERVICE_ACCOUNT=json.dumps(fcm_emulator.account),
        TIDINGS_FCM_BASE_URL=fcm_emulator.url,
        TIDINGS_ENABLED_CHANNELS='["webhook", "push"]',
        TIDINGS_APNS_TEAM_ID=key.team_id,
        TIDINGS_APNS_KEY_ID=key.key_id,
        TIDINGS_APNS_PRIVATE_KEY=key.private_key,
        TIDINGS_APNS_TOPIC="com.acme.app",
        TIDINGS_APNS_BASE_URL=apns_emulator.url,
        TIDINGS_APNS_CA_FILE=str(apns_emulator.ca_file),
    )
    return tidings_env


APNS_TOKEN = "a" * 64
DEAD_TOKEN = "b" * 64


async def test_apns_over_http2_and_a_dead_token_is_suppressed(push_env, apns_emulator, worker,
                                                              read_topic):
    apns_emulator.unregister(DEAD_TOKEN)
    worker()
    ok, dead = await publish(push_env, [
        request(["push"], {"push_tokens": [f"apns:{APNS_TOKEN}"]}),
        request(["push"], {"push_tokens": [f"apns:{DEAD_TOKEN}"]}),
    ])
    (notification,) = await apns_emulator.wait_for(1, timeout=60)
    assert notification.http_version == "2"
    assert notification.payload["aps"]["alert"]["title"] == "Order shipped"

    statuses = read_topic(push_env.topic("status"), "DeliveryStatus")
    await statuses.wait_until(lambda r: of(r, "address_invalid"), 30)
    dead_letters = read_topic(push_env.topic("deadletter"), "DeadLetter")
    (letter,) = await dead_letters.wait_until(lambda r: r, 30)
    assert letter["notification_id"] == dead
    assert letter["error_class"] == "AddressInvalid"

    # The token is now suppressed: the next notification to it is not sent at all.
    sent_before = len(apns_emulator.received)
    (again,) = await publish(push_env, [
        request(["push"], {"push_tokens": [f"apns:{DEAD_TOKEN}"]})
    ])
    records = await statuses.wait_until(
        lambda r: [s for s in of(r, "suppressed") if s["notification_id"] == again], 30
    )
    assert of(records, "delivered")[0]["notification_id"] == ok
    assert len(apns_emulator.received) == sent_before


async def test_fcm_push_delivered_with_one_access_token(push_env, fcm_emulator, worker):
    worker()
    await publish(push_env, [request(["push"], {"push_tokens": [f"fcm:device-{i}"]})
                             for i in range(3)])
    accepted = await fcm_emulator.wait_for(3, timeout=60)
    assert {a.device_token for a in accepted} == {f"device-{i}" for i in range(3)}
    assert fcm_emulator.issued_tokens == 1


TWILIO_SID = "AC" + "0" * 32
TWILIO_TOKEN = "twilio-test-auth-token"
PHONE = "+14155550100"


@pytest.fixture
async def twilio_emulator():
    async with TwilioEmulator(TWILIO_SID, TWILIO_TOKEN, status_callbacks=False) as emulator:
        yield emulator


def with_sms(env, emulator) -> None:
    env.update(
        TIDINGS_TWILIO_ACCOUNT_SID=TWILIO_SID,
        TIDINGS_TWILIO_AUTH_TOKEN=TWILIO_TOKEN,
        TIDINGS_TWILIO_FROM_NUMBER="+14155550199",
        TIDINGS_TWILIO_BASE_URL=emulator.url,
    )


async def test_sms_delivered_and_stop_is_address_invalid(tidings_env, twilio_emulator, worker,
                                                         read_topic):
    with_sms(tidings_env, twilio_emulator)
    tidings_env["TIDINGS_ENABLED_CHANNELS"] = '["sms"]'
    twilio_emulator.unsubscribe("+14155550111")
    twilio_emulator.fail_next(PHONE, [(429, 20429)], retry_after=1)
    worker()
    ok, stopped = await publish(tidings_env, [
        request(["sms"], {"phone": PHONE}),
        request(["sms"], {"phone": "+1 415 555 0111"}),
    ])
    (sent,) = await twilio_emulator.wait_for(1, timeout=60)
    assert sent.to == PHONE and sent.body.startswith("Order shipped\n")
    statuses = read_topic(tidings_env.topic("status"), "DeliveryStatus")
    records = await statuses.wait_until(
        lambda r: of(r, "delivered") and of(r, "address_invalid"), 30
    )
    assert [r["status"] for r in records if r["notification_id"] == ok][-2:] == [
        "retrying", "delivered"
    ]
    assert of(records, "address_invalid")[0]["notification_id"] == stopped


async def test_failover_from_a_dead_push_token_to_sms_happens_once(
    push_env, fcm_emulator, twilio_emulator, worker, read_topic
):
    with_sms(push_env, twilio_emulator)
    push_env["TIDINGS_ENABLED_CHANNELS"] = '["push", "sms"]'
    fcm_emulator.unregister("gone-device")
    worker()
    (nid,) = await publish(push_env, [
        request(["push"], {"push_tokens": ["fcm:gone-device"], "phone": PHONE},
                fallback_channels=["sms"]),
    ])
    (sent,) = await twilio_emulator.wait_for(1, timeout=60)
    assert sent.to == PHONE
    statuses = read_topic(push_env.topic("status"), "DeliveryStatus")
    records = await statuses.wait_until(lambda r: of(r, "delivered"), 30)
    trail = [(r["channel"], r["status"]) for r in records if r["notification_id"] == nid]
    assert trail == [(None, "accepted"), ("push", "address_invalid"), ("push", "failover"),
                     ("sms", "delivered")]
    await asyncio.sleep(1.0)
    assert len(twilio_emulator.messages) == 1


async def test_email_over_starttls_with_auth_is_multipart_alternative(tidings_env, worker,
                                                                      read_topic):
    async with SmtpServer(username="tidings", password="s3cret", tls_mode="starttls") as smtp:
        tidings_env.update(
            TIDINGS_ENABLED_CHANNELS='["email"]',
            TIDINGS_SMTP_HOST="127.0.0.1",
            TIDINGS_SMTP_PORT=str(smtp.port),
            TIDINGS_SMTP_FROM="Acme <notify@acme.example>",
            TIDINGS_SMTP_USERNAME="tidings",
            TIDINGS_SMTP_PASSWORD="s3cret",
            TIDINGS_SMTP_TLS_MODE="starttls",
            TIDINGS_SMTP_CA_FILE=str(smtp.cert_path),
        )
        worker()
        (nid,) = await publish(tidings_env, [request(["email"], {"email": "ann@example.com"})])
        (mail,) = await smtp.wait_for(1, timeout=60)
    assert mail.tls and mail.authenticated_as == "tidings"
    message = mail.message
    assert message.get_content_type() == "multipart/alternative"
    parts = [part.get_content_type() for part in message.iter_parts()]
    assert parts == ["text/plain", "text/html"]
    assert message["Subject"] == "Order shipped"
    assert message["To"] == "ann@example.com"
    assert message["Message-ID"].startswith("<dlv_")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "&lt;1&gt;" in message.get_body(("html",)).get_content()
    statuses = read_topic(tidings_env.topic("status"), "DeliveryStatus")
    records = await statuses.wait_until(lambda r: of(r, "delivered"), 30)
    assert of(records, "delivered")[0]["notification_id"] == nid
