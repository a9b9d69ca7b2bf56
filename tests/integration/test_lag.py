"""`tidings lag` agrees with Kafka's own ConsumerGroupCommand (`kafka-consumer-groups.sh
--describe`) on a real broker, for a group with a live member and a backlog and for one
with offsets and no members."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import kafka_local
import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

pytestmark = pytest.mark.integration

# Records per partition, and the offsets each group commits (none for a missing partition).
PRODUCED = {0: 50, 1: 30, 2: 20}
LIVE = {0: 10, 1: 30}  # partition 2 is assigned to the member but has no offset
IDLE = {0: 45, 2: 5}

Row = tuple[str, ...]


@pytest.fixture
def backlog(kafka_bootstrap: str) -> Iterator[dict[str, Any]]:
    run = uuid.uuid4().hex[:10]
    topic, live, idle = f"lag-{run}", f"lag-live-{run}", f"lag-idle-{run}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)]
                        )[topic].result(30)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for partition, count in PRODUCED.items():
        for i in range(count):
            producer.produce(topic, value=f"{partition}-{i}".encode(), partition=partition)
    assert producer.flush(30) == 0

    # A member of `live` that holds every partition and commits only some offsets.
    assigned = threading.Event()
    member = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": live,
                       "enable.auto.commit": False, "auto.offset.reset": "earliest",
                       "client.id": "lag-test"})
    member.subscribe([topic], on_assign=lambda consumer, partitions: assigned.set())
    while not assigned.is_set():
        member.poll(0.2)
    member.commit(offsets=[TopicPartition(topic, p, o) for p, o in LIVE.items()],
                  asynchronous=False)
    # `idle`: offsets committed by a consumer that never joined and is gone.
    gone = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": idle,
                     "enable.auto.commit": False})
    gone.commit(offsets=[TopicPartition(topic, p, o) for p, o in IDLE.items()],
                asynchronous=False)
    gone.close()
    try:
        yield {"topic": topic, "live": live, "idle": idle}
    finally:
        member.close()
        admin.delete_consumer_groups([live, idle])
        admin.delete_topics([topic])


def kafka_describe(bootstrap: str, *groups: str) -> set[Row]:
    """Rows of `kafka-consumer-groups --describe`, from Kafka's own tool."""
    java = shutil.which("java")
    assert java, "java is needed for Kafka's ConsumerGroupCommand"
    # Kafka's log4j2 configuration in the jars writes to ${kafka.logs.dir}: a scratch folder,
    # not a folder of that literal name in the working directory.
    logs = tempfile.mkdtemp(prefix="kafka-tool-logs-")
    command = [java, "-Xmx256m", f"-Dkafka.logs.dir={logs}", "-cp", f"{kafka_local.fetch()}/*",
               "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
               "--bootstrap-server", bootstrap, "--describe"]
    for group in groups:
        command += ["--group", group]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    rows = set()
    for line in result.stdout.splitlines():
        cells = line.split()
        if len(cells) == 9 and cells[0] in groups:
            rows.add(tuple(cells))
    return rows


def tidings_lag(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streams.cli", "lag", *args],
                          capture_output=True, text=True, env={**os.environ, **env},
                          timeout=120, check=False)


def test_lag_agrees_with_kafka_consumer_group_command(kafka_bootstrap, tidings_env, backlog):
    topic, live, idle = backlog["topic"], backlog["live"], backlog["idle"]
    ours = tidings_lag(tidings_env, "--group", live, "--group", idle)
    assert ours.returncode == 0, ours.stderr
    lines = ours.stdout.splitlines()
    table = {tuple(line.split()) for line in lines if line.split()[:1] in ([live], [idle])}
    theirs = kafka_describe(kafka_bootstrap, live, idle)
    print("\n" + ours.stdout)

    # Every column of every row: offsets, lag ("-" without a committed offset), and the
    # member holding the partition ("-" for the group without members).
    assert table == theirs
    # The figures the backlog was built to give.
    assert {row[:6] for row in theirs} == {
        (live, topic, "0", "10", "50", "40"), (live, topic, "1", "30", "30", "0"),
        (live, topic, "2", "-", "20", "-"),
        (idle, topic, "0", "45", "50", "5"), (idle, topic, "2", "5", "20", "15"),
    }
    (member,) = {row[6:] for row in theirs if row[0] == live}
    assert member[0].startswith("lag-test-") and member[2] == "lag-test"
    assert {row[6:] for row in theirs if row[0] == idle} == {("-", "-", "-")}
    assert f"TOTAL {live}: lag 40 (1 partition(s) without a committed offset)" in lines
    assert f"TOTAL {idle}: lag 20" in lines
    assert "TOTAL: lag 60" in lines

    as_json = tidings_lag(tidings_env, "--group", idle, "--json")
    rows = [orjson.loads(line) for line in as_json.stdout.splitlines()]
    assert [(r["partition"], r["lag"]) for r in rows] == [(0, 5), (2, 15)]


def test_an_unknown_group_is_a_clear_error(tidings_env):
    result = tidings_lag(tidings_env, "--group", f"no-such-{uuid.uuid4().hex[:8]}")
    assert result.returncode == 1
    assert "no consumer group 'no-such-" in result.stderr
