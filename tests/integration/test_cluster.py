"""The launcher's three-node cluster: replication factor 3, acks=all, and a broker loss."""

from __future__ import annotations

import time
import uuid

import kafka_local
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

pytestmark = [pytest.mark.integration, pytest.mark.cluster]


@pytest.fixture(scope="module")
def cluster():
    nodes = kafka_local.Cluster(size=3)
    nodes.start(timeout=120)
    try:
        yield nodes
    finally:
        nodes.stop()


def produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    errors = []
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                         "enable.idempotence": True})
    for value in values:
        producer.produce(topic, value=value,
                         on_delivery=lambda err, _msg: errors.append(err) if err else None)
    assert producer.flush(30) == 0
    assert errors == []


def consume_all(bootstrap: str, topic: str, count: int) -> list[bytes]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex,
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    values: list[bytes] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        message = consumer.poll(0.1)
        if message is not None and not message.error():
            values.append(message.value())
        if len(values) >= count:
            break
    consumer.close()
    return values


def test_three_nodes_replicate_with_acks_all_and_survive_a_broker_loss(cluster):
    bootstrap = cluster.bootstrap
    admin = AdminClient({"bootstrap.servers": bootstrap})
    assert len(admin.list_topics(timeout=10).brokers) == 3

    topic = f"replicated-{uuid.uuid4().hex[:8]}"
    futures = admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=3,
                                            config={"min.insync.replicas": "2"})])
    futures[topic].result(30)
    described = admin.list_topics(topic, timeout=10).topics[topic]
    assert all(len(p.replicas) == 3 for p in described.partitions.values())

    first = [f"before-{i}".encode() for i in range(300)]
    produce(bootstrap, topic, first)

    # One of three brokers dies: two in-sync replicas remain, so acks=all writes go on.
    cluster.kill_node(3)
    survivors = ",".join(f"127.0.0.1:{node.port}" for node in cluster.nodes[:2])
    second = [f"after-{i}".encode() for i in range(300)]
    produce(survivors, topic, second)

    assert sorted(consume_all(survivors, topic, 600)) == sorted(first + second)
