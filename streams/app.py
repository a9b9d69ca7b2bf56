"""The Faust application: one per worker process, configured from `Settings`.

All topics carry our own Avro bytes (`raw` serializers): decoding happens inside each stage,
so a record that does not decode becomes a dead letter instead of an exception inside
Faust's consumer.
"""

from __future__ import annotations

from typing import Any

import faust

from streams.settings import Settings


def create_app(settings: Settings) -> faust.App:
    brokers = ";".join(f"kafka://{host}" for host in settings.kafka_bootstrap.split(","))
    return faust.App(
        settings.app_id,
        broker=brokers,
        store="rocksdb://",
        datadir=str(settings.data_dir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        # Source topics come from `tidings topics create` (one declaration, streams/topics.py);
        # Faust declares only its own changelog topics.
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=settings.commit_interval_s,
        producer_acks=-1,
        producer_linger=settings.producer_linger_ms / 1000,
        stream_buffer_maxsize=4096,
        web_enabled=True,
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_in_thread=False,
        loghandlers=[],
    )


def raw_topic(app: faust.App, name: str, **options: Any) -> faust.TopicT:
    return app.topic(
        name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        allow_empty=True,
        **options,
    )
