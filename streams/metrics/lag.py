"""Consumer lag per group, topic and partition, read from the broker by the worker itself.

lag = high watermark − committed offset, the figure `kafka-consumer-groups --describe`
prints. A partition the group has not committed on yet counts from the low watermark
(the worker's groups start at `earliest`), so a topic nobody consumes shows its whole
backlog rather than nothing. The reads are blocking admin requests (confluent-kafka's
`list_consumer_group_offsets`, `list_offsets`), so they run in a thread; a background task
refreshes a snapshot every few seconds, and a scrape only reads that snapshot.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence

from confluent_kafka import (
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]
from prometheus_client import Counter, Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

from streams.errors import TidingsError
from streams.settings import Settings
from streams.topics import channel_topic, retry_topic

log = logging.getLogger("tidings.metrics")

# (group, topic, partition) -> lag
Snapshot = dict[tuple[str, str, int], int]


class LagReadError(TidingsError):
    """The broker did not answer the offset requests in time, or refused them."""


def partition_lag(committed: int | None, low: int, high: int) -> int:
    """Records of one partition the group has yet to process."""
    start = low if committed is None or committed < low else committed
    return max(0, high - start)


def consumed_topics(settings: Settings) -> dict[str, tuple[str, ...]]:
    """The topics each of the worker's consumer groups reads, whichever stages this worker
    runs: a stage no worker runs must show its backlog, not vanish from the graphs."""
    channels = settings.enabled_channels
    return {
        # Faust's consumer group is the app id.
        settings.app_id: (
            settings.topic("requests"), settings.topic("dispatch"),
            *(channel_topic(settings, c) for c in channels),
        ),
        # agents/worker.py names the delay line's group.
        f"{settings.app_id}.delay-line": tuple(
            retry_topic(settings, c, d) for c in channels for d in settings.retry_tiers_s
        ),
    }


class LagReader:
    """Reads committed offsets and watermarks for some groups with one admin client."""

    def __init__(self, bootstrap: str, groups: Mapping[str, Sequence[str]],
                 timeout_s: float = 5.0) -> None:
        self._bootstrap = bootstrap
        self._groups = {group: tuple(topics) for group, topics in groups.items()}
        self._timeout_s = timeout_s
        self._admin: AdminClient | None = None

    def read(self) -> Snapshot:
        """Every partition's lag; blocking, so call it off the event loop."""
        if self._admin is None:
            # log_level 4: warnings and worse. Created on first use: building a worker's
            # app (tests, `tidings` commands) must not start librdkafka threads.
            self._admin = AdminClient({"bootstrap.servers": self._bootstrap, "log_level": 4})
        try:
            committed: dict[tuple[str, str, int], int] = {}
            for group in self._groups:
                committed.update(self._committed(self._admin, group))
            names = {t for topics in self._groups.values() for t in topics}
            names |= {topic for _, topic, _ in committed}
            partitions = self._partitions(self._admin, sorted(names))
            wanted = {
                group: [(topic, p) for topic in {*known, *(t for g, t, _ in committed
                                                          if g == group)}
                        for p in partitions.get(topic, ())]
                for group, known in self._groups.items()
            }
            every = {tp for tps in wanted.values() for tp in tps}
            low = self._offsets(self._admin, every, OffsetSpec.earliest())  # type: ignore[no-untyped-call]
            high = self._offsets(self._admin, every, OffsetSpec.latest())  # type: ignore[no-untyped-call]
        except (KafkaException, concurrent.futures.TimeoutError) as exc:
            raise LagReadError(f"reading consumer offsets: {exc}") from exc
        return {
            (group, topic, partition): partition_lag(
                committed.get((group, topic, partition)),
                low[(topic, partition)], high[(topic, partition)],
            )
            for group, tps in wanted.items()
            for topic, partition in tps
        }

    def _committed(self, admin: AdminClient, group: str) -> dict[tuple[str, str, int], int]:
        # One group per request: the admin client answers for one group only.
        future = admin.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group)], request_timeout=self._timeout_s,
        )[group]
        return {(group, tp.topic, tp.partition): tp.offset
                for tp in future.result(self._timeout_s).topic_partitions or ()
                if tp.error is None and tp.offset >= 0}

    def _partitions(self, admin: AdminClient, names: list[str]) -> dict[str, list[int]]:
        """Partition ids of each topic that exists (DescribeTopics for just these names,
        not the whole cluster's metadata)."""
        if not names:
            return {}
        futures = admin.describe_topics(TopicCollection(names),
                                        request_timeout=self._timeout_s)
        partitions = {}
        for name, future in futures.items():
            try:
                description = future.result(self._timeout_s)
            except KafkaException as exc:
                if exc.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    continue  # not created yet: nothing to lag behind
                raise
            partitions[name] = [p.id for p in description.partitions]
        return partitions

    def _offsets(self, admin: AdminClient, partitions: set[tuple[str, int]],
                 spec: OffsetSpec) -> dict[tuple[str, int], int]:
        if not partitions:
            return {}
        futures = admin.list_offsets(
            {TopicPartition(topic, partition): spec for topic, partition in partitions},
            request_timeout=self._timeout_s,
        )
        return {(tp.topic, tp.partition): future.result(self._timeout_s).offset
                for tp, future in futures.items()}


class ConsumerLag(Collector):
    """`notification_consumer_lag{group,topic,partition}` from the latest snapshot."""

    def __init__(self) -> None:
        self._snapshot: Snapshot = {}
        self._lock = threading.Lock()

    def update(self, snapshot: Snapshot) -> None:
        with self._lock:
            self._snapshot = dict(snapshot)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily(
            "notification_consumer_lag",
            "Records not yet processed by a consumer group: high watermark minus committed "
            "offset (from the low watermark where nothing is committed).",
            labels=["group", "topic", "partition"],
        )
        with self._lock:
            items = sorted(self._snapshot.items())
        for (group, topic, partition), lag in items:
            gauge.add_metric([group, topic, str(partition)], lag)
        yield gauge


CONSUMER_LAG = ConsumerLag()
REGISTRY.register(CONSUMER_LAG)
LAG_REFRESH_ERRORS = Counter(
    "notification_consumer_lag_refresh_errors_total",
    "Consumer lag refreshes that failed (the lag series are dropped until one succeeds).",
)
LAG_LAST_REFRESH = Gauge(
    "notification_consumer_lag_last_refresh_timestamp_seconds",
    "When the consumer lag was last read from the broker (Unix time).",
)


async def refresh_forever(reader: LagReader, interval_s: float) -> None:
    """Refresh the lag snapshot every `interval_s`, off the event loop."""
    while True:
        try:
            snapshot = await asyncio.to_thread(reader.read)
        except LagReadError as exc:
            # A stale lag would read as current: drop it until the broker answers again.
            CONSUMER_LAG.update({})
            LAG_REFRESH_ERRORS.inc()
            log.warning("consumer lag not refreshed: %s", exc)
        else:
            CONSUMER_LAG.update(snapshot)
            LAG_LAST_REFRESH.set_to_current_time()
        await asyncio.sleep(interval_s)
