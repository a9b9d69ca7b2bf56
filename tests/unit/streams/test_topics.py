"""Tests for streams/topics.py: the declared topics, their names and their configs."""

from __future__ import annotations

import os
from typing import Any

import pytest

from streams.settings import load_settings
from streams.topics import DAY_MS, TopicSpec, channel_topic, retry_topic, tier_name, topic_specs


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test sets: no TIDINGS_ variable from the shell that runs the suite."""
    for name in list(os.environ):
        if name.upper().startswith("TIDINGS_"):
            monkeypatch.delenv(name)


def test_default_topic_names() -> None:
    assert [spec.name for spec in topic_specs(load_settings())] == [
        "tidings.requests",
        "tidings.dispatch",
        "tidings.status",
        "tidings.deadletter",
        "tidings.api-idempotency",
        "tidings-dedup-changelog",
        "tidings-rate-limits-changelog",
        "tidings-delivered-changelog",
        "tidings-suppressed-changelog",
        "tidings-preferences-changelog",
        "tidings.channel.webhook",
        "tidings.retry.webhook.5s",
        "tidings.retry.webhook.30s",
        "tidings.retry.webhook.5m",
        "tidings.retry.webhook.30m",
        "tidings.quarantine",
        "tidings.anomalies",
        "tidings.analytics",
        "tidings.hold",
        "tidings.hold-releases",
        "tidings-analytics-windows-changelog",
        "tidings-analytics-detectors-changelog",
        "tidings-guard-changelog",
        "tidings.events",
        "tidings.rules",
        "tidings.preferences",
        "tidings.templates",
    ]


def test_prefix_channels_and_tiers_shape_the_names() -> None:
    settings = load_settings(
        topic_prefix="t1", enabled_channels=("webhook", "email"), retry_tiers_s=(10, 120, 7200)
    )
    assert [spec.name for spec in topic_specs(settings)] == [
        "t1.requests",
        "t1.dispatch",
        "t1.status",
        "t1.deadletter",
        "t1.api-idempotency",
        "tidings-dedup-changelog",
        "tidings-rate-limits-changelog",
        "tidings-delivered-changelog",
        "tidings-suppressed-changelog",
        "tidings-preferences-changelog",
        "t1.channel.webhook",
        "t1.retry.webhook.10s",
        "t1.retry.webhook.2m",
        "t1.retry.webhook.2h",
        "t1.channel.email",
        "t1.retry.email.10s",
        "t1.retry.email.2m",
        "t1.retry.email.2h",
        "t1.quarantine",
        "t1.anomalies",
        "t1.analytics",
        "t1.hold",
        "t1.hold-releases",
        "tidings-analytics-windows-changelog",
        "tidings-analytics-detectors-changelog",
        "tidings-guard-changelog",
        "t1.events",
        "t1.rules",
        "t1.preferences",
        "t1.templates",
    ]


def test_every_topic_has_the_configured_partitions_and_replicas() -> None:
    specs = topic_specs(load_settings(partitions=12, replication_factor=3))
    # The templates topic has one partition: one order of versions for every reader.
    assert {(spec.partitions, spec.replication_factor) for spec in specs
            if not spec.name.endswith(".templates")} == {(12, 3)}
    assert [spec.partitions for spec in specs if spec.name.endswith(".templates")] == [1]


@pytest.mark.parametrize(
    ("name", "retention_days"),
    [
        ("tidings.requests", 7),
        ("tidings.dispatch", 7),
        ("tidings.status", 30),
        ("tidings.deadletter", 30),
        ("tidings.api-idempotency", 30),
        ("tidings.channel.webhook", 7),
        ("tidings.retry.webhook.30m", 7),
    ],
)
def test_retention(name: str, retention_days: int) -> None:
    specs = {spec.name: spec for spec in topic_specs(load_settings())}
    assert specs[name].retention_ms == retention_days * DAY_MS
    assert specs[name].config()["retention.ms"] == str(retention_days * DAY_MS)


@pytest.mark.parametrize(
    ("delay_s", "name"),
    [
        (1, "1s"),
        (5, "5s"),
        (5.0, "5s"),
        (30, "30s"),
        (59, "59s"),
        (60, "1m"),
        (90, "90s"),
        (300, "5m"),
        (1800, "30m"),
        (3600, "1h"),
        (5400, "90m"),
        (7200, "2h"),
        (86400, "24h"),
    ],
)
def test_tier_name(delay_s: float, name: str) -> None:
    assert tier_name(delay_s) == name


@pytest.mark.parametrize(
    ("channel", "delay_s", "topic"),
    [
        ("webhook", 5, "tidings.retry.webhook.5s"),
        ("webhook", 30, "tidings.retry.webhook.30s"),
        ("webhook", 300, "tidings.retry.webhook.5m"),
        ("webhook", 1800, "tidings.retry.webhook.30m"),
        ("email", 3600, "tidings.retry.email.1h"),
    ],
)
def test_retry_topic(channel: str, delay_s: float, topic: str) -> None:
    assert retry_topic(load_settings(), channel, delay_s) == topic


def test_channel_topic() -> None:
    assert channel_topic(load_settings(), "webhook") == "tidings.channel.webhook"


@pytest.mark.parametrize(
    ("spec", "config"),
    [
        (TopicSpec("t", 8, 1), {"cleanup.policy": "delete"}),
        (TopicSpec("t", 8, 1, compacted=True), {"cleanup.policy": "compact"}),
        (
            TopicSpec("t", 8, 1, compacted=True, compaction_lag_ms=DAY_MS),
            {"cleanup.policy": "compact", "min.compaction.lag.ms": "86400000"},
        ),
        (
            TopicSpec("t", 8, 1, retention_ms=DAY_MS),
            {"cleanup.policy": "delete", "retention.ms": "86400000"},
        ),
        (
            TopicSpec("t", 8, 3),
            {"cleanup.policy": "delete", "min.insync.replicas": "2"},
        ),
        (
            TopicSpec("t", 8, 3, compacted=True, retention_ms=DAY_MS),
            {"cleanup.policy": "compact", "retention.ms": "86400000",
             "min.insync.replicas": "2"},
        ),
    ],
)
def test_config(spec: TopicSpec, config: dict[str, Any]) -> None:
    assert spec.config() == config


@pytest.mark.parametrize(("replication_factor", "has_min_isr"), [(1, False), (3, True)])
def test_min_insync_replicas_only_with_replicas(
    replication_factor: int, has_min_isr: bool
) -> None:
    specs = topic_specs(load_settings(replication_factor=replication_factor))
    assert all(("min.insync.replicas" in spec.config()) is has_min_isr for spec in specs)


def test_only_tables_are_compacted_and_names_are_unique() -> None:
    # Requests, events, statuses and retries are event logs: none of them may lose records to
    # compaction. Only tables (latest value per key) are compacted: the changelogs, the rules,
    # preferences and templates topics that are tables' sources, the quarantine (a release's
    # tombstone removes a held notification) and the hold releases.
    specs = topic_specs(load_settings(enabled_channels=("webhook", "email"), app_id="w1"))
    assert {spec.name for spec in specs if spec.compacted} == {
        "w1-dedup-changelog", "w1-rate-limits-changelog", "w1-delivered-changelog",
        "w1-suppressed-changelog", "w1-preferences-changelog", "tidings.rules",
        "tidings.preferences", "tidings.quarantine", "w1-analytics-windows-changelog",
        "w1-analytics-detectors-changelog", "w1-guard-changelog", "tidings.hold-releases",
        "tidings.templates",
    }
    assert len({spec.name for spec in specs}) == len(specs)


def test_the_windowed_tables_changelog_is_compacted_and_expires() -> None:
    specs = {spec.name: spec for spec in topic_specs(load_settings(analytics_retention_s=3600))}
    config = specs["tidings-analytics-windows-changelog"].config()
    assert config["cleanup.policy"] == "compact,delete"
    assert config["retention.ms"] == str(3600 * 1000)
    assert specs["tidings.hold-releases"].config()["cleanup.policy"] == "compact"
