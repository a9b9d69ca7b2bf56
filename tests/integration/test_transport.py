"""The worker's producer (streams/transport.py) against the real broker: what it sends
arrives where aiokafka would have put it, and a record the broker refuses fails the flush
that Faust runs before committing offsets."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from faust.exceptions import ProducerSendError

from streams.app import create_app
from streams.transport import Producer

pytestmark = pytest.mark.integration


def create_topic(bootstrap: str, name: str, partitions: int, **config: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(name, partitions, 1, config=config)]).values():
        future.result(30)


@asynccontextmanager
async def producing_to(env: Any, name: str, partitions: int, **config: str
                       ) -> AsyncIterator[tuple[Producer, str]]:
    """A new topic and a running worker producer."""
    settings = env.settings()
    topic = env.topic(name)
    create_topic(settings.kafka_bootstrap, topic, partitions, **config)
    producer = create_app(settings).fast_producer
    await producer.start()
    try:
        yield producer, topic
    finally:
        await producer.stop()


async def test_sends_arrive_on_the_murmur2_partition_and_futures_resolve(tidings_env):
    settings = tidings_env.settings()
    async with producing_to(tidings_env, "transport", 4) as (producer, topic):
        keys = [f"tenant/user-{i}".encode() for i in range(20)]
        futures = [await producer.send(topic, key, b"v", None, None, None) for key in keys]
        for key in keys[:10]:
            await producer.produce(topic, key, b"no future")
        await producer.flush()
        sent = [await future for future in futures]

    murmur2 = DefaultPartitioner()
    assert [m.partition for m in sent] == [murmur2(key, [0, 1, 2, 3], [0, 1, 2, 3])
                                           for key in keys]
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "unused"})
    try:
        ends = [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in range(4)]
    finally:
        consumer.close()
    assert sum(ends) == 30  # the ten sends without a future arrived too
    for metadata in sent:
        assert 0 <= metadata.offset < ends[metadata.partition]


async def test_a_record_the_broker_refuses_fails_the_flush(tidings_env):
    async with producing_to(tidings_env, "transport-small", 1,
                            **{"max.message.bytes": "2000"}) as (producer, small):
        # Random bytes: lz4 (producer_config) would squeeze repeated ones under the limit.
        await producer.produce(small, b"k", os.urandom(50_000))  # under librdkafka's limit
        with pytest.raises(ProducerSendError, match="refused"):
            await producer.flush()
        await producer.produce(small, b"k", b"fits")
        await producer.flush()  # the failure was reported once; the producer goes on


async def test_a_record_over_librdkafkas_limit_is_refused_at_once(tidings_env):
    async with producing_to(tidings_env, "transport", 1) as (producer, topic):
        with pytest.raises(ProducerSendError, match="too large|MSG_SIZE"):
            await producer.produce(topic, b"k", b"x" * 2_000_000)
