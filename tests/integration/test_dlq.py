"""`tidings dlq list|show|redrive` against the real broker and a real worker."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from connectors.emulators.webhook_receiver import WebhookReceiver
from streams.publisher import Publisher

from .test_replay import end_offsets, tidings

pytestmark = pytest.mark.integration

GARBAGE = b"\x00\x01 not avro at all"


def request(receiver: WebhookReceiver, tenant: str, path: str) -> dict[str, Any]:
    return {
        "tenant_id": tenant, "idempotency_key": f"{tenant}-{time.monotonic_ns()}",
        "channels": ["webhook"], "category": "orders",
        "recipients": [{"user_id": "u1", "webhook_url": f"{receiver.url}{path}"}],
        "title": "Order shipped", "content": "soon",
    }


async def listed(env: Any, *filters: str) -> list[dict[str, Any]]:
    result = await tidings(env, "dlq", "list", "--json", *filters)
    assert result.returncode == 0, result.stderr
    return [orjson.loads(line) for line in result.stdout.splitlines()]


async def test_list_show_and_redrive_an_exhausted_delivery(tidings_env, worker, read_topic):
    async with WebhookReceiver(tidings_env["TIDINGS_WEBHOOK_SECRET"]) as receiver:
        receiver.always("/down", 503)
        receiver.always("/broken", 400)
        # Two tiers: the third failed attempt exhausts the retries.
        worker(TIDINGS_RETRY_TIERS_S="[1, 2]")

        def publish() -> list[str]:
            with Publisher(tidings_env.settings()) as publisher:
                return publisher.publish_many([request(receiver, "acme", "/down"),
                                               request(receiver, "globex", "/broken")])

        down, broken = await asyncio.to_thread(publish)
        producer = Producer({"bootstrap.servers": tidings_env["TIDINGS_KAFKA_BOOTSTRAP"]})
        producer.produce(tidings_env.topic("requests"), key=b"acme/u9", value=GARBAGE)
        producer.flush(10)
        dead = read_topic(tidings_env.topic("deadletter"), "DeadLetter")
        await dead.wait_until(lambda r: len(r) == 3, 90)
        before = time.time_ns() // 1_000_000

        table = await tidings(tidings_env, "dlq", "list")
        assert table.returncode == 0, table.stderr
        assert "3 dead letter(s)" in table.stdout
        assert table.stdout.splitlines()[0].split()[:4] == ["ID", "FAILED-AT", "STAGE",
                                                            "ERROR-CLASS"]
        every = await listed(tidings_env)
        by_class = {letter["error_class"]: letter for letter in every}
        assert set(by_class) == {"RetriesExhausted", "Rejected", "SerializationError"}
        exhausted = by_class["RetriesExhausted"]
        assert (exhausted["stage"], exhausted["tenant_id"], exhausted["notification_id"],
                exhausted["attempts"]) == ("deliver", "acme", down, 3)
        assert exhausted["original_topic"] == tidings_env.topic("channel.webhook")
        assert by_class["Rejected"]["notification_id"] == broken
        garbage = by_class["SerializationError"]
        assert (garbage["stage"], garbage["tenant_id"]) == ("validate", None)

        # Filters, alone and together.
        assert {x["id"] for x in await listed(tidings_env, "--stage", "deliver")} == {
            exhausted["id"], by_class["Rejected"]["id"]}
        assert [x["id"] for x in await listed(tidings_env, "--error-class",
                                              "SerializationError")] == [garbage["id"]]
        assert [x["id"] for x in await listed(tidings_env, "--tenant", "acme")] == [
            exhausted["id"]]
        assert await listed(tidings_env, "--tenant", "globex", "--stage", "validate") == []
        assert len(await listed(tidings_env, "--since", "-10m", "--until", "now")) == 3
        assert await listed(tidings_env, "--since", f"@{before + 1}") == []
        assert await listed(tidings_env, "--until", "-1h") == []

        # show: the original decoded where it can be, the bytes where it cannot.
        shown = await tidings(tidings_env, "dlq", "show", exhausted["id"], garbage["id"])
        assert shown.returncode == 0, shown.stderr
        documents = _documents(shown.stdout)
        by_id = {d["id"]: d for d in documents}
        original = by_id[exhausted["id"]]["original"]
        assert original["schema"] == "ChannelMessage"
        assert original["record"]["notification_id"] == down
        assert original["record"]["recipient"]["webhook_url"].endswith("/down")
        assert by_id[garbage["id"]]["original"]["bytes_hex"] == GARBAGE.hex()
        missing = await tidings(tidings_env, "dlq", "show", "0:999999")
        assert missing.returncode == 1
        assert "no dead letter 0:999999" in missing.stderr

        # The receiver recovers; a dry run counts and sends nothing, then the redrive.
        receiver.always("/down", 200)
        channel_topic = tidings_env.topic("channel.webhook")
        sent_before = end_offsets(tidings_env, channel_topic)
        dry = await tidings(tidings_env, "dlq", "redrive", "--tenant", "acme", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert "would redrive 1 dead letter(s); nothing was sent" in dry.stdout
        assert end_offsets(tidings_env, channel_topic) == sent_before
        assert not receiver.delivered

        # The 400 letter as it was: its original bytes, back to the channel topic.
        receiver.always("/broken", 200)
        rejected = by_class["Rejected"]
        redriven = await tidings(tidings_env, "dlq", "redrive", "--error-class", "Rejected")
        assert redriven.returncode == 0, redriven.stderr
        assert f"redrove {rejected['id']} → {channel_topic}" in redriven.stdout
        assert "redrove 1 dead letter(s)" in redriven.stdout
        (delivery,) = await receiver.wait_for(1, timeout=60)
        assert delivery.payload["data"]["notification_id"] == broken

        # The exhausted one with its attempts reset: one more 503 is retried, not fatal.
        receiver.fail_next("/down", [503])
        reset = await tidings(tidings_env, "dlq", "redrive", exhausted["id"],
                              "--reset-attempts")
        assert reset.returncode == 0, reset.stderr
        assert "redrove 1 dead letter(s)" in reset.stdout
        await receiver.wait_for(2, timeout=60)
        (again,) = [r for r in receiver.delivered if r.path == "/down"]
        # The same delivery, under the same id: what was never delivered now is, once.
        assert again.webhook_id == original["record"]["delivery_id"]
        assert [r.status for r in receiver.received if r.path == "/down"][-2:] == [503, 200]
        statuses = read_topic(tidings_env.topic("status"), "DeliveryStatus")
        records = await statuses.wait_until(
            lambda r: len([s for s in r if s["status"] == "delivered"]) == 2, 30)
        attempts = {s["notification_id"]: s["attempt"] for s in records
                    if s["status"] == "delivered"}
        assert attempts == {broken: 1, down: 2}
        assert len(await listed(tidings_env)) == 3  # nothing new was dead-lettered


def _documents(text: str) -> list[dict[str, Any]]:
    """The indented JSON documents `dlq show` prints one after another."""
    decoder, documents, at = json.JSONDecoder(), [], 0
    while at < len(text):
        if text[at].isspace():
            at += 1
            continue
        document, at = decoder.raw_decode(text, at)
        documents.append(document)
    return documents
