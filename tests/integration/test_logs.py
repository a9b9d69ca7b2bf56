"""The worker's whole log is JSON, names its records by id, and never names a recipient.

A worker process at the `info` level delivers over email, SMS, push and webhook through the
providers' emulators, with failures whose provider answers quote the address back (an SMTP
550 naming the mailbox, Twilio's 21211 naming the number), so recipients' data does reach
the log statements — and the test greps the worker's output for it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from connectors.emulators.fcm import FcmEmulator, make_service_account
from connectors.emulators.smtp_server import SmtpServer
from connectors.emulators.twilio import TwilioEmulator
from connectors.emulators.webhook_receiver import WebhookReceiver
from streams.publisher import Publisher

pytestmark = pytest.mark.integration

EMAIL_OK = "ann.lee@example.com"
EMAIL_GONE = "bob.gone@example.org"
PHONE_OK = "+14155550100"
PHONE_BAD = "+14155550177"
FCM_OK = "fcm:device-token-ok-7f3a9c"
FCM_GONE = "fcm:device-token-gone-2b8d1e"
TWILIO_SID = "AC" + "1" * 32
TWILIO_TOKEN = "twilio-auth-token-9d2c"
SMTP_PASSWORD = "smtp-pass-4e1f"
WEBHOOK_TOKEN = "hook-query-secret-5a7b"


@pytest.fixture
async def providers(tidings_env: Any) -> AsyncIterator[dict[str, Any]]:
    account = make_service_account("tidings-logs")
    async with (
        SmtpServer(username="tidings", password=SMTP_PASSWORD) as smtp,
        TwilioEmulator(TWILIO_SID, TWILIO_TOKEN, status_callbacks=False) as twilio,
        FcmEmulator(account) as fcm,
        WebhookReceiver(tidings_env["TIDINGS_WEBHOOK_SECRET"]) as receiver,
    ):
        tidings_env.update(
            TIDINGS_ENABLED_CHANNELS='["email", "sms", "push", "webhook"]',
            TIDINGS_SMTP_HOST="127.0.0.1",
            TIDINGS_SMTP_PORT=str(smtp.port),
            TIDINGS_SMTP_FROM="Acme <notify@acme.example>",
            TIDINGS_SMTP_USERNAME="tidings",
            TIDINGS_SMTP_PASSWORD=SMTP_PASSWORD,
            TIDINGS_SMTP_TLS_MODE="none",
            TIDINGS_TWILIO_ACCOUNT_SID=TWILIO_SID,
            TIDINGS_TWILIO_AUTH_TOKEN=TWILIO_TOKEN,
            TIDINGS_TWILIO_FROM_NUMBER="+14155550199",
            TIDINGS_TWILIO_BASE_URL=twilio.url,
            TIDINGS_FCM_SERVICE_ACCOUNT=json.dumps({**account, "token_uri": fcm.token_uri}),
            TIDINGS_FCM_BASE_URL=fcm.url,
            TIDINGS_LOG_LEVEL="info",
        )
        yield {"smtp": smtp, "twilio": twilio, "fcm": fcm, "receiver": receiver}


def request(channel: str, recipient: dict[str, Any]) -> dict[str, Any]:
    return {
        "tenant_id": "acme",
        "idempotency_key": f"k-{time.monotonic_ns()}",
        "category": "orders",
        "channels": [channel],
        "recipients": [{"user_id": f"user-{time.monotonic_ns()}", **recipient}],
        "title": "Order shipped",
        "content": "Your order has shipped",
    }


async def test_worker_log_is_json_with_ids_and_no_recipient_data(
    tidings_env, providers, worker, read_topic
):
    # Real providers' answers that quote the address back.
    providers["smtp"].always(EMAIL_GONE, 550, f"5.1.1 <{EMAIL_GONE}>: Recipient address "
                                              "rejected: User unknown")
    providers["twilio"].fail_next(PHONE_BAD, [(400, 21211)])
    providers["fcm"].unregister(FCM_GONE.removeprefix("fcm:"))
    process = worker()
    hook = f"{providers['receiver'].url}/hook?token={WEBHOOK_TOKEN}"
    requests = [
        request("email", {"email": EMAIL_OK}),
        request("email", {"email": EMAIL_GONE}),
        request("sms", {"phone": PHONE_OK}),
        request("sms", {"phone": PHONE_BAD}),
        request("push", {"push_tokens": [FCM_OK]}),
        request("push", {"push_tokens": [FCM_GONE]}),
        request("webhook", {"webhook_url": hook}),
    ]

    def send() -> list[str]:
        with Publisher(tidings_env.settings()) as publisher:
            return publisher.publish_many(requests)

    ids = await asyncio.to_thread(send)
    final = {"delivered", "dead_lettered"}
    statuses = read_topic(tidings_env.topic("status"), "DeliveryStatus")
    records = await statuses.wait_until(
        lambda r: {s["notification_id"] for s in r if s["status"] in final} == set(ids), 90)
    delivered = {s["notification_id"] for s in records if s["status"] == "delivered"}
    assert delivered == {ids[0], ids[2], ids[4], ids[6]}
    assert process.stop() == 0

    log = process.log()
    lines = [json.loads(line) for line in log.splitlines() if line.strip()]
    assert lines, "the worker logged nothing"

    # Nothing that names a recipient or unlocks a provider, anywhere in the output.
    for secret in (EMAIL_OK, EMAIL_GONE, "bob.gone", PHONE_OK, PHONE_BAD, "4155550177",
                   FCM_OK.removeprefix("fcm:"), FCM_GONE.removeprefix("fcm:"),
                   TWILIO_TOKEN, SMTP_PASSWORD, WEBHOOK_TOKEN,
                   tidings_env["TIDINGS_WEBHOOK_SECRET"].removeprefix("whsec_")):
        assert secret not in log, f"{secret!r} is in the worker's log"
    # They did reach the log statements, masked: the providers' answers were logged.
    assert "***@example.org" in log
    assert "+***77" in log

    # Every notification's records carry its ids; the delivery stage's also the delivery id.
    for nid in ids:
        mine = [line for line in lines if line.get("notification_id") == nid]
        assert mine, f"no log line names {nid}"
        assert all(line["tenant_id"] == "acme" for line in mine)
        assert any(str(line.get("delivery_id", "")).startswith("dlv_") for line in mine)
    dead = [line for line in lines if str(line["event"]).startswith("dead-lettered")]
    assert len(dead) == 3
    assert all(line["level"] == "warning" and line["delivery_id"] for line in dead)
    # Faust's and aiokafka's own records are in the same format.
    assert {"tidings.status", "tidings.agents"} <= {line["logger"] for line in lines}
    assert any(str(line["logger"]).startswith(("faust", "mode", "aiokafka")) for line in lines)
