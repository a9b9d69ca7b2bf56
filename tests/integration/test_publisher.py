"""The publisher places a key on the partition the workers' producer (aiokafka) would."""

from __future__ import annotations

import pytest
from aiokafka.partitioner import DefaultPartitioner
from confluent_kafka import Consumer, TopicPartition

from streams.publisher import Publisher
from streams.requests import normalize_request, request_key
from streams.topics import create_topics

pytestmark = pytest.mark.integration


def test_requests_land_on_the_murmur2_partition_of_their_key(tidings_env):
    settings = tidings_env.settings()
    create_topics(settings)
    records = [
        normalize_request({
            "tenant_id": f"tenant-{i % 3}", "idempotency_key": f"k{i}", "channels": ["webhook"],
            "recipients": [{"user_id": f"user-{i}", "webhook_url": "https://example.com/h"}],
            "title": "hi",
        })
        for i in range(40)
    ]
    with Publisher(settings) as publisher:
        ids = publisher.publish_many(records)
    topic = settings.topic("requests")
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "unused",
                         "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(settings.partitions)])
        seen: dict[bytes, int] = {}
        while len(seen) < len(ids):
            message = consumer.poll(10)
            assert message is not None, f"only {len(seen)} of {len(ids)} records came back"
            seen[message.key()] = message.partition()
    finally:
        consumer.close()
    partitions = list(range(settings.partitions))
    expected = {
        request_key(r): DefaultPartitioner()(request_key(r), partitions, partitions)
        for r in records
    }
    assert seen == expected
    assert len(set(seen.values())) > 1  # the keys spread; the check is not vacuous
