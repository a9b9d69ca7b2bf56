"""The Faust application: one per worker process, configured from `Settings`.

All topics carry our own Avro bytes (`raw` serializers): decoding happens inside each stage,
so a record that does not decode becomes a dead letter instead of an exception inside
Faust's consumer.
"""

from __future__ import annotations

from typing import Any, cast

import faust
from faust.types import TransportT

from streams.publisher import producer_config
from streams.settings import Settings
from streams.transport import Producer, Transport


class App(faust.App):
    """Faust's app on our transport (streams/transport.py): librdkafka sends the records,
    and fetched records reach the streams without a task each."""

    def __init__(self, *args: Any, producer_config: dict[str, Any], **kwargs: Any) -> None:
        self.producer_config = producer_config  # librdkafka's settings
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> TransportT:
        return Transport(self.conf.broker_consumer, self)

    def _new_producer_transport(self) -> TransportT:
        return Transport(self.conf.broker_producer, self)

    @property
    def fast_producer(self) -> Producer:
        return cast(Producer, self.producer)


def create_app(settings: Settings) -> App:
    brokers = ";".join(f"kafka://{host}" for host in settings.kafka_bootstrap.split(","))
    return App(
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
        broker_session_timeout=settings.session_timeout_s,
        producer_acks=-1,
        producer_linger=settings.producer_linger_ms / 1000,
        stream_buffer_maxsize=4096,
        web_enabled=True,
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_in_thread=False,
        loghandlers=[],
        producer_config=producer_config(settings, linger_ms=settings.producer_linger_ms),
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
