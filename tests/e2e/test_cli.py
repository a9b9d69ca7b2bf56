"""`tidings` as a user runs it: topics, publish, worker and watch as real processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from connectors.emulators.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.integration

# The line the foundation issue says `tidings publish` must accept as it is.
LINE = ('{"tenant_id":"acme","idempotency_key":"order-1","priority":"normal",'
        '"category":"orders","channels":["webhook"],"recipients":[{"user_id":"u1",'
        '"webhook_url":"http://127.0.0.1:8089/hook"}],"title":"Order shipped",'
        '"content":"Your order 1 has shipped","data":{"order_id":"1"}}')


def tidings(env, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args], input=stdin, capture_output=True,
        text=True, env={**os.environ, **env}, timeout=120, check=False,
    )


async def test_publish_the_documented_line_and_watch_it_delivered(tidings_env, worker):
    async with WebhookReceiver(tidings_env["TIDINGS_WEBHOOK_SECRET"]) as receiver:
        created = tidings(tidings_env, "topics", "create")
        assert created.returncode == 0, created.stderr
        assert f"{tidings_env.topic('requests')}\t4 partitions" in created.stdout

        worker()
        line = LINE.replace("http://127.0.0.1:8089", receiver.url)
        published = tidings(tidings_env, "publish", "-", stdin=line + "\n")
        assert published.returncode == 0, published.stderr
        (notification_id,) = published.stdout.split()
        assert notification_id.startswith("ntf_")

        (delivery,) = await receiver.wait_for(1, timeout=60)
        assert delivery.payload["data"]["notification_id"] == notification_id
        assert delivery.payload["data"]["data"] == {"order_id": "1"}

        watched = tidings(tidings_env, "watch", "--from-beginning", "--count", "1",
                          "--timeout", "30")
        assert "DELIVERED" in watched.stdout
        assert notification_id in watched.stdout


async def test_publish_refuses_a_bad_line_and_sends_nothing(tidings_env, create_topics,
                                                             read_topic):
    create_topics()
    requests = read_topic(tidings_env.topic("requests"), "NotificationRequest")
    good = LINE
    bad = LINE.replace('"channels":["webhook"]', '"channels":["fax"]')
    result = tidings(tidings_env, "publish", "-", stdin=f"{good}\n{bad}\n")
    assert result.returncode != 0
    assert "request 2" in result.stderr
    assert "unknown channels ['fax']" in result.stderr
    assert result.stdout == ""

    not_json = tidings(tidings_env, "publish", "-", stdin="{oops\n")
    assert not_json.returncode != 0
    assert "line 1: not JSON" in not_json.stderr

    published = tidings(tidings_env, "publish", "-", stdin=f"{good}\n")
    assert published.returncode == 0, published.stderr
    (record,) = await requests.wait_until(lambda r: len(r) >= 1, 30)
    await asyncio.sleep(1.0)
    assert len(requests.snapshot()) == 1  # only the good publish reached the topic
    assert record["notification_id"] == published.stdout.strip()


def test_bad_settings_are_one_clear_error(tidings_env):
    result = tidings({**tidings_env, "TIDINGS_WEBHOOK_SECRET": "hunter2"}, "topics", "list")
    assert result.returncode != 0
    assert "TIDINGS_WEBHOOK_SECRET" in result.stderr
    assert "hunter2" not in result.stderr
    assert "Traceback" not in result.stderr
