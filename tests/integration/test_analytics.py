"""The analytics stage through the real broker: statuses re-keyed by tenant, counted into
windows, and a provider going down flagged as a delivery-rate drop and a failure surge."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from connectors.emulators.webhook_receiver import WebhookReceiver
from streams.insights import read_windows, summarize
from streams.publisher import Publisher

pytestmark = pytest.mark.integration

ANALYTICS = {
    "TIDINGS_ANALYTICS_WINDOW_S": "1",
    "TIDINGS_ANALYTICS_WARMUP_WINDOWS": "3",
    "TIDINGS_ANALYTICS_MIN_COUNT": "5",
    # Every attempt reaches the failing endpoint: no breaker turning 503s into parked sends.
    "TIDINGS_BREAKER_MIN_CALLS": "100000",
}
PER_SECOND = 8


def request(receiver: WebhookReceiver, n: int) -> dict[str, Any]:
    return {
        "tenant_id": "shop", "idempotency_key": f"k-{n}-{time.monotonic_ns()}",
        "priority": "normal", "category": "orders", "channels": ["webhook"],
        "recipients": [{"user_id": f"u{n % 5}", "webhook_url": f"{receiver.url}/shop"}],
        "title": "Order update", "content": f"Order {n} moved",
    }


async def send_for(env: Any, receiver: WebhookReceiver, seconds: int, first: int) -> int:
    """PER_SECOND requests at the start of each of `seconds` seconds; the next number."""
    with Publisher(env.settings()) as publisher:
        for _ in range(seconds):
            started = time.monotonic()
            for n in range(first, first + PER_SECOND):
                publisher.send(request(receiver, n))
            publisher.flush()
            first += PER_SECOND
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
    return first


async def test_a_provider_outage_is_a_delivery_drop_and_a_failure_surge(
        tidings_env, worker, read_topic):
    async with WebhookReceiver(tidings_env["TIDINGS_WEBHOOK_SECRET"]) as receiver:
        worker(**ANALYTICS)
        anomalies = read_topic(tidings_env.topic("anomalies"), "Anomaly")
        statuses = read_topic(tidings_env.topic("status"), "DeliveryStatus")
        first = await send_for(tidings_env, receiver, 1, 0)
        await statuses.wait_until(lambda r: any(s["status"] == "delivered" for s in r), 60)
        first = await send_for(tidings_env, receiver, 6, first)  # the baseline
        assert not [a for a in anomalies.snapshot() if a["tenant_id"] == "shop"]

        receiver.always("/shop", 503)  # the tenant's endpoint goes down
        await send_for(tidings_env, receiver, 3, first)
        found = await anomalies.wait_until(
            lambda r: {"delivery_rate:webhook", "failures:webhook_503"}
            <= {a["series"] for a in r}, 60)
        drop = next(a for a in found if a["kind"] == "delivery_rate_drop")
        assert (drop["tenant_id"], drop["channel"]) == ("shop", "webhook")
        assert drop["series"] == "delivery_rate:webhook"
        assert drop["observed"] < 0.5 < drop["expected"] and drop["score"] <= -4
        surge = next(a for a in found if a["series"] == "failures:webhook_503")
        assert surge["kind"] == "failure_surge" and surge["tenant_id"] == "shop"
        assert surge["observed"] >= 5 and surge["score"] >= 4
        assert drop["window_end"] - drop["window_start"] == 1000

    # The windows the worker counted, read back from the table's changelog.
    settings = tidings_env.settings()
    windows = read_windows(settings, since_ms=0)
    shop = summarize(windows, [])["shop"]
    assert shop["sent"] == first + 3 * PER_SECOND
    assert shop["delivered"] == first  # every request before the outage
    assert any(f["cause"] == "webhook_503" for f in shop["top_failures"])
    assert all(row.startswith("shop/") for row, _start in windows)
    assert {row for row, _start in windows} == {"shop/*", "shop/webhook"}
