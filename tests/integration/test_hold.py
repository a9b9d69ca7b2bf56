"""Held requests on the real broker: list them per tenant, release one tenant's to the
partitions they came from, and remember what was released."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from streams import hold

pytestmark = pytest.mark.integration


def put_on_hold(settings, records: list[tuple[str, int, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    for key, partition, value in records:
        producer.produce(settings.topic("hold"), key=key.encode(), value=value,
                         partition=partition)
    producer.flush(30)


def read_requests(settings, expected: int) -> list:
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "t",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    consumer.assign([TopicPartition(settings.topic("requests"), p, 0)
                     for p in range(settings.partitions)])
    found: list = []
    for _ in range(50):
        found += [m for m in consumer.consume(100, timeout=0.2) if not m.error()]
        if len(found) >= expected:
            break
    consumer.close()
    return found


def test_release_one_tenant_and_remember_it(tidings_env, create_topics) -> None:
    create_topics()
    settings = tidings_env.settings()
    put_on_hold(settings, [("acme/u1", 2, b"a1"), ("beta/u9", 2, b"b1"), ("acme/u2", 3, b"a2"),
                           ("acme/u1", 2, b"a3")])

    assert [(h.tenant_id, h.partition, h.value) for h in hold.held(settings, "acme")] == [
        ("acme", 2, b"a1"), ("acme", 2, b"a3"), ("acme", 3, b"a2")]
    assert len(hold.held(settings)) == 4

    released = hold.release(settings, "acme")
    assert sorted(h.value for h in released) == [b"a1", b"a2", b"a3"]
    messages = read_requests(settings, 3)
    assert sorted((m.partition(), m.key(), m.value()) for m in messages) == [
        (2, b"acme/u1", b"a1"), (2, b"acme/u1", b"a3"), (3, b"acme/u2", b"a2")]
    assert all(m.headers() == [(hold.RELEASED_HEADER, b"operator")] for m in messages)

    # Released once: only the other tenant's is still held, and a second release is empty.
    assert [(h.tenant_id, h.value) for h in hold.held(settings)] == [("beta", b"b1")]
    assert hold.release(settings, "acme") == []
    put_on_hold(settings, [("acme/u1", 2, b"a4")])
    assert [h.value for h in hold.release(settings, "acme", by="auto", partitions=[2])] == [b"a4"]


def test_an_unknown_releaser_is_refused(tidings_env) -> None:
    with pytest.raises(hold.HoldError, match="released by 'someone'"):
        hold.release(tidings_env.settings(), "acme", by="someone")
