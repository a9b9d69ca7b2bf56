"""Tests for streams/serde.py: wire format, evolution, interop with Apache avro, errors."""

from __future__ import annotations

import copy
import datetime as dt
import io
import json
import random
from pathlib import Path
from typing import Any

import avro.io
import avro.schema
import pytest
from fastavro.schema import fingerprint, to_parsing_canonical_form

from schemas import SCHEMA_DIR, schema_path
from streams.errors import ConfigError, SerializationError
from streams.serde import AvroSerde, SchemaRegistry, default_registry, serde

CREATED_AT = 1_700_000_000_123  # ms; not a whole second, so lost millis would show


def recipient(**overrides: Any) -> dict[str, Any]:
    return {
        "user_id": "u-42",
        "email": "ada@example.com",
        "phone": "+14155550100",
        "push_tokens": ["fcm-token-1", "apns-token-2"],
        "slack": "C024BE91L",
        "webhook_url": "https://hooks.example.com/tidings",
        "locale": "en-GB",
        "timezone": "Europe/London",
        "metadata": {"plan": "pro"},
    } | overrides


def notification_request(**overrides: Any) -> dict[str, Any]:
    return {
        "tenant_id": "acme",
        "notification_id": "n-0001",
        "idempotency_key": "order-1234-shipped",
        "priority": "high",
        "category": "orders",
        "recipients": [recipient()],
        "channels": ["email", "sms"],
        "fallback_channels": ["push"],
        "template": {"template_id": "order-shipped", "version": 3},
        "title": None,
        "content": None,
        "data": {"order": "1234", "carrier": "DHL"},
        "metadata": {"traceparent": "00-abc-def-01"},
        "created_at": CREATED_AT,
        "send_at": CREATED_AT + 60_000,
    } | overrides


def channel_message(**overrides: Any) -> dict[str, Any]:
    return {
        "delivery_id": "n-0001/email/u-42",
        "notification_id": "n-0001",
        "tenant_id": "acme",
        "channel": "email",
        "fallback_channels": ["sms"],
        "category": "orders",
        "priority": "high",
        "recipient": recipient(),
        "title": "Your order has shipped",
        "body": "Order 1234 is on its way with DHL.",
        "data": {"order": "1234"},
        "metadata": {},
        "html": "<p>Order 1234 is on its way.</p>",
        "blocks": None,
        "payload": None,
        "locale": "en-GB",
        "rendered_fallbacks": {"sms": '{"body":"Order 1234 is on its way."}'},
        "attempt": 2,
        "created_at": CREATED_AT,
        "not_before": CREATED_AT + 30_000,
        "last_error": "503 Service Unavailable",
    } | overrides


def delivery_status(**overrides: Any) -> dict[str, Any]:
    return {
        "tenant_id": "acme",
        "notification_id": "n-0001",
        "delivery_id": "n-0001/email/u-42",
        "channel": "email",
        "status": "delivered",
        "attempt": 1,
        "reason": None,
        "status_code": 250,
        "occurred_at": CREATED_AT + 1_500,
        "latency_ms": 1_500,
        "details": {"template": "welcome", "variant": "b"},
    } | overrides


def template_event(**overrides: Any) -> dict[str, Any]:
    return {
        "action": "publish",
        "tenant_id": "acme",
        "template_id": "welcome",
        "version": 3,
        "occurred_at": CREATED_AT,
        "author": "ops@acme",
        "description": "Sent when an account is created",
        "default_locale": "en",
        "shared": {"email.html": "<p>{{ parts.text | markdown }}</p>"},
        "locales": {"en": {"title": "Welcome"}, "fr": {"title": "Bienvenue"}},
        "experiment_id": "welcome-subject",
        "variants": [{"name": "a", "weight": 1.0, "shared": {}, "locales": {}},
                     {"name": "b", "weight": 1.0, "shared": {},
                      "locales": {"en": {"title": "Hello"}}}],
    } | overrides


def dead_letter(**overrides: Any) -> dict[str, Any]:
    return {
        "stage": "validate",
        "error_class": "SerializationError",
        "message": "cannot decode tidings.NotificationRequest: EOFError",
        "attempts": 0,
        "original_topic": "tidings.requests",
        "original_partition": 3,
        "original_offset": 2**40,
        "original_key": b"acme/u-42",
        "original_bytes": b"\xc3\x01\x00\xff garbage",
        "tenant_id": None,
        "notification_id": None,
        "failed_at": CREATED_AT,
    } | overrides


def idempotency_record(**overrides: Any) -> dict[str, Any]:
    return {
        "tenant_id": "acme",
        "idempotency_key": "order-1",
        "body_sha256": "0" * 64,
        "notification_id": "ntf_0001",
        "accepted_at": CREATED_AT,
    } | overrides


def anomaly(**overrides: Any) -> dict[str, Any]:
    return {
        "anomaly_id": "anm_00112233445566ff",
        "tenant_id": "acme",
        "channel": None,
        "kind": "runaway_hold",
        "series": "guard:sent",
        "observed": 240.0,
        "expected": 11.5,
        "score": 67.4,
        "threshold": 6.0,
        "window_start": CREATED_AT,
        "window_end": CREATED_AT + 10_000,
        "detected_at": CREATED_AT + 4_200,
        "action": "hold",
        "details": {"partition": "3"},
    } | overrides


def domain_event(**overrides: Any) -> dict[str, Any]:
    return {
        "event_id": "evt-1", "tenant_id": "acme", "event_type": "order.shipped",
        "subject_id": "order-17", "occurred_at": CREATED_AT,
        "payload": {"total": "42.00", "email": "ann@example.com"}, "metadata": {"trace": "t"},
    } | overrides


def rule(**overrides: Any) -> dict[str, Any]:
    return {
        "tenant_id": "acme", "rule_id": "shipped", "event_type": "order.shipped",
        "condition": "int(payload.total) > 10",
        "recipients": [{"user_id": "subject_id", "email": "payload.email", "phone": None,
                        "push_tokens": None, "slack": None, "webhook_url": None,
                        "locale": "literal:fr", "timezone": None}],
        "channels": ["email"], "fallback_channels": ["sms"],
        "template": {"template_id": "order-shipped", "version": 3},
        "title": "Order ${order_id}", "content": None, "category": "orders",
        "priority": "high", "enabled": True, "updated_at": CREATED_AT,
    } | overrides


def preferences(**overrides: Any) -> dict[str, Any]:
    return {
        "tenant_id": "acme", "user_id": "u-1", "kind": "change", "revision": 0,
        "channel_opt_outs": ["sms"], "category_opt_outs": [],
        "quiet_hours": {"start": "22:00", "end": "07:00"}, "timezone": "Europe/Paris",
        "locale": "fr-FR", "preferred_channels": ["email"],
        "ops": [{"op": "opt_out_category", "value": "marketing"},
                {"op": "set_locale", "value": None}],
        "source": "cli", "updated_at": CREATED_AT,
    } | overrides


SAMPLES = {
    "Anomaly": anomaly,
    "Recipient": recipient,
    "NotificationRequest": notification_request,
    "ChannelMessage": channel_message,
    "DeliveryStatus": delivery_status,
    "DeadLetter": dead_letter,
    "IdempotencyRecord": idempotency_record,
    "DomainEvent": domain_event,
    "Rule": rule,
    "Preferences": preferences,
    "TemplateEvent": template_event,
}
TIMESTAMP_FIELDS = {"created_at", "send_at", "not_before", "occurred_at", "failed_at",
                    "accepted_at", "window_start", "window_end", "detected_at", "updated_at"}


@pytest.fixture
def registry() -> SchemaRegistry:
    """A registry of its own, so that registering fixtures does not touch the default."""
    return SchemaRegistry.from_directory(SCHEMA_DIR)


def test_every_schema_file_has_a_sample() -> None:
    names = {json.loads(path.read_text())["name"] for path in SCHEMA_DIR.glob("*.avsc")}
    assert names == set(SAMPLES)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_roundtrip(name: str) -> None:
    record = SAMPLES[name]()
    assert serde(name).decode(serde(name).encode(record)) == record


def test_fields_with_defaults_may_be_left_out() -> None:
    minimal = {
        "tenant_id": "acme",
        "notification_id": "n-0002",
        "idempotency_key": "k",
        "recipients": [{"user_id": "u-1"}],
        "channels": ["push"],
        "created_at": CREATED_AT,
    }
    decoded = serde("NotificationRequest").decode(serde("NotificationRequest").encode(minimal))
    assert decoded == minimal | {
        "priority": "normal",
        "fallback_channels": [],
        "category": "general",
        "recipients": [
            {
                "user_id": "u-1",
                "email": None,
                "phone": None,
                "push_tokens": [],
                "slack": None,
                "webhook_url": None,
                "locale": None,
                "timezone": None,
                "metadata": {},
            }
        ],
        "template": None,
        "title": None,
        "content": None,
        "data": {},
        "metadata": {},
        "send_at": None,
    }


def test_timestamps_are_int_milliseconds_both_ways() -> None:
    decoded = serde("ChannelMessage").decode(serde("ChannelMessage").encode(channel_message()))
    assert decoded["created_at"] == CREATED_AT
    assert type(decoded["created_at"]) is int


def test_serde_is_cached_per_name() -> None:
    assert serde("DeliveryStatus") is serde("DeliveryStatus")
    assert serde("DeliveryStatus").name == "tidings.DeliveryStatus"
    assert AvroSerde("tidings.DeliveryStatus").fingerprint == serde("DeliveryStatus").fingerprint


# --- wire format -------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_single_object_header(name: str) -> None:
    data = serde(name).encode(SAMPLES[name]())
    expected = bytes.fromhex(
        fingerprint(to_parsing_canonical_form(serde(name).schema), "CRC-64-AVRO")
    )
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == expected
    assert int.from_bytes(data[2:10], "little") == serde(name).fingerprint
    assert data[2:10] == serde(name).fingerprint.to_bytes(8, "little")


def test_fingerprint_matches_apache_avro_without_logical_types() -> None:
    # Recipient has no logical type, so Apache avro's Python fingerprint is the spec's.
    apache = avro.schema.parse(json.dumps(serde("Recipient").schema))
    assert apache.fingerprint("CRC-64-AVRO") == serde("Recipient").fingerprint.to_bytes(8, "little")


@pytest.mark.parametrize("name", sorted(set(SAMPLES) - {"Recipient"}))
def test_fingerprint_follows_the_spec_for_logical_types(name: str) -> None:
    # [STRIP] keeps only type, name, fields, symbols, items, values, size, so a
    # timestamp-millis is plain "long" in the Parsing Canonical Form, as Java's
    # SchemaNormalization writes it. Apache avro's Python 1.12 keeps {"type":"long"}
    # for logical types; with the logicalType removed first it agrees with Java.
    schema = serde(name).schema
    canonical = to_parsing_canonical_form(schema)
    assert '"logicalType"' not in canonical and '{"type":"long"}' not in canonical
    without_logical = _without_logical_types(schema)
    assert "timestamp-millis" not in json.dumps(without_logical)
    apache = avro.schema.parse(json.dumps(without_logical))
    assert apache.canonical_form == canonical
    assert apache.fingerprint("CRC-64-AVRO") == serde(name).fingerprint.to_bytes(8, "little")


def _without_logical_types(node: Any) -> Any:
    if isinstance(node, list):
        return [_without_logical_types(item) for item in node]
    if isinstance(node, dict):
        return {k: _without_logical_types(v) for k, v in node.items() if k != "logicalType"}
    return node


def test_self_contained_schema_defines_recipient_inline() -> None:
    schema = serde("NotificationRequest").schema
    recipients = next(f for f in schema["fields"] if f["name"] == "recipients")
    assert recipients["type"]["items"]["name"] == "tidings.Recipient"
    assert recipients["type"]["items"]["fields"][0]["name"] == "user_id"


# --- evolution ---------------------------------------------------------------------------

V2 = schema_path("fixtures/notification_request_v2")


def test_v1_writer_v2_reader_gets_the_default(registry: SchemaRegistry) -> None:
    v1 = AvroSerde("NotificationRequest", registry)
    v2 = AvroSerde("NotificationRequest", registry, schema=V2)
    assert v1.fingerprint != v2.fingerprint
    decoded = v2.decode(v1.encode(notification_request()))
    assert decoded == notification_request() | {"trace_parent": None}


def test_v2_writer_v1_reader_drops_the_new_field(registry: SchemaRegistry) -> None:
    v1 = AvroSerde("NotificationRequest", registry)
    v2 = AvroSerde("NotificationRequest", registry, schema=V2)
    data = v2.encode(notification_request(trace_parent="00-4bf92f3577b34da6-00f067aa0ba902b7-01"))
    assert int.from_bytes(data[2:10], "little") == v2.fingerprint
    assert v1.decode(data) == notification_request()


def test_registering_a_version_does_not_make_it_current(registry: SchemaRegistry) -> None:
    before = AvroSerde("NotificationRequest", registry).fingerprint
    AvroSerde("NotificationRequest", registry, schema=V2)
    assert AvroSerde("NotificationRequest", registry).fingerprint == before
    assert "trace_parent" not in AvroSerde("NotificationRequest", registry).decode(
        AvroSerde("NotificationRequest", registry).encode(notification_request())
    )


def test_v2_is_unknown_to_a_registry_that_never_saw_it(registry: SchemaRegistry) -> None:
    v2_bytes = AvroSerde("NotificationRequest", registry, schema=V2).encode(notification_request())
    fresh = SchemaRegistry.from_directory(SCHEMA_DIR)
    with pytest.raises(SerializationError, match="unknown writer schema fingerprint"):
        AvroSerde("NotificationRequest", fresh).decode(v2_bytes)


# --- interop with Apache avro ------------------------------------------------------------


def _to_datetimes(record: dict[str, Any]) -> dict[str, Any]:
    """The record as Apache avro represents it: timestamp-millis as aware datetimes."""
    out = copy.deepcopy(record)
    for key in TIMESTAMP_FIELDS & out.keys():
        if out[key] is not None:
            out[key] = dt.datetime.fromtimestamp(out[key] / 1000, tz=dt.UTC)
    return out


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_apache_avro_reads_what_we_write(name: str) -> None:
    data = serde(name).encode(SAMPLES[name]())
    reader = avro.io.DatumReader(avro.schema.parse(json.dumps(serde(name).schema)))
    decoded = reader.read(avro.io.BinaryDecoder(io.BytesIO(data[10:])))
    assert decoded == _to_datetimes(SAMPLES[name]())


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_we_read_what_apache_avro_writes(name: str) -> None:
    # Header built by hand: Apache avro's Python package has no single-object encoder.
    # The fingerprint is ours, as Java would compute it (see the test above).
    apache_schema = avro.schema.parse(json.dumps(serde(name).schema))
    body = io.BytesIO()
    avro.io.DatumWriter(apache_schema).write(
        _to_datetimes(SAMPLES[name]()), avro.io.BinaryEncoder(body)
    )
    data = b"\xc3\x01" + serde(name).fingerprint.to_bytes(8, "little") + body.getvalue()
    assert serde(name).decode(data) == SAMPLES[name]()


# --- errors ------------------------------------------------------------------------------


def test_unknown_fingerprint() -> None:
    data = serde("DeliveryStatus").encode(delivery_status())
    forged = data[:2] + bytes(8) + data[10:]
    with pytest.raises(SerializationError, match="unknown writer schema fingerprint"):
        serde("DeliveryStatus").decode(forged)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_truncation_fails(name: str) -> None:
    data = serde(name).encode(SAMPLES[name]())
    for length in range(len(data)):
        with pytest.raises(SerializationError):
            serde(name).decode(data[:length])


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b'{"tenant_id": "acme"}',
        b"\x00\x00\x00\x00\x01" + bytes(20),  # Confluent wire format, not ours
        b"\xc3\x02" + bytes(20),
    ],
)
def test_not_single_object_encoding(data: bytes) -> None:
    with pytest.raises(SerializationError):
        serde("NotificationRequest").decode(data)


@pytest.mark.parametrize(
    "body",
    [
        b"\xff" * 32,  # a varint that never ends
        b"\x01" * 32,  # negative lengths
        b"\x08acme\x7f",  # string length beyond the data
    ],
)
def test_garbage_body(body: bytes) -> None:
    header = serde("NotificationRequest").encode(notification_request())[:10]
    with pytest.raises(SerializationError):
        serde("NotificationRequest").decode(header + body)


def test_trailing_bytes() -> None:
    data = serde("DeliveryStatus").encode(delivery_status())
    with pytest.raises(SerializationError, match="1 bytes after the record"):
        serde("DeliveryStatus").decode(data + b"\x00")


def test_bytes_of_another_record_type() -> None:
    data = serde("DeliveryStatus").encode(delivery_status())
    with pytest.raises(SerializationError):
        serde("NotificationRequest").decode(data)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_random_bodies_never_leak_a_library_error(name: str) -> None:
    rng = random.Random(name)
    valid = serde(name).encode(SAMPLES[name]())
    for _ in range(500):
        if rng.random() < 0.5:
            body = rng.randbytes(rng.randrange(64))
        else:
            flipped = bytearray(valid[10:])
            for _ in range(3):
                flipped[rng.randrange(len(flipped))] = rng.randrange(256)
            body = bytes(flipped)
        try:
            serde(name).decode(valid[:10] + body)
        except SerializationError:
            pass


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({k: v for k, v in notification_request().items() if k != "tenant_id"}, "tenant_id"),
        (notification_request(tenant_id=42), "tenant_id"),
        (notification_request(priority="urgent"), "priority"),
        (notification_request(data=[1]), "data"),
        (notification_request(recipients=[recipient(push_tokens=[7])]), "push_tokens"),
        (notification_request(recipients=[{"email": "x@example.com"}]), "user_id"),
        (notification_request(created_at=dt.datetime.now(dt.UTC)), "created_at"),
        (notification_request(created_at=2**64), "created_at"),
        (notification_request(surprise="field"), "surprise"),
        (["not", "a", "record"], "the record"),
    ],
)
def test_records_that_do_not_fit(record: Any, message: str) -> None:
    with pytest.raises(SerializationError, match=message) as caught:
        serde("NotificationRequest").encode(record)
    assert caught.value.__cause__ is not None


# --- registry ----------------------------------------------------------------------------


def test_unknown_record_name() -> None:
    with pytest.raises(ConfigError, match="NotificationRequest"):
        AvroSerde("Notification")


def test_schema_override_must_define_the_name(registry: SchemaRegistry) -> None:
    with pytest.raises(ConfigError, match="defines 'tidings.NotificationRequest'"):
        AvroSerde("ChannelMessage", registry, schema=V2)


def test_writer_lookup(registry: SchemaRegistry) -> None:
    registered = registry.register(schema_path("delivery_status"))
    assert registered == serde("DeliveryStatus").fingerprint
    assert registry.writer(registered)["name"] == "tidings.DeliveryStatus"
    with pytest.raises(SerializationError):
        registry.writer(0)


def test_default_registry_is_loaded_once() -> None:
    assert default_registry() is default_registry()


def _write(directory: Path, name: str, schema: dict[str, Any]) -> None:
    (directory / f"{name}.avsc").write_text(json.dumps(schema))


def test_references_resolve_whatever_the_file_order(tmp_path: Path) -> None:
    # "a" sorts first but needs "z".
    _write(
        tmp_path,
        "a",
        {"type": "record", "name": "A", "namespace": "t", "fields": [{"name": "z", "type": "Z"}]},
    )
    _write(
        tmp_path,
        "z",
        {"type": "record", "name": "Z", "namespace": "t", "fields": [{"name": "n", "type": "int"}]},
    )
    registry = SchemaRegistry.from_directory(tmp_path)
    codec = AvroSerde("A", registry)
    assert codec.decode(codec.encode({"z": {"n": 1}})) == {"z": {"n": 1}}


def test_unresolvable_reference(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "a",
        {"type": "record", "name": "A", "namespace": "t", "fields": [{"name": "z", "type": "Z"}]},
    )
    with pytest.raises(ConfigError, match="t.Z"):
        SchemaRegistry.from_directory(tmp_path)


@pytest.mark.parametrize(
    "schema",
    [
        "{not json",
        '"string"',
        {"type": "enum", "name": "E", "symbols": ["a"]},
        {"type": "record", "name": "R", "fields": [{"name": "x", "type": "nope"}]},
        {"type": "record", "name": "R", "fields": [{"name": "x", "type": "int", "default": "1"}]},
    ],
)
def test_bad_schema(schema: Any) -> None:
    with pytest.raises(ConfigError):
        SchemaRegistry().register(schema)
