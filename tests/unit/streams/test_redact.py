"""Masking of personal data and secrets in log records: one row per shape."""

from __future__ import annotations

import pytest

from streams.redact import MASK, redact_processor, redact_text, redact_value

JWT = ("eyJhbGciOiJFUzI1NiIsImtpZCI6IkFCQzEyMyJ9.eyJpc3MiOiJERUYxMjMiLCJpYXQiOjE3MDB9"
       ".MEUCIQDx3zz4AYR8ghGZgdD2dLrDtAYnNcJ6yV5Qz2u7wPxCBw")
FCM_TOKEN = "dGVzdC1kZXZpY2UtMDAx:APA91b" + "H" * 140

ROWS = [
    # (text, what must be gone, what must remain)
    ("sent to ann.lee+orders@example.com", "ann.lee+orders", "***@example.com"),
    ("550 5.1.1 <bob@mail.example.org>: Recipient address rejected", "bob@",
     "***@mail.example.org"),
    ("The 'To' number +14155550123 is not a valid phone number.", "4155550123", "+***23"),
    ("call +44 20 7946 0958 now", "7946", "+***58"),
    ("token fcm:device-secret-123 unregistered", "device-secret-123", "fcm:[masked]"),
    ("apns:" + "ab" * 32 + " gone", "ab" * 32, "apns:[masked]"),
    ("device " + "0f" * 32 + " is BadDeviceToken", "0f" * 32, "[device token masked]"),
    (f"FCM said UNREGISTERED for {FCM_TOKEN}", "APA91b", "[device token masked]"),
    ("secret whsec_dGlkaW5ncy10ZXN0LXNpZ25pbmcta2V5LTAx= rotated", "dGlkaW5ncy10", "whsec_"),
    ("webhook-signature: v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=", "K5oZfzN95Z9", "v1,"),
    ("slack token xoxb-1234-5678-abcdefghijkl", "1234-5678-abcdef", "xoxb-[masked]"),
    ("https://hooks.slack.com/services/T0001/B0002/XXXXsecretXXXX failed",
     "XXXXsecretXXXX", "hooks.slack.com/services/[masked]"),
    ("Authorization: Bearer ya29.a0AfH6SMBx-secret", "ya29.a0AfH6SMBx-secret", "Bearer [masked]"),
    ("Authorization: Basic QUMxMjM6c2VjcmV0", "QUMxMjM6c2VjcmV0", "Basic [masked]"),
    (f"provider token {JWT}", "eyJhbGciOiJFUzI1NiIs", "[jwt masked]"),
    ("GET https://api.example.com/x?api_key=sk_live_123&page=2", "sk_live_123", "page=2"),
    ("connect smtp://tidings:s3cret@mail.example.com:587", "s3cret", "smtp://[masked]@"),
    ("-----BEGIN PRIVATE KEY-----\nMIGTAgEAMBMG\n-----END PRIVATE KEY-----",
     "MIGTAgEAMBMG", "[private key masked]"),
]


@pytest.mark.parametrize(("text", "gone", "kept"), ROWS)
def test_shapes_are_masked_inside_free_text(text: str, gone: str, kept: str) -> None:
    masked = redact_text(text)
    assert gone not in masked
    assert kept in masked


@pytest.mark.parametrize("text", [
    "delivered ntf_5be0bfb8a1 dlv_1ff7c510 to acme/u1 in 12 ms",
    "offset 1700000000000 partition 3 of tidings.channel.webhook",
    "dead-lettered t1a2.channel.email:0@17 at deliver: Rejected: 400",
    "2026-12-01T21:27:05.371088Z retry in 1500 ms (attempt 2)",
])
def test_ids_offsets_and_times_are_left_alone(text: str) -> None:
    assert redact_text(text) == text


def test_sensitive_field_names_are_masked_whole_at_any_depth() -> None:
    value = {
        "recipient": {"user_id": "u1", "email": "x@y.z"},
        "nested": {"phone": "+14155550123", "push_tokens": ["fcm:a"], "user_id": "u2",
                   "auth_token": "abc", "smtp_password": "p", "delivery_id": "dlv_1"},
        "list": ["ann@example.com", {"webhook_url": "https://h.example/hook?sig=1"}],
    }
    masked = redact_value(value)
    assert masked["recipient"] == MASK
    assert masked["nested"] == {"phone": MASK, "push_tokens": MASK, "user_id": "u2",
                                "auth_token": MASK, "smtp_password": MASK,
                                "delivery_id": "dlv_1"}
    assert masked["list"] == ["***@example.com", {"webhook_url": MASK}]


def test_processor_masks_event_exception_and_fields_but_keeps_ids() -> None:
    event = {
        "event": "could not deliver to ann@example.com",
        "exception": "Traceback ...\nValueError: phone '+14155550123' is invalid",
        "email": "ann@example.com",
        "notification_id": "ntf_1",
        "tenant_id": "acme",
        "delivery_id": "dlv_1",
        "attempt": 2,
        "error": ValueError("bad token fcm:abc123"),
        "_record": object(),
    }
    out = redact_processor(None, "warning", dict(event))
    assert out["event"] == "could not deliver to ***@example.com"
    assert "4155550123" not in out["exception"] and "+***23" in out["exception"]
    assert out["email"] == MASK
    assert out["error"] == "ValueError: bad token fcm:[masked]"
    assert (out["notification_id"], out["tenant_id"], out["delivery_id"], out["attempt"]) == (
        "ntf_1", "acme", "dlv_1", 2)
    assert out["_record"] is event["_record"]
