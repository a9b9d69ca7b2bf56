import base64
import email.utils
import time
from typing import Any

import orjson
import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from connectors.ssrf import address_policy
from connectors.verdict import InvalidMessage, Outcome
from connectors.webhook import MAX_PAYLOAD_BYTES, WebhookConfig, build_request, classify

SECRET = "whsec_" + base64.b64encode(b"0" * 32).decode()
CONFIG = WebhookConfig(secret=SECRET)
NOW = 1_700_000_000  # 2023-11-14T22:13:20Z


def make_message(**overrides: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "delivery_id": "dlv_01HF3Z9K2M",
        "notification_id": "ntf_01HF3Z9K2M",
        "tenant_id": "acme",
        "channel": "webhook",
        "category": "billing",
        "priority": "high",
        "recipient": {"user_id": "u-42", "webhook_url": "https://hooks.example.com/tidings"},
        "title": "Invoice paid",
        "body": "Invoice #7 was paid — thank you.",
        "data": {"invoice": "7", "amount": "12.50"},
        "metadata": {"trace": "abc"},
        "attempt": 2,
        "created_at": 1_699_999_999_123,
    }
    message.update(overrides)
    return message


# -- build_request ----------------------------------------------------------------


def test_signature_verifies_with_the_reference_verifier() -> None:
    request = build_request(make_message(), CONFIG, now=int(time.time()))

    payload = Webhook(SECRET).verify(request.content, request.headers)

    assert payload == orjson.loads(request.content)


def test_signature_does_not_verify_with_another_secret() -> None:
    request = build_request(make_message(), CONFIG, now=int(time.time()))
    other = "whsec_" + base64.b64encode(b"1" * 32).decode()

    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(request.content, request.headers)


def test_headers() -> None:
    request = build_request(make_message(), CONFIG, now=NOW)

    assert request.method == "POST"
    assert request.url == "https://hooks.example.com/tidings"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == "Tidings-Webhooks/0.1"
    assert request.headers["webhook-id"] == "dlv_01HF3Z9K2M"
    assert request.headers["webhook-timestamp"] == str(NOW)
    version, signature = request.headers["webhook-signature"].split(",")
    assert version == "v1"
    assert len(base64.b64decode(signature)) == 32  # HMAC-SHA256


def test_each_attempt_is_signed_at_its_own_time_under_the_same_id() -> None:
    first = build_request(make_message(), CONFIG, now=NOW)
    retry = build_request(make_message(), CONFIG, now=NOW + 300)

    assert first.headers["webhook-id"] == retry.headers["webhook-id"]
    assert retry.headers["webhook-timestamp"] == str(NOW + 300)
    assert first.headers["webhook-signature"] != retry.headers["webhook-signature"]


def test_payload() -> None:
    request = build_request(make_message(), CONFIG, now=NOW)

    assert orjson.loads(request.content) == {
        "type": "notification.billing",
        "timestamp": "2023-11-14T22:13:19.123Z",
        "data": {
            "notification_id": "ntf_01HF3Z9K2M",
            "delivery_id": "dlv_01HF3Z9K2M",
            "tenant_id": "acme",
            "user_id": "u-42",
            "category": "billing",
            "priority": "high",
            "title": "Invoice paid",
            "body": "Invoice #7 was paid — thank you.",
            "data": {"invoice": "7", "amount": "12.50"},
            "attempt": 2,
        },
    }
    assert request.content == orjson.dumps(orjson.loads(request.content))  # compact


def test_payload_without_data_map() -> None:
    request = build_request(make_message(data=None), CONFIG, now=NOW)

    assert orjson.loads(request.content)["data"]["data"] == {}


def test_payload_just_under_the_limit_is_sent() -> None:
    overhead = len(build_request(make_message(body=""), CONFIG, now=NOW).content)

    request = build_request(
        make_message(body="x" * (MAX_PAYLOAD_BYTES - overhead)), CONFIG, now=NOW
    )

    assert len(request.content) == MAX_PAYLOAD_BYTES


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"recipient": {"user_id": "u-42"}}, "no webhook_url"),
        ({"recipient": {"user_id": "u-42", "webhook_url": ""}}, "no webhook_url"),
        ({"recipient": {"user_id": "u-42", "webhook_url": None}}, "no webhook_url"),
        ({"recipient": None}, "no webhook_url"),
        ({"recipient": {"webhook_url": "ftp://example.com/hook"}}, "'ftp' is not http"),
        ({"recipient": {"webhook_url": "file:///etc/passwd"}}, "'file' is not http"),
        ({"recipient": {"webhook_url": "hooks.example.com/x"}}, "'' is not http"),
        ({"recipient": {"webhook_url": "https:///no-host"}}, "no host"),
        ({"delivery_id": ""}, "cannot be a webhook-id"),
        ({"delivery_id": "ntf.webhook.u-42"}, "cannot be a webhook-id"),
        ({"delivery_id": "dlv 1"}, "cannot be a webhook-id"),
        ({"delivery_id": "dlv\r\nx-injected: 1"}, "cannot be a webhook-id"),
        ({"body": "x" * MAX_PAYLOAD_BYTES}, f"the limit is {MAX_PAYLOAD_BYTES}"),
    ],
)
def test_invalid_message(overrides: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidMessage, match=reason):
        build_request(make_message(**overrides), CONFIG, now=NOW)


def test_missing_field_is_an_invalid_message() -> None:
    message = make_message()
    del message["title"]

    with pytest.raises(InvalidMessage, match="no 'title' field"):
        build_request(message, CONFIG, now=NOW)


@pytest.mark.parametrize(
    "secret",
    [
        base64.b64encode(b"0" * 32).decode(),  # no whsec_ prefix
        "whsec_" + base64.b64encode(b"0" * 16).decode(),  # under 24 bytes
        "whsec_" + base64.b64encode(b"0" * 65).decode(),  # over 64 bytes
        "whsec_not*base64!",
        "whsec_",
    ],
)
def test_config_rejects_bad_secrets(secret: str) -> None:
    with pytest.raises(ValueError, match="webhook secret"):
        WebhookConfig(secret=secret)


def test_config_repr_hides_the_secret() -> None:
    assert SECRET not in repr(CONFIG)


# -- key rotation -----------------------------------------------------------------

NEW = "whsec_" + base64.b64encode(b"n" * 32).decode()
OLD = "whsec_" + base64.b64encode(b"o" * 24).decode()
ROTATING = WebhookConfig(secrets=(NEW, OLD))


def test_one_signature_per_secret_space_separated() -> None:
    request = build_request(make_message(), ROTATING, now=NOW)

    signatures = request.headers["webhook-signature"].split(" ")
    assert len(signatures) == 2
    assert all(s.startswith("v1,") for s in signatures)
    assert signatures[0] == build_request(make_message(), WebhookConfig(NEW), now=NOW).headers[
        "webhook-signature"
    ]
    assert signatures[1] == build_request(make_message(), WebhookConfig(OLD), now=NOW).headers[
        "webhook-signature"
    ]


@pytest.mark.parametrize("receiver_secret", [NEW, OLD], ids=["new", "old"])
def test_a_receiver_holding_either_secret_verifies(receiver_secret: str) -> None:
    request = build_request(make_message(), ROTATING, now=int(time.time()))

    payload = Webhook(receiver_secret).verify(request.content, request.headers)

    assert payload["data"]["delivery_id"] == "dlv_01HF3Z9K2M"


def test_a_receiver_holding_neither_secret_does_not_verify() -> None:
    request = build_request(make_message(), ROTATING, now=int(time.time()))

    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(request.content, request.headers)


CONFIG_SECRET_ROWS = [
    # kwargs, secret, secrets
    ({"secret": NEW}, NEW, (NEW,)),
    ({"secrets": (NEW, OLD)}, NEW, (NEW, OLD)),
    ({"secret": NEW, "secrets": (NEW, OLD)}, NEW, (NEW, OLD)),
    ({"secrets": [OLD]}, OLD, (OLD,)),  # a list from settings becomes a tuple
]


@pytest.mark.parametrize(("kwargs", "secret", "secrets"), CONFIG_SECRET_ROWS)
def test_config_secret_and_secrets(
    kwargs: dict[str, Any], secret: str, secrets: tuple[str, ...]
) -> None:
    config = WebhookConfig(**kwargs)

    assert config.secret == secret
    assert config.secrets == secrets


def test_config_takes_the_secret_positionally_as_the_deliver_agent_does() -> None:
    config = WebhookConfig(NEW, timeout_s=3.0)

    assert (config.secrets, config.timeout_s) == ((NEW,), 3.0)


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({}, "a webhook secret is needed"),
        ({"secrets": ()}, "a webhook secret is needed"),
        ({"secret": OLD, "secrets": (NEW, OLD)}, "must be the first of secrets"),
        ({"secrets": (NEW, NEW)}, "must not repeat"),
        ({"secrets": (NEW, "whsec_short")}, "webhook secret"),
        ({"secret": NEW, "allowed_networks": ("127.0.0.1/8",)}, "not a CIDR network"),
        ({"secret": NEW, "timeout_s": 0}, "timeout_s"),
    ],
)
def test_config_refuses(kwargs: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        WebhookConfig(**kwargs)


def test_config_repr_hides_every_secret() -> None:
    assert NEW not in repr(ROTATING)
    assert OLD not in repr(ROTATING)


def test_config_guards_by_default_with_no_allow_list() -> None:
    assert CONFIG.ssrf_guard
    assert CONFIG.allowed_networks == ()
    assert CONFIG.timeout_s == 15.0  # Standard Webhooks: 15 to 30 s


def test_config_allow_list_becomes_its_address_policy() -> None:
    config = WebhookConfig(SECRET, allowed_networks=["127.0.0.0/8"])  # type: ignore[arg-type]

    assert config.allowed_networks == ("127.0.0.0/8",)
    assert config.address_policy == address_policy(("127.0.0.0/8",))


# -- classify ---------------------------------------------------------------------

RETRY_AT = email.utils.formatdate(NOW + 120, usegmt=True)  # "Tue, 14 Nov 2023 22:15:20 GMT"
PAST = email.utils.formatdate(NOW - 60, usegmt=True)

CLASSIFY_ROWS = [
    # status, headers, body, outcome, retry_after
    (200, {}, b'{"ok":true}', Outcome.DELIVERED, None),
    (204, {}, b"", Outcome.DELIVERED, None),
    (299, {}, b"", Outcome.DELIVERED, None),
    (301, {"Location": "https://new.example.com/hook"}, b"", Outcome.REJECTED, None),
    (307, {}, b"", Outcome.REJECTED, None),
    (400, {}, b'{"error":"bad payload"}', Outcome.REJECTED, None),
    (401, {}, b"unauthorized", Outcome.REJECTED, None),
    (404, {}, b"<html>not found</html>", Outcome.REJECTED, None),
    (408, {}, b"", Outcome.RETRY, None),
    (410, {}, b"", Outcome.ADDRESS_INVALID, None),
    (413, {}, b"too large", Outcome.REJECTED, None),
    (429, {"Retry-After": "30"}, b"", Outcome.RETRY, 30.0),
    (429, {"retry-after": RETRY_AT}, b"", Outcome.RETRY, 120.0),
    (429, {"Retry-After": PAST}, b"", Outcome.RETRY, 0.0),
    (429, {}, b"", Outcome.RETRY, None),
    (429, {"Retry-After": "soon"}, b"", Outcome.RETRY, None),
    (500, {}, b"boom", Outcome.RETRY, None),
    (502, {}, b"", Outcome.RETRY, None),
    (503, {"Retry-After": "10"}, b"", Outcome.RETRY, 10.0),
    (504, {}, b"", Outcome.RETRY, None),
    (100, {}, b"", Outcome.REJECTED, None),
    (600, {}, b"", Outcome.REJECTED, None),
]


@pytest.mark.parametrize(("status", "headers", "body", "outcome", "retry_after"), CLASSIFY_ROWS)
def test_classify(
    status: int, headers: dict[str, str], body: bytes, outcome: Outcome, retry_after: float | None
) -> None:
    verdict = classify(status, headers, body, now=NOW)

    assert verdict.outcome is outcome
    assert verdict.retry_after == retry_after
    assert verdict.status_code == status


def test_gone_disables_the_endpoint() -> None:
    assert classify(410, {}, b"", now=NOW).reason == "endpoint disabled (410 Gone)"


def test_rejection_reason_quotes_status_and_at_most_200_chars_of_body() -> None:
    verdict = classify(400, {}, b"x" * 1000, now=NOW)

    assert verdict.reason.startswith("HTTP 400: ")
    assert "x" * 200 in verdict.reason
    assert "x" * 201 not in verdict.reason


def test_undecodable_body_still_gives_a_reason() -> None:
    verdict = classify(422, {}, b"\xff\xfe bad bytes", now=NOW)

    assert verdict.outcome is Outcome.REJECTED
    assert "bad bytes" in verdict.reason


def test_redirect_reason_names_the_new_location() -> None:
    verdict = classify(308, {"Location": "https://new.example.com/hook"}, b"", now=NOW)

    assert "redirect not followed" in verdict.reason
    assert "https://new.example.com/hook" in verdict.reason


def test_a_rendered_payload_is_sent_as_data_payload_with_its_locale() -> None:
    message = make_message(payload='{"event": "order.shipped", "eta": "4 mars 2026"}',
                           locale="fr")
    data = orjson.loads(build_request(message, CONFIG, now=NOW).content)["data"]

    assert data["payload"] == {"event": "order.shipped", "eta": "4 mars 2026"}
    assert data["locale"] == "fr"
    assert data["title"] == "Invoice paid"


def test_a_payload_that_is_not_json_is_an_invalid_message() -> None:
    with pytest.raises(InvalidMessage, match="payload is not JSON"):
        build_request(make_message(payload="{oops"), CONFIG, now=NOW)
