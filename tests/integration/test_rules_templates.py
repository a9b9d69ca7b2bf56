"""A domain event → a rule → localized notifications, end to end (issue #4).

Real broker, a worker process, the templates published by the `tidings templates` CLI from
deploy/local/templates, a rule naming a template, the SMTP and Twilio emulators. The
recipient's locale comes from the event (fr-CA, ja) or, when the event has none, from the
user's preferences (de-DE).
"""

from __future__ import annotations

import asyncio
import datetime
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agents.rule_eval import notification_id_for
from connectors.emulators.smtp_server import ReceivedMail, SmtpServer
from connectors.emulators.twilio import TwilioEmulator
from streams.events import EventPublisher
from streams.preferences import PreferencesClient
from streams.rules import RulesClient

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SAMPLES = sorted((REPO / "deploy" / "local" / "templates").glob("*.yaml"))
TWILIO_SID = "AC" + "2" * 32
TWILIO_TOKEN = "twilio-test-auth-token"

RULE = {
    "tenant_id": "acme", "rule_id": "order-shipped-localized", "event_type": "order.shipped",
    "condition": "int(payload.total) >= 20",
    "recipients": [{"user_id": "payload.customer_id", "email": "payload.email",
                    "phone": "payload.phone", "locale": "payload.locale",
                    "timezone": "payload.timezone"}],
    "channels": ["email", "sms"], "category": "orders",
    # No inline title/content: everything the recipient reads comes from the template.
    "template": {"template_id": "order-shipped"},
}


def shipped(event_id: str, order_id: str, customer: str, phone: str, **payload: str
            ) -> dict[str, Any]:
    return {
        "event_id": event_id, "tenant_id": "acme", "event_type": "order.shipped",
        "subject_id": f"order-{order_id}",
        "payload": {"order_id": order_id, "total": "1234", "currency": "EUR",
                    "eta": "2026-03-04", "customer_id": customer,
                    "email": f"{customer}@example.com", "phone": phone, **payload},
    }


def of(records: list[dict[str, Any]], status: str) -> list[dict[str, Any]]:
    return [r for r in records if r["status"] == status]


def templates_cli(env: Any, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "streams.cli", "templates", *args], cwd=REPO,
        env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpServer]:
    async with SmtpServer(tls_mode="none") as server:
        yield server


@pytest.fixture
async def twilio() -> AsyncIterator[TwilioEmulator]:
    async with TwilioEmulator(TWILIO_SID, TWILIO_TOKEN, status_callbacks=False) as emulator:
        yield emulator


def parts(mail: ReceivedMail) -> tuple[str, str]:
    message = mail.message
    return (message.get_body(("plain",)).get_content(),
            message.get_body(("html",)).get_content())


@pytest.fixture
def env(tidings_env, smtp, twilio):
    tidings_env.update(
        TIDINGS_ENABLED_CHANNELS='["email", "sms"]',
        TIDINGS_SMTP_HOST="127.0.0.1", TIDINGS_SMTP_PORT=str(smtp.port),
        TIDINGS_SMTP_TLS_MODE="none", TIDINGS_SMTP_FROM="Acme <notify@acme.example>",
        TIDINGS_TWILIO_ACCOUNT_SID=TWILIO_SID, TIDINGS_TWILIO_AUTH_TOKEN=TWILIO_TOKEN,
        TIDINGS_TWILIO_FROM_NUMBER="+14155550199", TIDINGS_TWILIO_BASE_URL=twilio.url,
    )
    return tidings_env


def start(env: Any, worker: Any) -> Any:
    """A worker (it creates the topics), the sample templates and the rule."""
    worker()
    published = templates_cli(env, "publish", "--tenant", "acme", "--activate",
                              *map(str, SAMPLES))
    assert "order-shipped\t1\tactive" in published.splitlines()
    settings = env.settings()
    with RulesClient(settings) as rules:
        rules.put(RULE)
    return settings


def publish_events(settings: Any, events: list[dict[str, Any]]) -> None:
    with EventPublisher(settings) as publisher:
        publisher.publish_many(events)


async def test_a_domain_event_becomes_a_localized_email_and_sms(
        env, smtp, twilio, worker, read_topic):
    settings = await asyncio.to_thread(start, env, worker)

    def setup() -> None:
        with PreferencesClient(settings) as preferences:
            preferences.change("acme", "lena", [("set_locale", "de-DE")])

    prefs = read_topic(env.topic("preferences"), "Preferences")
    await asyncio.to_thread(setup)
    # The preferences stage folded the change (it writes the state back): lena's locale is
    # known before her event arrives.
    await prefs.wait_until(lambda r: any(p["kind"] == "state" for p in r), 90)

    events = [
        shipped("evt-fr", "1001", "claire", "+14155550101", locale="fr-CA",
                timezone="America/Toronto"),
        shipped("evt-ja", "1002", "kenji", "+14155550102", locale="ja", timezone="Asia/Tokyo"),
        shipped("evt-de", "1003", "lena", "+14155550103"),  # no locale in the event
    ]

    statuses = read_topic(env.topic("status"), "DeliveryStatus")
    await asyncio.to_thread(publish_events, settings, events)
    mails = await smtp.wait_for(3, timeout=120)
    texts = await twilio.wait_for(3, timeout=60)
    mail = {m.message["To"]: m for m in mails}
    sms = {t.to: t.body for t in texts}

    # French for the fr-CA reader (the fr template, Canadian formats for money).
    french = mail["claire@example.com"].message
    assert french["Subject"] == "Votre commande 1001 a été expédiée"
    assert french["Content-Language"] == "fr"
    text, html = parts(mail["claire@example.com"])
    assert "Bonne nouvelle : votre commande **1001**" in text
    assert "1\u00a0234,00\u00a0€" in text and "mercredi 4 mars 2026" in text
    assert 'lang="fr" dir="ltr"' in html and "<strong>1001</strong>" in html
    assert sms["+14155550101"] == "Commande 1001 expédiée. Livraison prévue le 4 mars 2026."

    japanese = mail["kenji@example.com"].message
    assert japanese["Subject"] == "ご注文 1002 を発送しました"
    assert japanese["Content-Language"] == "ja"
    text, html = parts(mail["kenji@example.com"])
    assert "2026年3月4日水曜日" in text and 'lang="ja"' in html
    assert sms["+14155550102"] == "ご注文 1002 を発送しました。お届け予定：2026/03/04"

    # German from the preferences (the event named no locale).
    german = mail["lena@example.com"].message
    assert german["Subject"] == "Bestellung 1003 wurde versandt"
    assert german["Content-Language"] == "de"
    assert "Mittwoch, 4. März 2026" in parts(mail["lena@example.com"])[0]
    assert sms["+14155550103"].startswith("Bestellung 1003 versandt.")

    records = await statuses.wait_until(lambda r: len(of(r, "delivered")) == 6, 30)
    ids = {notification_id_for("acme", e["event_id"], RULE["rule_id"], e["payload"][
        "customer_id"]): e["event_id"] for e in events}
    assert {r["notification_id"] for r in of(records, "triggered")} == set(ids)
    locales = {(ids[r["notification_id"]], r["channel"]): r["details"]["locale"]
               for r in of(records, "rendered")}
    assert locales == {("evt-fr", "email"): "fr", ("evt-fr", "sms"): "fr",
                       ("evt-ja", "email"): "ja", ("evt-ja", "sms"): "ja",
                       ("evt-de", "email"): "de", ("evt-de", "sms"): "de"}
    assert all(r["details"]["rule_id"] == RULE["rule_id"] for r in of(records, "delivered"))
    assert all(r["details"]["template_id"] == "order-shipped" for r in of(records, "rendered"))


async def test_a_templated_notification_in_quiet_hours_arrives_rendered_when_they_end(
        env, smtp, twilio, worker, read_topic):
    """Quiet hours park the messages after rendering: what is sent at the window's end is
    the template's French text (it used to be parked unrendered, with no text at all)."""
    settings = await asyncio.to_thread(start, env, worker)
    prefs = read_topic(env.topic("preferences"), "Preferences")
    # A quiet window that started a minute ago and ends in 12 s (UTC wall times).
    now = datetime.datetime.now(datetime.UTC)
    quiet_end = now + datetime.timedelta(seconds=12)
    window = f"{(now - datetime.timedelta(minutes=1)):%H:%M:%S}-{quiet_end:%H:%M:%S}"

    def change() -> None:
        with PreferencesClient(settings) as preferences:
            preferences.change("acme", "marie", [("set_quiet_hours", window),
                                                 ("set_timezone", "UTC")])

    await asyncio.to_thread(change)
    await prefs.wait_until(lambda r: any(p["kind"] == "state" for p in r), 90)
    statuses = read_topic(env.topic("status"), "DeliveryStatus")
    await asyncio.to_thread(publish_events, settings, [
        shipped("evt-quiet", "2001", "marie", "+14155550104", locale="fr-FR")])
    records = await statuses.wait_until(lambda r: len(of(r, "deferred")) == 2, 60)
    assert all(r["details"]["cause"] == "quiet_hours" for r in of(records, "deferred"))
    assert not smtp.received and not twilio.messages

    (mail,) = await smtp.wait_for(1, timeout=60)
    (sms,) = await twilio.wait_for(1, timeout=30)
    assert mail.message["Subject"] == "Votre commande 2001 a été expédiée"
    assert mail.message["Content-Language"] == "fr"
    assert "Bonne nouvelle : votre commande **2001**" in parts(mail)[0]
    assert sms.body == "Commande 2001 expédiée. Livraison prévue le 4 mars 2026."
    records = await statuses.wait_until(lambda r: len(of(r, "delivered")) == 2, 30)
    assert all(r["occurred_at"] >= int(quiet_end.timestamp() * 1000) - 1000
               for r in of(records, "delivered"))
