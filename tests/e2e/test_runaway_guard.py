"""The runaway guard and the analytics stage end to end: a worker process, the real broker,
the webhook receiver emulator and `tidings hold` / `tidings insights` as a user runs them.

One tenant floods a single user (a trigger bug); the guard holds its new requests on the
hold topic (status `held`, a `runaway_hold` anomaly) while another tenant's notifications
keep flowing; releasing (by the CLI, or automatically once the rate is back to normal)
delivers every held one exactly once.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from typing import Any

import orjson
import pytest

from connectors.emulators.webhook_receiver import WebhookReceiver
from streams.publisher import Publisher

pytestmark = pytest.mark.integration

FLOOD = 60
CALM = 10
# Deterministic thresholds: 1 s windows, a baseline after 3 windows, and an absolute bound of
# 10/s over 4 partitions (3 per window per partition). The flood's baseline is one request,
# so the guard trips at its 7th request in a window (mean + 6σ with σ ≥ 1).
GUARD = {
    "TIDINGS_GUARD_ENABLED": "true",
    "TIDINGS_GUARD_WINDOW_S": "1",
    "TIDINGS_GUARD_WARMUP_WINDOWS": "3",
    "TIDINGS_GUARD_Z": "6",
    "TIDINGS_GUARD_MIN_RATE_PER_S": "10",
    "TIDINGS_ANALYTICS_WINDOW_S": "1",
    "TIDINGS_ANALYTICS_WARMUP_WINDOWS": "3",
    "TIDINGS_ANALYTICS_MIN_COUNT": "5",
}


def tidings(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args], capture_output=True, text=True,
        env={**os.environ, **env}, timeout=120, check=False,
    )


def request(receiver: WebhookReceiver, tenant: str, user: str, n: int) -> dict[str, Any]:
    return {
        "tenant_id": tenant, "idempotency_key": f"{tenant}-{user}-{n}-{time.monotonic_ns()}",
        "priority": "normal", "category": "alerts", "channels": ["webhook"],
        "recipients": [{"user_id": user, "webhook_url": f"{receiver.url}/{tenant}"}],
        "title": f"Alert {n}", "content": f"Alert {n} for {user}",
    }


async def publish(env: Any, requests: list[dict[str, Any]]) -> list[str]:
    def send() -> list[str]:
        with Publisher(env.settings()) as publisher:
            return publisher.publish_many(requests)

    return await asyncio.to_thread(send)


def of(records: list[dict[str, Any]], status: str, tenant: str) -> list[dict[str, Any]]:
    return [r for r in records if r["status"] == status and r["tenant_id"] == tenant]


def delivered_ids(receiver: WebhookReceiver, tenant: str) -> list[str]:
    return [r.payload["data"]["notification_id"] for r in receiver.delivered
            if r.path == f"/{tenant}"]


async def flood_while_another_tenant_flows(env, receiver, read_topic) -> tuple[list[str], Any]:
    """Warm the guard up with one request, flood, and check that the flood is held while the
    calm tenant's notifications are delivered. Returns the flood's ids and the status reader."""
    statuses = read_topic(env.topic("status"), "DeliveryStatus")
    (warm,) = await publish(env, [request(receiver, "flood-co", "u-flood", 0)])
    await statuses.wait_until(lambda r: of(r, "delivered", "flood-co"), 60)
    await asyncio.sleep(3.5)  # three empty windows: the guard's baseline is ready

    flood = await publish(env, [request(receiver, "flood-co", "u-flood", n)
                                for n in range(1, FLOOD + 1)])
    calm = await publish(env, [request(receiver, "calm-co", f"u{n}", n) for n in range(CALM)])

    records = await statuses.wait_until(
        lambda r: len(of(r, "held", "flood-co")) + len(of(r, "accepted", "flood-co")) == FLOOD + 1
        and len(of(r, "delivered", "calm-co")) == CALM, 90)
    held = of(records, "held", "flood-co")
    print(f"\n{len(held)} of {FLOOD} flood requests held; "
          f"{len(of(records, 'accepted', 'flood-co')) - 1} went through before the guard tripped")
    # The bound is ~7 a window; the flood lands in at most two windows.
    assert len(held) >= FLOOD - 20
    assert {r["notification_id"] for r in held} <= set(flood)
    assert all("runaway guard" in r["reason"] for r in held)
    # The other tenant flows meanwhile.
    await receiver.wait_for(FLOOD + 1 - len(held) + CALM, timeout=60)
    assert sorted(delivered_ids(receiver, "calm-co")) == sorted(calm)
    assert warm in delivered_ids(receiver, "flood-co")
    assert not {r["notification_id"] for r in held} & set(delivered_ids(receiver, "flood-co"))

    held_records = read_topic(env.topic("hold"), "NotificationRequest")
    on_hold = await held_records.wait_until(lambda r: len(r) == len(held), 30)
    assert {r["notification_id"] for r in on_hold} == {r["notification_id"] for r in held}

    anomalies = read_topic(env.topic("anomalies"), "Anomaly")
    found = await anomalies.wait_until(
        lambda r: [a for a in r if a["kind"] == "runaway_hold"], 30)
    trip = next(a for a in found if a["kind"] == "runaway_hold")
    assert trip["tenant_id"] == "flood-co" and trip["action"] == "hold"
    assert trip["observed"] > trip["expected"] and trip["score"] >= 6
    assert not [a for a in found if a["tenant_id"] == "calm-co"]
    return flood, statuses, anomalies


async def test_a_flood_is_held_and_the_cli_releases_it(tidings_env, worker, read_topic):
    env = tidings_env
    async with WebhookReceiver(env["TIDINGS_WEBHOOK_SECRET"]) as receiver:
        # No automatic release: only the operator's.
        worker(**GUARD, TIDINGS_GUARD_CLEAR_WINDOWS="0")
        cli_env = {**env, **GUARD}
        flood, statuses, anomalies = await flood_while_another_tenant_flows(
            env, receiver, read_topic)
        held_ids = {r["notification_id"] for r in of(statuses.snapshot(), "held", "flood-co")}

        listed = tidings(cli_env, "hold", "list", "--tenant", "flood-co", "--json")
        assert listed.returncode == 0, listed.stderr
        rows = [orjson.loads(line) for line in listed.stdout.splitlines()]
        assert {row["notification_id"] for row in rows} == held_ids
        assert tidings(cli_env, "hold", "list", "--tenant", "calm-co").stdout == ""

        released = tidings(cli_env, "hold", "release", "--tenant", "flood-co")
        assert released.returncode == 0, released.stderr
        assert f"released {len(held_ids)} held request(s) of flood-co" in released.stdout

        await receiver.wait_for(FLOOD + 1 + CALM, timeout=90)
        await asyncio.sleep(1.0)  # a second delivery would arrive now
        counts = receiver.by_id()
        assert all(n == 1 for n in counts.values()), counts.most_common(3)
        assert set(flood) <= set(delivered_ids(receiver, "flood-co"))
        assert tidings(cli_env, "hold", "list", "--tenant", "flood-co", "--json").stdout == ""

        found = await anomalies.wait_until(
            lambda r: [a for a in r if a["kind"] == "runaway_release"], 30)
        release = next(a for a in found if a["kind"] == "runaway_release")
        assert release["details"]["released_by"] == "operator"

        # Insights, from the windowed table's changelog and the anomalies topic.
        def report() -> dict[str, Any]:
            out = tidings(cli_env, "insights", "--since", "10m", "--json")
            assert out.returncode == 0, out.stderr
            return orjson.loads(out.stdout)

        deadline = time.monotonic() + 60
        while True:
            summary = report()
            flood_co, calm_co = summary.get("flood-co", {}), summary.get("calm-co", {})
            if flood_co.get("delivered") == FLOOD + 1 and calm_co.get("delivered") == CALM:
                break
            assert time.monotonic() < deadline, summary
            await asyncio.sleep(1.0)
        assert flood_co["sent"] == FLOOD + 1  # accepted: before the trip, and once released
        assert flood_co["held"] == len(held_ids)
        assert flood_co["delivery_rate"] == 1.0
        assert flood_co["channels"]["webhook"]["latency_ms"]["p50"] is not None
        assert {a["kind"] for a in flood_co["anomalies"]} >= {"runaway_hold",
                                                                "runaway_release"}
        assert calm_co["sent"] == CALM and calm_co["held"] == 0
        text = tidings(cli_env, "insights", "--tenant", "calm-co", "--since", "10m").stdout
        assert text.startswith(f"calm-co: sent {CALM}, held 0, delivered {CALM}")
        assert "flood-co" not in text


async def test_held_requests_are_released_when_the_rate_is_normal_again(
        tidings_env, worker, read_topic):
    env = tidings_env
    async with WebhookReceiver(env["TIDINGS_WEBHOOK_SECRET"]) as receiver:
        worker(**GUARD, TIDINGS_GUARD_CLEAR_WINDOWS="2")
        flood, statuses, anomalies = await flood_while_another_tenant_flows(
            env, receiver, read_topic)
        # The flood stopped: two calm windows later the guard releases what it held.
        await receiver.wait_for(FLOOD + 1 + CALM, timeout=90)
        await asyncio.sleep(1.0)
        counts = receiver.by_id()
        assert all(n == 1 for n in counts.values()), counts.most_common(3)
        assert set(flood) <= set(delivered_ids(receiver, "flood-co"))
        found = await anomalies.wait_until(
            lambda r: [a for a in r if a["kind"] == "runaway_release"], 30)
        release = next(a for a in found if a["kind"] == "runaway_release")
        assert release["details"]["released_by"] == "auto" and release["action"] == "release"
        assert tidings({**env, **GUARD}, "hold", "list", "--json").stdout == ""
