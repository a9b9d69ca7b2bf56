"""Tests for streams/lag.py: rows as kafka-consumer-groups --describe computes them."""

from __future__ import annotations

from streams.lag import NO_MEMBER, LagRow, Member, app_groups, lag_rows, table, total_lag

ALICE = Member("rdkafka-1", "/127.0.0.1", "rdkafka")


def test_lag_is_the_log_end_minus_the_committed_offset() -> None:
    rows = lag_rows("g", {("t", 0): 10, ("t", 1): 30}, {("t", 0): 50, ("t", 1): 30})
    assert [(r.partition, r.current_offset, r.log_end_offset, r.lag) for r in rows] == [
        (0, 10, 50, 40), (1, 30, 30, 0)]
    assert total_lag(rows) == 40


def test_an_assigned_partition_without_an_offset_has_no_lag() -> None:
    rows = lag_rows("g", {("t", 0): 10, ("t", 2): -1}, {("t", 0): 50, ("t", 1): 20, ("t", 2): 5},
                    {("t", 0): ALICE, ("t", 1): ALICE})
    by_partition = {r.partition: r for r in rows}
    assert sorted(by_partition) == [0, 1, 2]
    assert (by_partition[1].current_offset, by_partition[1].lag) == (None, None)
    assert by_partition[1].log_end_offset == 20
    assert (by_partition[2].current_offset, by_partition[2].lag) == (None, None)
    assert by_partition[0].consumer_id == "rdkafka-1"
    assert by_partition[2].consumer_id == NO_MEMBER
    assert total_lag(rows) == 40


def test_a_committed_offset_past_the_end_is_negative_as_kafka_shows_it() -> None:
    (row,) = lag_rows("g", {("t", 0): 70}, {("t", 0): 50})
    assert row.lag == -20


def test_rows_are_sorted_by_topic_and_partition() -> None:
    committed = {("b", 1): 0, ("a", 3): 0, ("b", 0): 0, ("a", 10): 0}
    rows = lag_rows("g", committed, dict.fromkeys(committed, 5))
    assert [(r.topic, r.partition) for r in rows] == [("a", 3), ("a", 10), ("b", 0), ("b", 1)]


def test_a_missing_watermark_leaves_the_lag_unknown() -> None:
    (row,) = lag_rows("g", {("t", 0): 3}, {})
    assert (row.log_end_offset, row.lag) == (None, None)


def test_the_table_has_kafka_consumer_groups_columns() -> None:
    lines = table([LagRow("g", "topic", 0, 10, 50, 40, "c-1", "/127.0.0.1", "rdkafka"),
                   LagRow("g", "topic", 1, None, 20, None)])
    assert lines[0].split() == ["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET",
                                "LOG-END-OFFSET", "LAG", "CONSUMER-ID", "HOST", "CLIENT-ID"]
    assert lines[1].split() == ["g", "topic", "0", "10", "50", "40", "c-1", "/127.0.0.1",
                                "rdkafka"]
    assert lines[2].split() == ["g", "topic", "1", "-", "20", "-", "-", "-", "-"]


def test_an_apps_groups_are_its_own_and_its_dotted_ones() -> None:
    every = ["tidings", "tidings.delay-line", "tidings2", "tidings-watch-1a2b", "other"]
    assert app_groups("tidings", every) == ["tidings", "tidings.delay-line"]
