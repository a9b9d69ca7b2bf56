"""Rules and preferences end to end: real broker, a worker process, the SMTP and Twilio
emulators, and the unsubscribe endpoint served by uvicorn."""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from agents.rule_eval import notification_id_for
from connectors.emulators.smtp_server import SmtpServer
from connectors.emulators.twilio import TwilioEmulator
from streams.events import EventPublisher
from streams.keyed import partition_for
from streams.preferences import PreferencesClient
from streams.publisher import Publisher
from streams.rules import RulesClient
from streams.unsubscribe import unsubscribe_router

pytestmark = pytest.mark.integration

TWILIO_SID = "AC" + "1" * 32
TWILIO_TOKEN = "twilio-test-auth-token"
UNSUBSCRIBE_SECRET = "unsubscribe-test-secret-0123456789"


def of(records: list[dict[str, Any]], status: str, **where: Any) -> list[dict[str, Any]]:
    return [r for r in records if r["status"] == status
            and all(r.get(k) == v for k, v in where.items())]


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpServer]:
    async with SmtpServer(tls_mode="none") as server:
        yield server


@pytest.fixture
async def twilio() -> AsyncIterator[TwilioEmulator]:
    async with TwilioEmulator(TWILIO_SID, TWILIO_TOKEN, status_callbacks=False) as emulator:
        yield emulator


@pytest.fixture
def env(tidings_env, smtp, twilio):
    tidings_env.update(
        TIDINGS_ENABLED_CHANNELS='["email", "sms"]',
        TIDINGS_SMTP_HOST="127.0.0.1",
        TIDINGS_SMTP_PORT=str(smtp.port),
        TIDINGS_SMTP_TLS_MODE="none",
        TIDINGS_SMTP_FROM="Acme <notify@acme.example>",
        TIDINGS_TWILIO_ACCOUNT_SID=TWILIO_SID,
        TIDINGS_TWILIO_AUTH_TOKEN=TWILIO_TOKEN,
        TIDINGS_TWILIO_FROM_NUMBER="+14155550199",
        TIDINGS_TWILIO_BASE_URL=twilio.url,
        TIDINGS_UNSUBSCRIBE_SECRET=UNSUBSCRIBE_SECRET,
    )
    return tidings_env


async def in_thread(function: Any, *args: Any) -> Any:
    return await asyncio.to_thread(function, *args)


SHIPPED_RULE = {
    "tenant_id": "acme", "rule_id": "shipped-big", "event_type": "order.shipped",
    "condition": 'int(payload.total) >= 50 && payload.country in ["FR", "DE"]',
    "recipients": [{"user_id": "payload.customer_id", "email": "payload.email",
                    "phone": "payload.phone", "locale": "payload.locale"}],
    "channels": ["email", "sms"], "category": "orders",
    "title": "Order ${order_id} shipped", "content": "Your order ${order_id} is on its way.",
}
BROKEN_RULE = {
    "tenant_id": "acme", "rule_id": "broken", "event_type": "order.shipped",
    # `coupon` is not in the payload: the condition cannot be evaluated.
    "condition": "payload.coupon.startsWith('VIP')",
    "recipients": [{"user_id": "payload.customer_id", "email": "payload.email"}],
    "channels": ["email"], "title": "VIP",
}
OTHER_TYPE_RULE = {**SHIPPED_RULE, "rule_id": "refunds", "event_type": "order.refunded"}


async def test_a_domain_event_becomes_an_email_and_an_sms_and_a_broken_rule_is_dead_lettered(
        env, smtp, twilio, worker, read_topic, create_topics):
    create_topics()
    settings = env.settings()

    def put_rules() -> None:
        with RulesClient(settings) as rules:
            for rule in (SHIPPED_RULE, BROKEN_RULE, OTHER_TYPE_RULE):
                rules.put(rule)

    await in_thread(put_rules)
    worker()
    event = {"event_id": "evt-1001", "tenant_id": "acme", "event_type": "order.shipped",
             "subject_id": "order-17",
             "payload": {"order_id": "17", "total": "80", "country": "FR",
                         "customer_id": "ann", "email": "ann@example.com",
                         "phone": "+14155550100", "locale": "fr-FR"}}
    small = {**event, "event_id": "evt-1002", "subject_id": "order-18",
             "payload": {**event["payload"], "order_id": "18", "total": "10"}}

    def publish(events: list[dict[str, Any]]) -> list[str]:
        with EventPublisher(settings) as publisher:
            return publisher.publish_many(events)

    await in_thread(publish, [event, small])
    (mail,) = await smtp.wait_for(1, timeout=90)
    (sms,) = await twilio.wait_for(1, timeout=30)
    assert mail.message["Subject"] == "Order 17 shipped"
    assert mail.message["To"] == "ann@example.com"
    assert sms.to == "+14155550100" and "Your order 17 is on its way." in sms.body

    expected_id = notification_id_for("acme", "evt-1001", "shipped-big", "ann")
    statuses = read_topic(env.topic("status"), "DeliveryStatus")
    records = await statuses.wait_until(lambda r: len(of(r, "delivered")) == 2, 30)
    assert {r["notification_id"] for r in of(records, "delivered")} == {expected_id}
    assert all(r["details"]["rule_id"] == "shipped-big" for r in of(records, "delivered"))
    (triggered,) = of(records, "triggered")
    assert triggered["details"] == {"rule_id": "shipped-big", "event_id": "evt-1001",
                                    "event_type": "order.shipped"}

    # The broken rule failed on both events; each is a dead letter naming it, and it stopped
    # neither the other rule nor the worker.
    dead_letters = read_topic(env.topic("deadletter"), "DeadLetter")
    letters = await dead_letters.wait_until(lambda r: len(r) >= 2, 30)
    assert {letter["stage"] for letter in letters} == {"rules"}
    assert all(letter["message"].startswith("rule broken: ") for letter in letters)
    assert all(letter["error_class"] == "RuleError" for letter in letters)

    # A replay of the same event makes the same notification id: a duplicate, not a resend.
    await in_thread(publish, [event])
    records = await statuses.wait_until(lambda r: of(r, "duplicate"), 60)
    assert of(records, "duplicate")[0]["notification_id"] == expected_id
    await asyncio.sleep(1.0)
    assert len(smtp.received) == 1 and len(twilio.messages) == 1


def request(user: str, channels: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "tenant_id": "acme", "idempotency_key": f"{user}-{time.monotonic_ns()}",
        "category": "newsletter", "channels": channels,
        "recipients": [{"user_id": user, "email": f"{user}@example.com",
                        "phone": "+14155550100"}],
        "title": "News", "content": f"Hello {user}", **extra,
    }


@pytest.fixture
async def unsubscribe_api(env) -> AsyncIterator[str]:
    """The unsubscribe router in a FastAPI app, served by uvicorn on an ephemeral port."""
    app = FastAPI()
    app.include_router(unsubscribe_router(env.settings()))
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


async def test_preferences_suppress_defer_and_unsubscribe(env, smtp, twilio, worker, read_topic,
                                                          unsubscribe_api, create_topics):
    env["TIDINGS_EMAIL_UNSUBSCRIBE_URL"] = f"{unsubscribe_api}/v1/unsubscribe?token={{token}}"
    create_topics()
    settings = env.settings()

    def change(user: str, ops: list[tuple[str, str | None]]) -> None:
        with PreferencesClient(settings) as preferences:
            preferences.change("acme", user, ops)

    def states(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [s for s in records if s["kind"] == "state"]

    await in_thread(change, "opted-out", [("opt_out_category", "newsletter")])
    await in_thread(change, "no-sms", [("opt_out_channel", "sms"), ("set_locale", "de-DE")])
    prefs_topic = read_topic(env.topic("preferences"), "Preferences")
    worker()
    # The stage folds each change and writes the state back: then the table has it.
    await prefs_topic.wait_until(lambda r: len(states(r)) == 2, 90)
    # A quiet window that started a minute ago and ends in 12 s (UTC wall times).
    now = datetime.datetime.now(datetime.UTC)
    quiet_end = now + datetime.timedelta(seconds=12)
    window = f"{(now - datetime.timedelta(minutes=1)):%H:%M:%S}-{quiet_end:%H:%M:%S}"
    await in_thread(change, "sleeper", [("set_quiet_hours", window), ("set_timezone", "UTC")])
    await prefs_topic.wait_until(lambda r: len(states(r)) == 3, 30)
    for raw in prefs_topic.raw:
        assert raw.partition() == partition_for(raw.key(), settings.partitions)

    def publish(requests: list[dict[str, Any]]) -> list[str]:
        with Publisher(settings) as publisher:
            return publisher.publish_many(requests)

    opted_out, critical_opted_out, no_sms, sleeper, sleeper_critical, reader = await in_thread(
        publish, [
            request("opted-out", ["email", "sms"]),
            request("opted-out", ["email"], priority="critical"),
            request("no-sms", ["email", "sms"]),
            request("sleeper", ["sms"]),
            request("sleeper", ["email"], priority="critical"),
            request("reader", ["email"]),
        ])
    statuses = read_topic(env.topic("status"), "DeliveryStatus")
    records = await statuses.wait_until(
        lambda r: len(of(r, "delivered")) == 4 and len(of(r, "suppressed")) == 4, 90)

    # Opted out of the category: nothing on any channel, critical or not.
    suppressed = of(records, "suppressed", notification_id=opted_out)
    assert {r["channel"] for r in suppressed} == {"email", "sms"}
    assert all(r["details"] == {"cause": "category_opt_out", "category": "newsletter"}
               for r in suppressed)
    assert of(records, "suppressed", notification_id=critical_opted_out)
    # Opted out of SMS: the email goes; the SMS does not.
    (sms_out,) = of(records, "suppressed", notification_id=no_sms)
    assert sms_out["channel"] == "sms" and sms_out["details"]["cause"] == "channel_opt_out"
    assert of(records, "delivered", notification_id=no_sms, channel="email")
    # Quiet hours: critical goes now; the rest is deferred to the window's end, then sent.
    assert of(records, "delivered", notification_id=sleeper_critical)
    (deferred,) = of(records, "deferred", notification_id=sleeper)
    assert deferred["details"]["cause"] == "quiet_hours"
    (late,) = of(records, "delivered", notification_id=sleeper)
    assert late["occurred_at"] >= int(quiet_end.timestamp() * 1000) - 1000
    assert of(records, "delivered", notification_id=reader)

    delivered_to = sorted(m.message["To"] for m in smtp.received)
    assert delivered_to == ["no-sms@example.com", "reader@example.com", "sleeper@example.com"]
    assert [m.to for m in twilio.messages] == ["+14155550100"]  # the sleeper's, after hours

    # One-click unsubscribe from the reader's email: the next one is suppressed.
    mail = next(m for m in smtp.received if m.message["To"] == "reader@example.com")
    assert mail.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = str(mail.message["List-Unsubscribe"]).strip("<>")
    async with httpx.AsyncClient() as client:
        page = await client.get(url)
        assert page.status_code == 200 and "newsletter" in page.text
        tampered = await client.post(url[:-3] + "AAA", content="List-Unsubscribe=One-Click")
        assert tampered.status_code == 400
        answer = await client.post(url, content="List-Unsubscribe=One-Click",
                                   headers={"content-type": "application/x-www-form-urlencoded"})
    assert answer.status_code == 200 and answer.json()["category"] == "newsletter"
    await prefs_topic.wait_until(
        lambda r: any(s["user_id"] == "reader" and s["kind"] == "state"
                      and s["category_opt_outs"] == ["newsletter"] for s in r), 30)
    (again,) = await in_thread(publish, [request("reader", ["email"])])
    records = await statuses.wait_until(
        lambda r: of(r, "suppressed", notification_id=again), 30)
    assert of(records, "suppressed", notification_id=again)[0]["details"]["cause"] == (
        "category_opt_out")
    await asyncio.sleep(1.0)
    assert len(smtp.received) == 3
