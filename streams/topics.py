"""Every topic Tidings uses, declared once: `tidings topics create` and the worker read this.

Keys: requests are keyed `tenant/user` of their first recipient; the dispatch topic re-keys
one record per recipient as `tenant/user`, so per-user dedup and limits are exact on one
partition. Channel and retry topics keep that key, so a delivery's ledger entry lives on the
partition its retries and replays come back to.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from streams.errors import TidingsError
from streams.settings import Settings

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    compacted: bool = False
    retention_ms: int | None = None
    expires: bool = False  # with `compacted`: delete records past `retention_ms` as well
    # A record stays uncompacted at least this long (a preference change must be folded by
    # the preferences stage before the state it applies to may be compacted away).
    compaction_lag_ms: int | None = None

    def config(self) -> dict[str, str]:
        config = {"cleanup.policy": "compact" if self.compacted else "delete"}
        if self.compacted and self.expires:
            # Compacted, and segments older than the retention dropped too: a windowed table's
            # changelog, whose keys (one per window) are never written again once it closes.
            config["cleanup.policy"] = "compact,delete"
        if self.retention_ms is not None:
            config["retention.ms"] = str(self.retention_ms)
        if self.compaction_lag_ms is not None:
            config["min.compaction.lag.ms"] = str(self.compaction_lag_ms)
        if self.replication_factor >= 3:
            # With acks=all, an acknowledged write is on two replicas, and writes go on while
            # one of three is down. (With two replicas, 2 would stop writes on any loss.)
            config["min.insync.replicas"] = "2"
        return config


def tier_name(delay_s: float) -> str:
    """`5s`, `30s`, `5m`, `30m`, `2h`: the suffix of a retry tier topic."""
    seconds = int(delay_s)
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"


def retry_topic(settings: Settings, channel: str, delay_s: float) -> str:
    return settings.topic(f"retry.{channel}.{tier_name(delay_s)}")


def channel_topic(settings: Settings, channel: str) -> str:
    return settings.topic(f"channel.{channel}")


# The worker's tables (agents/): Faust keeps each one's changelog in
# `<app id>-<table>-changelog`. They are declared here too, so they exist before the first
# worker starts: a worker that meets a table write before its consumer has seen the
# changelog topic fails the write (Faust's PartitionsMismatch) and dead-letters the event.
TABLES = ("dedup", "rate-limits", "delivered", "suppressed", "preferences")
# Analytics and the runaway guard (agents/analytics.py, agents/runaway.py): the windowed
# statistics (their changelog is what `tidings insights` reads, kept for
# `analytics_retention_s`), the detectors' state per tenant, and the guard's per partition.
ANALYTICS_WINDOWS_TABLE = "analytics-windows"
ANALYTICS_TABLES = ("analytics-detectors", "guard")


def changelog_topic(settings: Settings, table: str) -> str:
    return f"{settings.app_id}-{table}-changelog"


def topic_specs(settings: Settings) -> list[TopicSpec]:
    n, rf = settings.partitions, settings.replication_factor
    specs = [
        TopicSpec(settings.topic("requests"), n, rf, retention_ms=7 * DAY_MS),
        TopicSpec(settings.topic("dispatch"), n, rf, retention_ms=7 * DAY_MS),
        TopicSpec(settings.topic("status"), n, rf, retention_ms=30 * DAY_MS),
        TopicSpec(settings.topic("deadletter"), n, rf, retention_ms=30 * DAY_MS),
        # HTTP API: what each POST accepted (tenant, key, body hash, id), read by every
        # replica. Kept as long as the statuses, so a replica rebuilt from both knows the
        # owner of every notification it can show; idempotency itself needs only the window.
        TopicSpec(settings.topic("api-idempotency"), n, rf, retention_ms=30 * DAY_MS),
    ]
    specs += [TopicSpec(changelog_topic(settings, table), n, rf, compacted=True)
              for table in TABLES]
    for channel in settings.enabled_channels:
        specs.append(TopicSpec(channel_topic(settings, channel), n, rf, retention_ms=7 * DAY_MS))
        for delay in settings.retry_tiers_s:
            specs.append(
                TopicSpec(retry_topic(settings, channel, delay), n, rf, retention_ms=7 * DAY_MS)
            )
    # Quarantined notifications (agents/enrichment/quarantine.py), keyed by notification and
    # recipient; compacted, so a release's tombstone removes one for good.
    specs.append(TopicSpec(settings.topic("quarantine"), n, rf, compacted=True))
    specs += analytics_topic_specs(settings)
    # Rules and preferences (issue 4). Events are keyed tenant/subject; rules (few, read
    # whole by every worker) and preferences (keyed tenant/user like dispatch, same partition
    # count, so co-partitioned with it) are compacted.
    specs += [
        TopicSpec(settings.topic("events"), n, rf, retention_ms=7 * DAY_MS),
        TopicSpec(settings.topic("rules"), n, rf, compacted=True),
        TopicSpec(settings.topic("preferences"), n, rf, compacted=True,
                  compaction_lag_ms=7 * DAY_MS),
    ]
    # Templates (streams/templates.py): compacted, one partition so that every reader sees
    # versions and activations in one order; every worker reads all of it.
    specs.append(TopicSpec(settings.topic("templates"), 1, rf, compacted=True))
    return specs


def analytics_topic_specs(settings: Settings) -> list[TopicSpec]:
    """Anomaly events (keyed by tenant); statuses re-keyed by tenant for the analytics stage;
    requests the runaway guard holds (keyed like requests, so hold partition p holds what
    requests partition p saw) and the compacted record of what was released from them."""
    n, rf = settings.partitions, settings.replication_factor
    retention_ms = int(settings.analytics_retention_s * 1000)
    return [
        TopicSpec(settings.topic("anomalies"), n, rf, retention_ms=30 * DAY_MS),
        TopicSpec(settings.topic("analytics"), n, rf, retention_ms=DAY_MS),
        TopicSpec(settings.topic("hold"), n, rf, retention_ms=30 * DAY_MS),
        TopicSpec(settings.topic("hold-releases"), n, rf, compacted=True),
        TopicSpec(changelog_topic(settings, ANALYTICS_WINDOWS_TABLE), n, rf, compacted=True,
                  retention_ms=retention_ms, expires=True),
        *(TopicSpec(changelog_topic(settings, t), n, rf, compacted=True)
          for t in ANALYTICS_TABLES),
    ]


class TopicAdminError(TidingsError):
    """Creating or describing topics failed at the broker."""


def create_topics(settings: Settings, timeout_s: float = 30.0) -> list[str]:
    """Create every declared topic that does not exist yet; return the names created."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    # log_level 4: warnings and worse (librdkafka logs queue purges on close at 6).
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap, "log_level": 4})
    specs = topic_specs(settings)
    futures = admin.create_topics(
        [
            NewTopic(s.name, num_partitions=s.partitions, replication_factor=s.replication_factor,
                     config=s.config())
            for s in specs
        ],
        operation_timeout=timeout_s,
        request_timeout=timeout_s,
    )
    created = []
    for name, future in futures.items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            error = exc.args[0]
            if error.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise TopicAdminError(f"creating {name}: {error.str()}") from exc
    _wait_for_leaders(admin, created, timeout_s)
    return sorted(created)


def _wait_for_leaders(admin: Any, names: list[str], timeout_s: float) -> None:
    """Return once every partition of `names` has a leader.

    CreateTopics answers when the controller has recorded the topics; a broker learns of its
    new partitions a moment later, and until then a read or a produce right away fails with
    NOT_LEADER_OR_FOLLOWER or UNKNOWN_TOPIC_OR_PARTITION. Whoever creates topics and then
    uses them (`tidings topics create && ...`, the tests) would otherwise race that.
    """
    deadline = time.monotonic() + timeout_s
    pending = set(names)
    while pending:
        metadata = admin.list_topics(timeout=timeout_s)
        pending = {
            name for name in pending
            if name not in metadata.topics or metadata.topics[name].error is not None
            or any(p.leader < 0 for p in metadata.topics[name].partitions.values())
            or not metadata.topics[name].partitions
        }
        if pending and time.monotonic() > deadline:
            raise TopicAdminError(f"no leader after {timeout_s}s for {sorted(pending)[:5]}")
        if pending:
            time.sleep(0.05)
