"""Consumer lag per group, topic and partition, as `kafka-consumer-groups --describe` shows it.

    lag = log-end offset − committed offset

The log-end offset is the high watermark (ListOffsets `latest`, read_uncommitted), and a
partition without a committed offset has no lag ("-"), exactly as Kafka's
ConsumerGroupCommand computes it (`getLag`: no lag without an offset; no clamping, so a
committed offset past the end — after a topic was recreated — shows as negative).

`lag_rows` is the pure part, shared by the CLI and anything that exports the figure (a
Prometheus gauge): committed offsets and watermarks in, rows out. `fetch_lag` asks the
broker with confluent-kafka's AdminClient.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from streams.errors import TidingsError

TopicPartitionKey = tuple[str, int]
NO_MEMBER = "-"


class LagError(TidingsError):
    """The broker could not describe a group or list a topic's offsets."""


@dataclass(frozen=True, slots=True)
class Member:
    consumer_id: str
    host: str
    client_id: str


@dataclass(frozen=True, slots=True)
class LagRow:
    group: str
    topic: str
    partition: int
    current_offset: int | None
    log_end_offset: int | None
    lag: int | None
    consumer_id: str = NO_MEMBER
    host: str = NO_MEMBER
    client_id: str = NO_MEMBER


def lag_rows(
    group: str,
    committed: Mapping[TopicPartitionKey, int | None],
    log_end: Mapping[TopicPartitionKey, int],
    assigned: Mapping[TopicPartitionKey, Member] | None = None,
) -> list[LagRow]:
    """One row per partition the group has an offset for or a member is assigned,
    sorted by topic and partition. A negative committed offset means none (-1 in Kafka)."""
    assigned = assigned or {}
    rows = []
    for topic, partition in sorted(set(committed) | set(assigned)):
        offset = committed.get((topic, partition))
        current = offset if offset is not None and offset >= 0 else None
        end = log_end.get((topic, partition))
        lag = end - current if current is not None and end is not None else None
        member = assigned.get((topic, partition))
        rows.append(LagRow(
            group, topic, partition, current, end, lag,
            *(member.consumer_id, member.host, member.client_id) if member else (),
        ))
    return rows


def total_lag(rows: Iterable[LagRow]) -> int:
    """The sum of the lag of every row that has one."""
    return sum(row.lag for row in rows if row.lag is not None)


COLUMNS = ("GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG",
           "CONSUMER-ID", "HOST", "CLIENT-ID")


def table(rows: Sequence[LagRow]) -> list[str]:
    """The rows in kafka-consumer-groups' columns, aligned."""
    def cell(value: int | str | None) -> str:
        return NO_MEMBER if value is None else str(value)

    cells = [COLUMNS] + [
        (r.group, r.topic, str(r.partition), cell(r.current_offset), cell(r.log_end_offset),
         cell(r.lag), r.consumer_id, r.host, r.client_id)
        for r in rows
    ]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    return ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
            for line in cells]


# -- Kafka -------------------------------------------------------------------------------


def app_groups(app_id: str, group_ids: Iterable[str]) -> list[str]:
    """A worker's groups: Faust's (the app id itself) and its own consumers' (`<app id>.…`,
    e.g. the delay line's)."""
    return sorted(g for g in group_ids if g == app_id or g.startswith(f"{app_id}."))


def fetch_lag(bootstrap: str, groups: Sequence[str] = (), *, app_id: str | None = None,
              timeout_s: float = 15.0) -> list[LagRow]:
    """Lag rows for `groups`; without them, for the groups of `app_id` (`app_groups`), or
    every group when that is None too. Raises `LagError` for a group the broker does not
    know."""
    from confluent_kafka import (
        ConsumerGroupState,
        ConsumerGroupTopicPartitions,
        KafkaException,
        TopicPartition,
    )
    from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 4})
    try:
        if not groups:
            listed = admin.list_consumer_groups(request_timeout=timeout_s).result()
            every = [g.group_id for g in listed.valid]
            groups = sorted(every) if app_id is None else app_groups(app_id, every)
        if not groups:
            return []
        described = admin.describe_consumer_groups(list(groups), request_timeout=timeout_s)
        members: dict[str, dict[TopicPartitionKey, Member]] = {}
        dead: set[str] = set()
        for group, future in described.items():
            description = future.result()
            if description.state == ConsumerGroupState.DEAD:
                dead.add(group)
            members[group] = {
                (tp.topic, tp.partition): Member(m.member_id, m.host, m.client_id)
                for m in description.members
                for tp in (m.assignment.topic_partitions if m.assignment else [])
            }
        committed: dict[str, dict[TopicPartitionKey, int | None]] = {}
        for group in groups:
            # One group per request: the AdminClient takes a list but answers only one.
            (future,) = admin.list_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(group)], request_timeout=timeout_s
            ).values()
            committed[group] = {(tp.topic, tp.partition): tp.offset
                                for tp in future.result().topic_partitions or []}
        unknown = sorted(g for g in dead if not committed[g])
        if unknown:
            raise LagError(f"no consumer group {', '.join(map(repr, unknown))}")
        partitions = {tp for group in groups for tp in (*committed[group], *members[group])}
        log_end: dict[TopicPartitionKey, int] = {}
        if partitions:
            answers = admin.list_offsets(
                {TopicPartition(t, p): OffsetSpec.latest()  # type: ignore[no-untyped-call]
                 for t, p in partitions},
                request_timeout=timeout_s,
            )
            for tp, future in answers.items():
                log_end[(tp.topic, tp.partition)] = future.result().offset
    except KafkaException as exc:
        raise LagError(f"reading consumer lag: {exc.args[0]}") from exc
    rows = []
    for group in groups:
        rows += lag_rows(group, committed[group], log_end, members[group])
    return rows
