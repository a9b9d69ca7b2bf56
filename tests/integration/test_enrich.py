"""Enrichment through the real broker: a worker process, a real webhook receiver, the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from typing import Any

import pytest

from connectors.emulators.webhook_receiver import WebhookReceiver
from streams.publisher import Publisher

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
    await publish(tidings_env, [request(
        receiver, "u1", "Call from Ada Lovelace",
        "Ada Lovelace (ada@example.com, +1 415 555 2671) paid with 4111 1111 1111 1111.",
    )])
    (delivery,) = await receiver.wait_for(1, timeout=60)
    data = delivery.payload["data"]
    assert data["title"] == "Call from [name]"
    assert data["body"] == "[name] ([email], [phone]) paid with [card]."


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
