"""streams/metrics/lag.py against the real broker: the lag it reads is the records each
partition holds past the group's committed offset, or past the low watermark where the
group has committed nothing."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client import REGISTRY

from streams.metrics.lag import CONSUMER_LAG, LagReader, refresh_forever

pytestmark = pytest.mark.integration


@pytest.fixture
def topic(kafka_bootstrap: str) -> str:
    name = f"lag-{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(name, num_partitions=3, replication_factor=1)])[name].result()
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for partition, count in ((0, 10), (1, 4), (2, 0)):
        for i in range(count):
            producer.produce(name, value=f"{i}".encode(), partition=partition)
    assert producer.flush(30) == 0
    return name


def commit(bootstrap: str, group: str, offsets: list[TopicPartition]) -> None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "enable.auto.commit": False})
    consumer.commit(offsets=offsets, asynchronous=False)
    consumer.close()


def test_lag_from_committed_offsets_and_watermarks(kafka_bootstrap: str, topic: str) -> None:
    group, idle = f"g-{uuid.uuid4().hex[:8]}", f"idle-{uuid.uuid4().hex[:8]}"
    commit(kafka_bootstrap, group, [TopicPartition(topic, 0, 7)])
    reader = LagReader(kafka_bootstrap, {group: [topic], idle: [topic]})
    assert reader.read() == {
        (group, topic, 0): 3,  # 10 records, committed up to 7
        (group, topic, 1): 4,  # nothing committed: all 4 are waiting
        (group, topic, 2): 0,
        # A group that never committed (no worker runs that stage) sees the whole backlog.
        (idle, topic, 0): 10,
        (idle, topic, 1): 4,
        (idle, topic, 2): 0,
    }
    commit(kafka_bootstrap, group, [TopicPartition(topic, 0, 10), TopicPartition(topic, 1, 4)])
    assert {k: v for k, v in reader.read().items() if k[0] == group} == {
        (group, topic, 0): 0, (group, topic, 1): 0, (group, topic, 2): 0,
    }


def test_a_topic_the_group_committed_on_is_reported_even_when_not_declared(
        kafka_bootstrap: str, topic: str) -> None:
    group = f"g-{uuid.uuid4().hex[:8]}"
    commit(kafka_bootstrap, group, [TopicPartition(topic, 1, 1)])
    reader = LagReader(kafka_bootstrap, {group: ["no-such-topic-declared"]})
    assert reader.read() == {(group, topic, 0): 10, (group, topic, 1): 3, (group, topic, 2): 0}


def refresh_errors() -> float:
    return REGISTRY.get_sample_value("notification_consumer_lag_refresh_errors_total") or 0.0


async def test_an_unreachable_broker_drops_the_lag_and_counts_the_failure() -> None:
    CONSUMER_LAG.update({("g", "t", 0): 5})
    errors = refresh_errors()
    # Nothing listens on this port: every read times out.
    reader = LagReader("127.0.0.1:1", {"g": ["t"]}, timeout_s=0.5)
    task = asyncio.create_task(refresh_forever(reader, interval_s=0.1))
    try:
        for _ in range(100):
            if refresh_errors() > errors:
                break
            await asyncio.sleep(0.1)
    finally:
        task.cancel()
    assert refresh_errors() > errors
    assert list(CONSUMER_LAG.collect())[0].samples == []
