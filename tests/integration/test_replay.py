"""`tidings replay` against the real broker and a real worker: what was delivered is not
delivered again, unless --resend, which sends it under new delivery ids."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from agents.route import delivery_id
from connectors.emulators.webhook_receiver import WebhookReceiver
from streams.publisher import Publisher
from streams.replay import redelivery_id

pytestmark = pytest.mark.integration


async def tidings(env: Any, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a thread, so the receiver on this event loop keeps answering."""
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "streams.cli", *args], capture_output=True,
        text=True, env={**os.environ, **env}, timeout=120, check=False,
    )


def request(receiver: WebhookReceiver, tenant: str, user: str) -> dict[str, Any]:
    return {
        "tenant_id": tenant, "idempotency_key": f"{tenant}-{user}-{time.monotonic_ns()}",
        "channels": ["webhook"], "category": "orders",
        "recipients": [{"user_id": user, "webhook_url": f"{receiver.url}/hook"}],
        "title": "Order shipped", "content": f"for {user}",
    }


def end_offsets(env: Any, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": env["TIDINGS_KAFKA_BOOTSTRAP"],
                         "group.id": "unused"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                   for p in partitions)
    finally:
        consumer.close()


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")


def replay_id(output: str) -> str:
    match = re.search(r"replay (rpl_[0-9a-f]+) of", output)
    assert match, output
    return match.group(1)


def deliver_duplicates(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r["status"] == "duplicate" and r["delivery_id"]]


async def test_replay_does_not_redeliver_and_resend_does_with_new_ids(tidings_env, worker,
                                                                      read_topic):
    async with WebhookReceiver(tidings_env["TIDINGS_WEBHOOK_SECRET"]) as receiver:
        worker()
        started = time.time_ns() // 1_000_000 - 1000
        requests = [request(receiver, "acme", f"a{i}") for i in range(3)]
        requests += [request(receiver, "globex", f"g{i}") for i in range(2)]

        def publish() -> list[str]:
            with Publisher(tidings_env.settings()) as publisher:
                return publisher.publish_many(requests)

        ids = await asyncio.to_thread(publish)
        published = time.time_ns() // 1_000_000 + 1  # every original is stamped before this
        await receiver.wait_for(5, timeout=90)
        first_ids = set(receiver.by_id())
        users = [r["recipients"][0]["user_id"] for r in requests]
        tenants = [r["tenant_id"] for r in requests]
        assert first_ids == {delivery_id(t, n, "webhook", u)
                             for t, n, u in zip(tenants, ids, users, strict=True)}
        statuses = read_topic(tidings_env.topic("status"), "DeliveryStatus")
        requests_topic = tidings_env.topic("requests")
        # The originals only: later replays land after `published`.
        window = ("--from", iso(started), "--to", f"@{published}")

        # A dry run reads and counts, and sends nothing.
        dry = await tidings(tidings_env, "replay", "--topic", "requests", *window, "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert "dry run: 5 record(s) would be sent; nothing was sent" in dry.stdout
        assert dry.stdout.count("  send ") == 5
        assert end_offsets(tidings_env, requests_topic) == 5

        # A replay of the requests: every delivery meets the ledger, nothing is sent.
        plain = await tidings(tidings_env, "replay", "--topic", "requests", *window,
                              "--rate", "50")
        assert plain.returncode == 0, plain.stderr
        assert f"sent 5 record(s) to {requests_topic}" in plain.stdout
        assert "not sent again" in plain.stdout
        assert end_offsets(tidings_env, requests_topic) == 10
        records = await statuses.wait_until(lambda r: len(deliver_duplicates(r)) == 5, 60)
        assert {r["delivery_id"] for r in deliver_duplicates(records)} == first_ids
        assert all(r["reason"] == "already delivered" for r in deliver_duplicates(records))
        # Intake accepted each replayed request again (same notification id: not a duplicate).
        accepted = [r["notification_id"] for r in records if r["status"] == "accepted"]
        assert sorted(accepted) == sorted(ids * 2)

        # The channel topic, replayed by offsets: back to the partition whose ledger knows
        # each delivery id, so again nothing is sent.
        channel = await tidings(tidings_env, "replay", "--topic", "channel.webhook",
                                "--from", "earliest", "--to", "latest")
        assert channel.returncode == 0, channel.stderr
        # The topic holds each delivery twice (the original and the plain replay's): each
        # goes once.
        assert "sent 5 record(s)" in channel.stdout
        assert "skipped: 5 repeat in range" in channel.stdout
        await statuses.wait_until(lambda r: len(deliver_duplicates(r)) == 10, 60)
        assert len(receiver.delivered) == 5

        # --resend, for one tenant: new delivery ids, delivered again.
        resend = await tidings(tidings_env, "replay", "--topic", "requests", *window,
                               "--tenant", "acme", "--resend")
        assert resend.returncode == 0, resend.stderr
        assert "gets a NEW delivery id" in resend.stdout
        assert "sent 3 record(s)" in resend.stdout
        assert "skipped: 2 other tenant" in resend.stdout
        generation = replay_id(resend.stdout)
        await receiver.wait_for(8, timeout=90)
        records = await statuses.wait_until(
            lambda r: len([s for s in r if s["status"] == "delivered"]) == 8, 60)
        counts = receiver.by_id()
        new_ids = set(counts) - first_ids
        acme_first = {delivery_id("acme", n, "webhook", u)
                      for t, n, u in zip(tenants, ids, users, strict=True) if t == "acme"}
        assert new_ids == {redelivery_id(d, generation) for d in acme_first}
        assert all(n == 1 for n in counts.values()), counts
        resent = [r for r in receiver.delivered if r.webhook_id in new_ids]
        assert {r.payload["data"]["notification_id"] for r in resent} == set(ids[:3])
        assert len(deliver_duplicates(records)) == 10


async def test_replay_of_an_unknown_topic_is_a_clear_error(tidings_env, create_topics):
    create_topics()
    result = await tidings(tidings_env, "replay", "--topic", "channel.sms", "--from", "0",
                           "--to", "10")
    assert result.returncode == 1
    assert f"unknown topic '{tidings_env.topic('channel.sms')}'" in result.stderr
    assert "Traceback" not in result.stderr
