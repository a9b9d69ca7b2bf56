"""Enrichment through the real broker: a worker process, a real webhook receiver, the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from typing import Any

import pytest

from connectors.emulators.webhook_receiver import WebhookReceiver
from streams.publisher import Publisher
from streams.template_store import TemplateStore

pytestmark = pytest.mark.integration

PHISHING = ("URGENT: your account will be suspended. Verify your password at "
            "http://192.168.4.5/login")


def request(receiver: WebhookReceiver, user: str, title: str, content: str,
            **extra: Any) -> dict[str, Any]:
    return {
        "tenant_id": "acme",
        "idempotency_key": f"k-{user}-{time.monotonic_ns()}",
        "category": "account",
        "channels": ["webhook"],
        "recipients": [{"user_id": user, "webhook_url": f"{receiver.url}/hook"}],
        "title": title,
        "content": content,
        **extra,
    }


async def publish(env: Any, requests: list[dict[str, Any]]) -> list[str]:
    def send() -> list[str]:
        with Publisher(env.settings()) as publisher:
            return publisher.publish_many(requests)

    return await asyncio.to_thread(send)


def tidings(env: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args], capture_output=True, text=True,
        env={**os.environ, **env}, timeout=120, check=False,
    )


def of(records: list[dict[str, Any]], status: str, nid: str | None = None
       ) -> list[dict[str, Any]]:
    return [r for r in records
            if r["status"] == status and (nid is None or r["notification_id"] == nid)]


CALL_TEMPLATE = {
    "template_id": "call",
    "locales": {"en": {"title": "Call from {{ data.caller }}", "text": "Note: {{ data.note }}"}},
    "shared": {"webhook.payload": {"kind": "call", "caller": "{{ data.caller }}",
                                   "note": "{{ data.note }}"}},
}


def footer(label: str, not_analysed: str) -> str:
    """The original design's footer: what enrichment found, shown by the template itself.
    A notification that was not enriched has no `detected_language`: the footer says so
    (StrictUndefined would refuse to render the name)."""
    return ("{% if detected_language is defined %}" + label + ": {{ detected_language }} · "
            "Sentiment: {{ sentiment.label }}"
            "{% if sentiment.score is not none %} ({{ sentiment.score | round(2) }}){% endif %}"
            "{% else %}" + not_analysed + "{% endif %}")


FOOTER_TEMPLATE = {
    "template_id": "note-with-footer",
    "locales": {
        "en": {"title": "{{ data.subject }}",
               "text": "{{ data.message }}\n\n-- \n" + footer("Detected language",
                                                                "Not analysed")},
        "fr": {"title": "{{ data.subject }}",
               "text": "{{ data.message }}\n\n-- \n" + footer("Langue détectée",
                                                                "Non analysé")},
    },
    "shared": {"webhook.payload": {
        "language": "{{ detected_language if detected_language is defined else 'none' }}",
        "sentiment": "{{ sentiment.label if sentiment is defined else 'none' }}"}},
}


async def publish_templates(env: Any, *templates: dict[str, Any]) -> None:
    def send() -> None:
        with TemplateStore(env.settings()) as store:
            for template in templates:
                store.publish("acme", template, activate=True)

    await asyncio.to_thread(send)


def templated_request(receiver: WebhookReceiver, user: str, template_id: str,
                      data: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {
        "tenant_id": "acme", "idempotency_key": f"k-{user}-{time.monotonic_ns()}",
        "category": "account", "channels": ["webhook"],
        "recipients": [{"user_id": user, "webhook_url": f"{receiver.url}/hook"}],
        "template": {"template_id": template_id}, "data": data, **extra,
    }


@pytest.fixture
async def receiver(tidings_env: Any):
    async with WebhookReceiver(tidings_env["TIDINGS_WEBHOOK_SECRET"]) as running:
        yield running


async def test_an_enriched_notification_shows_its_enrichment_in_its_status(
        tidings_env, worker, receiver, read_topic):
    # The tenant does not enrich; this one notification asks for it.
    worker()
    statuses = read_topic(tidings_env.topic("status"), "DeliveryStatus")
    asked, plain = await publish(tidings_env, [
        request(receiver, "u1", "Great news",
                "Hi Ada Lovelace, your refund from Acme Corp was approved. Thank you!",
                metadata={"enable_ml_analysis": "true"}),
        request(receiver, "u2", "Order shipped", "Your order has shipped"),
    ])
    await receiver.wait_for(2, timeout=60)
    records = await statuses.wait_until(lambda r: len(of(r, "delivered")) == 2, 30)
    (enriched,) = of(records, "enriched")
    assert enriched["notification_id"] == asked
    details = enriched["details"]
    print(f"\nenriched status details: {details}")
    assert details["language"] == "en"
    assert details["sentiment_label"] == "positive"
    assert float(details["sentiment_score"]) > 0
    assert float(details["spam_score"]) < 0.8
    assert details["entities"] == "org:1,person:1"
    assert details["locale_from"] == "detected_language"  # the recipient had no locale
    assert not of(records, "enriched", plain)


async def test_personal_data_is_redacted_on_a_channel_the_tenant_marks_insecure(
        tidings_env, worker, receiver):
    worker(TIDINGS_ENRICH_INSECURE_CHANNELS='{"acme": ["webhook"]}')
    await publish_templates(tidings_env, CALL_TEMPLATE)
    plain, templated = await publish(tidings_env, [
        request(receiver, "u1", "Call from Ada Lovelace",
                "Ada Lovelace (ada@example.com, +1 415 555 2671) paid with 4111 1111 1111 1111."),
        # A templated message: the personal data is in its data, rendered into the title,
        # the body and the webhook payload (its own JSON), and sent in `data` as well.
        templated_request(receiver, "u2", "call", {
            "caller": "Ada Lovelace",
            "note": "Ada Lovelace (ada@example.com, +1 415 555 2671) paid with "
                    "4111 1111 1111 1111.",
        }),
    ])
    deliveries = await receiver.wait_for(2, timeout=60)
    by_id = {d.payload["data"]["notification_id"]: d.payload["data"] for d in deliveries}
    data = by_id[plain]
    assert data["title"] == "Call from [name]"
    assert data["body"] == "[name] ([email], [phone]) paid with [card]."

    data = by_id[templated]
    assert data["title"] == "Call from [name]"
    assert data["body"] == "Note: [name] ([email], [phone]) paid with [card]."
    assert data["payload"] == {"caller": "[name]", "note": "[name] ([email], [phone]) paid "
                                                          "with [card].", "kind": "call"}
    assert data["data"] == {"caller": "[name]",
                            "note": "[name] ([email], [phone]) paid with [card]."}
    # Nothing of it is left anywhere in what the receiver got.
    sent = json.dumps(by_id[templated], ensure_ascii=False)
    for secret in ("Ada", "Lovelace", "ada@example.com", "555", "4111"):
        assert secret not in sent


async def test_an_enriched_notifications_template_shows_its_language_and_sentiment(
        tidings_env, worker, receiver, read_topic):
    worker()
    await publish_templates(tidings_env, FOOTER_TEMPLATE)
    statuses = read_topic(tidings_env.topic("status"), "DeliveryStatus")
    asked = {"enable_ml_analysis": "true"}
    english, french, plain = await publish(tidings_env, [
        templated_request(receiver, "u1", "note-with-footer", {
            "subject": "Thank you",
            "message": "Thank you so much for your order, we love having you with us!",
        }, metadata=asked),
        templated_request(receiver, "u2", "note-with-footer", {
            "subject": "Votre commande",
            "message": "Votre commande est arrivée au dépôt et sera livrée demain matin.",
        }, metadata=asked),
        templated_request(receiver, "u3", "note-with-footer", {
            "subject": "Thank you", "message": "Your order has shipped.",
        }),
    ])
    deliveries = await receiver.wait_for(3, timeout=90)
    by_id = {d.payload["data"]["notification_id"]: d.payload["data"] for d in deliveries}
    records = await statuses.wait_until(lambda r: len(of(r, "delivered")) == 3, 30)
    found = {r["notification_id"]: r["details"] for r in of(records, "enriched")}
    assert set(found) == {english, french}

    # English: VADER's label and score, as recorded in the `enriched` status.
    details = found[english]
    assert (details["language"], details["sentiment_label"]) == ("en", "positive")
    body = by_id[english]["body"]
    print(f"\nEnglish footer: {body.splitlines()[-1]!r}")
    shown = re.fullmatch(r"Detected language: en · Sentiment: positive \((0\.\d+|1\.0)\)",
                         body.split("\n-- \n")[-1])
    assert shown, body
    assert abs(float(shown[1]) - float(details["sentiment_score"])) <= 0.005
    assert by_id[english]["payload"] == {"language": "en", "sentiment": "positive"}

    # French: detected, so the recipient (who had no locale) reads the French part; VADER
    # is English-only, so the sentiment is `unsupported` and has no score.
    details = found[french]
    assert (details["language"], details["sentiment_label"]) == ("fr", "unsupported")
    body = by_id[french]["body"]
    print(f"French footer: {body.splitlines()[-1]!r}")
    assert body.endswith("-- \nLangue détectée: fr · Sentiment: unsupported")
    assert by_id[french]["locale"] == "fr"
    rendered = {r["notification_id"]: r["details"] for r in of(records, "rendered")}
    assert rendered[french]["locale"] == "fr" and rendered[english]["locale"] == "en"

    # Not enriched: no enrichment context; the template's own fallback text.
    assert by_id[plain]["body"].endswith("-- \nNot analysed")
    assert by_id[plain]["payload"] == {"language": "none", "sentiment": "none"}


async def test_phishing_is_quarantined_then_released_by_the_cli_and_delivered(
        tidings_env, worker, receiver, read_topic):
    worker(TIDINGS_ENRICH_TENANTS='["acme"]')
    statuses = read_topic(tidings_env.topic("status"), "DeliveryStatus")
    held = read_topic(tidings_env.topic("quarantine"), "NotificationRequest")
    phishing, normal = await publish(tidings_env, [
        request(receiver, "victim", "Security alert", PHISHING),
        request(receiver, "u2", "Order shipped", "Your order has shipped"),
    ])
    (delivered,) = await receiver.wait_for(1, timeout=60)
    assert delivered.payload["data"]["notification_id"] == normal
    (record,) = await held.wait_until(lambda r: len(r) == 1, 30)
    assert record["notification_id"] == phishing
    assert float(record["metadata"]["tidings.spam_score"]) > 0.8
    assert "ip_literal_link: 192.168.4.5" in record["metadata"]["tidings.spam_reasons"]
    held.close()  # release writes a tombstone, which this reader would not decode
    records = await statuses.wait_until(lambda r: of(r, "quarantined"), 30)
    (quarantined,) = of(records, "quarantined")
    assert quarantined["notification_id"] == phishing
    assert "credential_request" in quarantined["reason"]

    listed = tidings(tidings_env, "quarantine", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    (line,) = listed.stdout.splitlines()
    summary = json.loads(line)
    assert summary["notification_id"] == phishing
    assert summary["user_id"] == "victim"
    assert any(r.startswith("urgency") for r in summary["reasons"])
    await asyncio.sleep(1.0)
    assert len(receiver.delivered) == 1  # still held

    missing = tidings(tidings_env, "quarantine", "release", "ntf_unknown")
    assert missing.returncode != 0
    assert "not in the quarantine: ntf_unknown" in missing.stderr

    released = tidings(tidings_env, "quarantine", "release", phishing)
    assert released.returncode == 0, released.stderr
    assert released.stdout.strip() == "released 1"
    await receiver.wait_for(2, timeout=60)
    assert receiver.delivered[1].payload["data"]["notification_id"] == phishing
    records = await statuses.wait_until(lambda r: of(r, "delivered", phishing), 30)
    assert of(records, "released", phishing)
    # Enriched again on its way through, but not quarantined a second time.
    assert len(of(records, "quarantined", phishing)) == 1
    assert of(records, "enriched", phishing)

    after = tidings(tidings_env, "quarantine", "list")
    assert after.returncode == 0, after.stderr
    assert after.stdout == ""
