"""Records written with an earlier version of a schema still decode with the current one."""

from __future__ import annotations

import pytest

from schemas import SCHEMA_DIR
from streams.records import status_record
from streams.requests import normalize_request
from streams.serde import AvroSerde, SchemaRegistry, default_registry, serde

REQUEST = {
    "tenant_id": "acme", "idempotency_key": "k1", "channels": ["webhook"],
    "recipients": [{"user_id": "u1", "webhook_url": "https://example.com/hook"}],
    "title": "Hello",
}


@pytest.mark.parametrize(
    ("name", "history_file"),
    [("NotificationRequest", "notification_request.v1.avsc")],
)
def test_v1_request_bytes_read_into_the_current_schema_with_defaults(name, history_file):
    old = AvroSerde(name, default_registry(), schema=SCHEMA_DIR / "history" / history_file)
    record = normalize_request(REQUEST)
    record.pop("fallback_channels", None)
    current = serde(name)
    assert old.fingerprint != current.fingerprint
    decoded = current.decode(old.encode(record))
    assert decoded["fallback_channels"] == []
    assert decoded["notification_id"] == record["notification_id"]


def test_v1_status_bytes_read_with_empty_details():
    v1 = SCHEMA_DIR / "history" / "delivery_status.v1.avsc"
    old = AvroSerde("DeliveryStatus", default_registry(), schema=v1)
    record = status_record({"tenant_id": "acme", "notification_id": "n1"}, "accepted")
    record.pop("details")
    decoded = serde("DeliveryStatus").decode(old.encode(record))
    assert decoded["details"] == {}
    assert decoded["status"] == "accepted"


def test_every_history_schema_is_known_to_the_default_registry():
    paths = sorted((SCHEMA_DIR / "history").glob("*.avsc"))
    assert paths
    for path in paths:
        fingerprint = SchemaRegistry.from_directory(SCHEMA_DIR).register(path, current=False)
        assert default_registry().writer(fingerprint)  # raises SerializationError if unknown


def test_v2_channel_message_bytes_read_with_no_rendered_parts():
    v2 = SCHEMA_DIR / "history" / "channel_message.v2.avsc"
    old = AvroSerde("ChannelMessage", default_registry(), schema=v2)
    message = {
        "delivery_id": "dlv_1", "notification_id": "n1", "tenant_id": "acme",
        "channel": "email", "fallback_channels": [], "category": "orders",
        "priority": "normal",
        "recipient": {"user_id": "u1", "email": "ann@example.com", "push_tokens": [],
                      "metadata": {}},
        "title": "Hi", "body": "Hello", "data": {}, "metadata": {}, "attempt": 0,
        "created_at": 1, "not_before": 0, "last_error": None,
    }
    current = serde("ChannelMessage")
    assert old.fingerprint != current.fingerprint
    decoded = current.decode(old.encode(message))
    assert (decoded["html"], decoded["blocks"], decoded["payload"], decoded["locale"]) == (
        None, None, None, None)
    assert decoded["rendered_fallbacks"] == {}
    assert decoded["title"] == "Hi"
