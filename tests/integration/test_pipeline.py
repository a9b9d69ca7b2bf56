"""The whole pipeline through the real broker: a worker process, a real HTTP receiver."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Producer

from agents.route import delivery_id
from connectors.emulators.webhook_receiver import WebhookReceiver
from streams.publisher import Publisher
from streams.serde import serde

pytestmark = pytest.mark.integration

SECRET_ENV = "TIDINGS_WEBHOOK_SECRET"
# For a worker the test kills: the group hands its partitions on after 10 s, not 60.
QUICKLY_REPLACED = {"TIDINGS_SESSION_TIMEOUT_S": "10"}


@pytest.fixture
async def receiver(tidings_env: Any) -> Iterator[WebhookReceiver]:
    async with WebhookReceiver(tidings_env[SECRET_ENV]) as running:
        yield running


def request(receiver: WebhookReceiver, user: str, *, path: str = "/hook", key: str | None = None,
            **extra: Any) -> dict[str, Any]:
    return {
        "tenant_id": "acme",
        "idempotency_key": key or f"order-{user}-{time.monotonic_ns()}",
        "priority": "normal",
        "category": "orders",
        "channels": ["webhook"],
        "recipients": [{"user_id": user, "webhook_url": f"{receiver.url}{path}"}],
        "title": "Order shipped",
        "content": f"Your order for {user} has shipped",
        "data": {"order_id": user},
        **extra,
    }


async def publish(env: Any, requests: list[dict[str, Any]]) -> list[str]:
    def send() -> list[str]:
        with Publisher(env.settings()) as publisher:
            return publisher.publish_many(requests)

    return await asyncio.to_thread(send)


def statuses_of(records: list[dict[str, Any]], status: str) -> list[dict[str, Any]]:
    return [r for r in records if r["status"] == status]


async def test_thousand_notifications_arrive_exactly_once_signed(tidings_env, worker, receiver,
                                                                 read_topic):
    count = 1000
    worker()
    requests = [request(receiver, f"user-{i}") for i in range(count)]
    started = time.monotonic()
    ids = await publish(tidings_env, requests)
    await receiver.wait_for(count, timeout=120)
    elapsed = time.monotonic() - started
    arrivals = sorted(r.received_at for r in receiver.delivered)
    flowing = arrivals[-1] - arrivals[0]
    print(f"\n{count} notifications: published to all delivered in {elapsed:.2f}s "
          f"(worker start-up included); first to last delivery {flowing:.2f}s "
          f"({count / max(flowing, 1e-9):.0f}/s)")

    await asyncio.sleep(1.0)  # a late duplicate would arrive now
    expected = {delivery_id("acme", nid, "webhook", f"user-{i}") for i, nid in enumerate(ids)}
    counts = receiver.by_id()
    assert set(counts) == expected
    assert all(n == 1 for n in counts.values()), counts.most_common(3)
    assert all(r.verified for r in receiver.received)
    payload = receiver.delivered[0].payload
    assert payload["type"] == "notification.orders"
    assert payload["data"]["title"] == "Order shipped"

    statuses = read_topic(tidings_env.topic("status"), "DeliveryStatus")
    records = await statuses.wait_until(lambda r: len(statuses_of(r, "delivered")) == count, 30)
    assert {r["notification_id"] for r in statuses_of(records, "accepted")} == set(ids)


async def test_same_idempotency_key_twice_is_one_delivery(tidings_env, worker, receiver,
                                                          read_topic):
    worker()
    first, second = await publish(
        tidings_env, [request(receiver, "u1", key="order-1") for _ in range(2)]
    )
    statuses = read_topic(tidings_env.topic("status"), "DeliveryStatus")
    records = await statuses.wait_until(
        lambda r: statuses_of(r, "duplicate") and statuses_of(r, "delivered"), 60
    )
    await asyncio.sleep(1.0)
    assert len(receiver.delivered) == 1
    assert receiver.delivered[0].payload["data"]["notification_id"] == first
    (duplicate,) = statuses_of(records, "duplicate")
    assert duplicate["notification_id"] == second
    assert first in duplicate["reason"]


async def test_user_over_the_limit_is_dropped_per_policy(tidings_env, worker, receiver,
                                                         read_topic):
    # 60/min with a burst of 2: two go at once, the other three exceed the limit.
    worker(TIDINGS_RATE_USER_PER_MIN="60", TIDINGS_RATE_BURST="2",
           TIDINGS_RATE_LIMIT_POLICY="drop")
    await publish(tidings_env, [request(receiver, "busy-user") for _ in range(5)])
    statuses = read_topic(tidings_env.topic("status"), "DeliveryStatus")
    records = await statuses.wait_until(
        lambda r: len(statuses_of(r, "delivered")) + len(statuses_of(r, "rate_limited")) == 5, 60
    )
    assert len(statuses_of(records, "delivered")) == 2
    limited = statuses_of(records, "rate_limited")
    assert len(limited) == 3
    assert all("over the limit" in r["reason"] for r in limited)
    await asyncio.sleep(1.0)
    assert len(receiver.delivered) == 2


async def test_user_over_the_limit_is_deferred_per_policy(tidings_env, worker, receiver,
                                                          read_topic):
    # 60/min, burst 1: one now, then one per second, each waiting in a retry tier.
    worker(TIDINGS_RATE_USER_PER_MIN="60", TIDINGS_RATE_BURST="1",
           TIDINGS_RATE_LIMIT_POLICY="defer")
    await publish(tidings_env, [request(receiver, "patient-user") for _ in range(3)])
    delivered = await receiver.wait_for(3, timeout=60)
    times = sorted(r.received_at for r in delivered)
    # The limit spaces them out by at least one emission interval (1 s), minus clock slack.
    assert times[2] - times[0] >= 1.8
    statuses = read_topic(tidings_env.topic("status"), "DeliveryStatus")
    records = await statuses.wait_until(lambda r: len(statuses_of(r, "delivered")) == 3, 30)
    assert len(statuses_of(records, "deferred")) == 2


async def test_503_twice_then_200_is_delivered_on_the_third_attempt(tidings_env, worker,
                                                                    receiver, read_topic):
    receiver.fail_next("/flaky", [503, 503])
    worker()
    (flaky,) = await publish(tidings_env, [request(receiver, "flaky-user", path="/flaky")])
    others = await publish(tidings_env, [request(receiver, f"steady-{i}") for i in range(20)])

    await receiver.wait_for(21, timeout=60)
    flaky_deliveries = [r for r in receiver.received if r.path == "/flaky"]
    assert [r.status for r in flaky_deliveries] == [503, 503, 200]
    # The other notifications did not wait for the flaky one's retries.
    steady_done = max(r.received_at for r in receiver.delivered if r.path == "/hook")
    assert steady_done < flaky_deliveries[-1].received_at
    assert len({r.webhook_id for r in flaky_deliveries}) == 1  # one delivery id throughout

    statuses = read_topic(tidings_env.topic("status"), "DeliveryStatus")
    records = await statuses.wait_until(lambda r: len(statuses_of(r, "delivered")) == 21, 30)
    flaky_statuses = [r for r in records if r["notification_id"] == flaky]
    assert [r["status"] for r in flaky_statuses if r["status"] != "accepted"] == [
        "retrying", "retrying", "delivered"
    ]
    assert [r["attempt"] for r in flaky_statuses if r["status"] == "delivered"] == [3]
    assert len(others) == 20


async def test_400_is_a_dead_letter_with_the_reason(tidings_env, worker, receiver, read_topic):
    receiver.always("/broken", 400)
    worker()
    (nid,) = await publish(tidings_env, [request(receiver, "u-broken", path="/broken")])
    dead = read_topic(tidings_env.topic("deadletter"), "DeadLetter")
    (letter,) = await dead.wait_until(lambda r: len(r) == 1, 60)
    assert letter["stage"] == "deliver"
    assert letter["error_class"] == "Rejected"
    assert "400" in letter["message"]
    assert letter["notification_id"] == nid
    assert letter["attempts"] == 1
    original = serde("ChannelMessage").decode(letter["original_bytes"])
    assert original["notification_id"] == nid
    assert letter["original_topic"] == tidings_env.topic("channel.webhook")


async def test_410_disables_the_endpoint_into_a_dead_letter(tidings_env, worker, receiver,
                                                            read_topic):
    receiver.always("/gone", 410)
    worker()
    await publish(tidings_env, [request(receiver, "u-gone", path="/gone")])
    dead = read_topic(tidings_env.topic("deadletter"), "DeadLetter")
    (letter,) = await dead.wait_until(lambda r: len(r) == 1, 60)
    assert letter["error_class"] == "AddressInvalid"
    statuses = read_topic(tidings_env.topic("status"), "DeliveryStatus")
    await statuses.wait_until(lambda r: statuses_of(r, "endpoint_disabled"), 30)


async def test_garbage_and_invalid_records_become_dead_letters(tidings_env, worker, receiver,
                                                               read_topic):
    worker()
    garbage = b"\x00\x01 definitely not avro"
    invalid = request(receiver, "u-invalid")
    invalid.update(notification_id="ntf-invalid", created_at=1, channels=["carrier-pigeon"])
    invalid["recipients"][0].update(email=None, phone=None, push_tokens=[], slack=None,
                                    locale=None, timezone=None, metadata={})
    invalid.setdefault("template", None)
    invalid.setdefault("send_at", None)
    invalid.setdefault("metadata", {})
    schema_violating = serde("NotificationRequest").encode(invalid)

    producer = Producer({"bootstrap.servers": tidings_env["TIDINGS_KAFKA_BOOTSTRAP"]})
    for value in (garbage, schema_violating):
        producer.produce(tidings_env.topic("requests"), key=b"acme/u-invalid", value=value)
    producer.flush(10)
    after = await publish(tidings_env, [request(receiver, f"after-{i}") for i in range(5)])

    await receiver.wait_for(5, timeout=60)
    dead = read_topic(tidings_env.topic("deadletter"), "DeadLetter")
    letters = await dead.wait_until(lambda r: len(r) == 2, 30)
    by_bytes = {bytes(letter["original_bytes"]): letter for letter in letters}
    assert by_bytes[garbage]["error_class"] == "SerializationError"
    assert by_bytes[garbage]["stage"] == "validate"
    assert by_bytes[schema_violating]["error_class"] == "ValidationError"
    assert "carrier-pigeon" in by_bytes[schema_violating]["message"]
    assert {r.payload["data"]["notification_id"] for r in receiver.delivered} == set(after)


async def test_sigkill_mid_stream_loses_nothing_and_sends_nothing_twice(tidings_env, worker,
                                                                         receiver):
    """SIGKILL the worker mid-stream, restart it: every notification arrives, none twice.

    The one send that cannot be made exactly-once is a request the endpoint answered but
    whose answer the killed worker never read: it is sent again, with the same `webhook-id`,
    which is what Standard Webhooks receivers de-duplicate on. So a repeat is allowed only
    for a delivery that was in flight when the worker died; a repeat of anything delivered
    earlier would mean the ledger lost an entry.
    """
    count = 2000
    first = worker(TIDINGS_COMMIT_INTERVAL_S="1.0", **QUICKLY_REPLACED)
    ids = await publish(tidings_env, [request(receiver, f"k-{i}") for i in range(count)])
    await receiver.wait_for(count // 4, timeout=120)
    first.kill()
    killed_at = time.time()
    delivered_before_kill = len(receiver.delivered)
    assert delivered_before_kill < count, "the batch finished before the kill; raise the count"
    worker(TIDINGS_COMMIT_INTERVAL_S="1.0")
    await receiver.wait_for_distinct(count, timeout=180)
    await asyncio.sleep(2.0)  # a repeat still coming would show up

    counts: collections.Counter[str] = receiver.by_id()
    expected = {delivery_id("acme", nid, "webhook", f"k-{i}") for i, nid in enumerate(ids)}
    assert set(counts) == expected  # nothing lost, nothing unexpected
    repeated = {did for did, n in counts.items() if n > 1}
    first_seen = {}
    for received in receiver.delivered:
        first_seen.setdefault(received.webhook_id, received.received_at)
    in_flight = {did for did in repeated if killed_at - first_seen[did] < 0.5}
    print(f"\nkilled after {delivered_before_kill}/{count} deliveries; "
          f"repeated (in flight at the kill): {len(repeated)}")
    assert repeated == in_flight
    assert all(counts[did] == 2 for did in repeated)
    assert len(repeated) <= int(tidings_env.get("TIDINGS_DELIVERY_CONCURRENCY", "64"))


async def test_a_worker_killed_before_its_first_commit_loses_nothing(tidings_env, worker,
                                                                    receiver):
    """The group has no committed offsets when the worker dies, so the restarted one starts
    every partition from its first record, and all of them arrive. (Records fetched while
    Faust resumed the partitions were dropped, and nothing fetched them again:
    streams/transport.py, `perform_seek`.)"""
    count = 2000
    first = worker(TIDINGS_COMMIT_INTERVAL_S="600", **QUICKLY_REPLACED)
    ids = await publish(tidings_env, [request(receiver, f"b-{i}") for i in range(count)])
    await receiver.wait_for(count // 4, timeout=120)
    first.kill()
    worker()
    await receiver.wait_for_distinct(count, timeout=180)

    expected = {delivery_id("acme", nid, "webhook", f"b-{i}") for i, nid in enumerate(ids)}
    assert set(receiver.by_id()) == expected


async def test_a_send_still_in_flight_is_never_committed_past(tidings_env, worker, receiver):
    """A webhook send waits for its answer while the later messages of its partition are
    delivered and committed around it. The worker never commits past it, so when the worker
    is killed before the answer comes, the restarted one sends it again; and the ledger keeps
    the others from being sent twice."""
    receiver.hold("/slow")
    first = worker(TIDINGS_WEBHOOK_TIMEOUT_S="300", **QUICKLY_REPLACED)
    # One user: one partition of every topic, the slow message first in it.
    slow_id, *fast_ids = await publish(
        tidings_env, [request(receiver, "one-user", path="/slow")]
        + [request(receiver, "one-user") for _ in range(20)],
    )
    await receiver.wait_for(20, timeout=120)
    await receiver.wait_holding("/slow", 1, timeout=30)
    await asyncio.sleep(4.0)  # four commit intervals with the slow send in flight
    first.kill()
    await asyncio.sleep(0.5)  # the receiver sees the connection close before it answers
    receiver.release("/slow")
    worker()
    await receiver.wait_for(21, timeout=120)
    await asyncio.sleep(1.0)  # a repeat would arrive now

    counts = receiver.by_id()
    slow = delivery_id("acme", slow_id, "webhook", "one-user")
    assert set(counts) == {slow} | {delivery_id("acme", nid, "webhook", "one-user")
                                    for nid in fast_ids}
    assert all(n == 1 for n in counts.values()), counts.most_common(3)
    (abandoned,) = [r for r in receiver.received if not r.accepted]
    assert (abandoned.webhook_id, abandoned.status) == (slow, 499)


async def test_breaker_opens_on_an_outage_and_recovers(tidings_env, worker, receiver,
                                                      read_topic):
    """Five 503s open the endpoint's breaker: later messages wait in the retry tiers without
    calling the endpoint, and all are delivered once it answers again."""
    receiver.always("/down", 503)
    worker(TIDINGS_BREAKER_MIN_CALLS="3", TIDINGS_BREAKER_COOLDOWN_S="2",
           TIDINGS_RETRY_TIERS_S="[1, 2, 4, 8, 16]")
    ids = await publish(tidings_env, [request(receiver, f"d-{i}", path="/down")
                                      for i in range(8)])
    statuses = read_topic(tidings_env.topic("status"), "DeliveryStatus")
    await statuses.wait_until(
        lambda r: [s for s in r if "circuit open" in (s["reason"] or "")], 60
    )
    opened_at_calls = len(receiver.received)
    await asyncio.sleep(3.0)
    # Open for 2 s, then 3 trial calls, then open again: far fewer calls than 8 messages
    # retrying every 1-2 s would make.
    assert len(receiver.received) - opened_at_calls <= 8

    receiver.always("/down", 200)
    await receiver.wait_for(8, timeout=90)
    assert {r.payload["data"]["notification_id"] for r in receiver.delivered} == set(ids)
    assert all(n == 1 for n in receiver.by_id().values())


async def test_copies_of_one_delivery_in_flight_at_once_send_it_once(tidings_env, worker,
                                                                     receiver, read_topic):
    """The deliver stage runs many attempts at once; copies of one delivery (a replay or a
    redrive racing the original) must still reach the receiver once."""
    from agents.route import channel_messages
    from streams.requests import normalize_request

    copies = 20
    (message,) = channel_messages(normalize_request(request(receiver, "racer")))
    value = serde("ChannelMessage").encode(message)
    statuses = read_topic(tidings_env.topic("status"), "DeliveryStatus")
    worker()
    producer = Producer({"bootstrap.servers": tidings_env["TIDINGS_KAFKA_BOOTSTRAP"],
                         "linger.ms": 50})
    for _ in range(copies):  # one batch: the worker fetches them together
        producer.produce(tidings_env.topic("channel.webhook"), key=b"acme/racer", value=value)
    producer.flush(10)

    records = await statuses.wait_until(
        lambda r: len(statuses_of(r, "delivered")) + len(statuses_of(r, "duplicate")) >= copies,
        60,
    )
    assert len(statuses_of(records, "delivered")) == 1
    assert len(statuses_of(records, "duplicate")) == copies - 1
    assert receiver.by_id() == {message["delivery_id"]: 1}
