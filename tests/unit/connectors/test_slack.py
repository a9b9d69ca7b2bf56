import email.utils
from typing import Any

import orjson
import pytest

from connectors.slack import (
    MAX_BLOCKS,
    MAX_HEADER_CHARS,
    MAX_SECTION_CHARS,
    MAX_TEXT_CHARS,
    Mode,
    SlackAddress,
    SlackConfig,
    build_blocks,
    build_request,
    classify_web_api,
    classify_webhook,
    escape_mrkdwn,
    parse_address,
)
from connectors.verdict import InvalidMessage, Outcome

TOKEN = "xoxb-1234-5678-abcdef"
CONFIG = SlackConfig(bot_token=TOKEN)
HOOK = "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"
NOW = 1_700_000_000


def make_message(slack: str | None = "C0123456789", **overrides: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "delivery_id": "dlv_0123456789abcdef0123456789abcdef",
        "notification_id": "ntf_1",
        "tenant_id": "acme",
        "channel": "slack",
        "category": "billing",
        "priority": "high",
        "recipient": {"user_id": "u-42", "slack": slack, "push_tokens": [], "metadata": {}},
        "title": "Invoice paid",
        "body": "Invoice #7 was paid — thank you.",
        "data": {"invoice": "7"},
        "metadata": {},
        "attempt": 1,
        "created_at": 1_699_999_999_123,
        "not_before": 0,
        "last_error": None,
    }
    message.update(overrides)
    return message


def body_of(message: dict[str, Any], config: SlackConfig = CONFIG) -> dict[str, Any]:
    result: dict[str, Any] = orjson.loads(build_request(message, config).content)
    return result


def section_texts(blocks: list[dict[str, Any]]) -> list[str]:
    return [b["text"]["text"] for b in blocks if b["type"] == "section"]


# -- escaping -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("plain", "plain"),
        ("A & B", "A &amp; B"),
        ("<script>", "&lt;script&gt;"),
        ("<!channel> hi", "&lt;!channel&gt; hi"),  # no mass mention from message content
        ("<https://evil.example|bank>", "&lt;https://evil.example|bank&gt;"),
        ("&amp;", "&amp;amp;"),  # already-escaped text is text too
        ("*bold* _it_ \"q\" 'a'", "*bold* _it_ \"q\" 'a'"),  # only &, <, > are control chars
    ],
)
def test_escape_mrkdwn(raw: str, escaped: str) -> None:
    assert escape_mrkdwn(raw) == escaped


# -- blocks ---------------------------------------------------------------------------


def test_blocks_header_section_context() -> None:
    blocks = build_blocks(make_message(title="Paid <now>", body="A & B"))

    assert blocks == [
        {"type": "header", "text": {"type": "plain_text", "text": "Paid <now>", "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": "A &amp; B"}},
        {
            "type": "context",
            "block_id": "dlv_0123456789abcdef0123456789abcdef",
            "elements": [{"type": "mrkdwn", "text": "billing · ntf_1"}],
        },
    ]


def test_long_title_is_cut_to_the_header_limit_with_an_ellipsis() -> None:
    title = "t" * 200

    header = build_blocks(make_message(title=title))[0]["text"]["text"]

    assert len(header) == MAX_HEADER_CHARS
    assert header == "t" * 149 + "…"


def test_title_of_exactly_the_limit_is_kept_whole_and_on_one_line() -> None:
    assert build_blocks(make_message(title="x" * 150))[0]["text"]["text"] == "x" * 150
    assert build_blocks(make_message(title="a\n b\tc"))[0]["text"]["text"] == "a b c"


@pytest.mark.parametrize("title", [None, "", "  \n"])
def test_no_title_no_header(title: str | None) -> None:
    assert [b["type"] for b in build_blocks(make_message(title=title))] == ["section", "context"]


@pytest.mark.parametrize("body", [None, "", " \n "])
def test_no_body_no_section(body: str | None) -> None:
    assert [b["type"] for b in build_blocks(make_message(body=body))] == ["header", "context"]


def test_long_body_is_split_into_sections_at_line_breaks() -> None:
    lines = [f"line {n:04d} " + "x" * 90 for n in range(100)]  # 100 lines of 100 chars
    blocks = build_blocks(make_message(body="\n".join(lines)))

    sections = section_texts(blocks)
    assert len(sections) == 4
    assert all(len(s) <= MAX_SECTION_CHARS for s in sections)
    assert "\n".join(sections) == "\n".join(lines)  # nothing lost, each cut at a newline


def test_body_without_line_breaks_is_split_at_spaces() -> None:
    body = " ".join(["word"] * 1500)  # 7,499 chars

    sections = section_texts(build_blocks(make_message(body=body)))

    assert [len(s) for s in sections] == [2999, 2999, 1499]  # whole words, within 3,000
    assert " ".join(sections) == body


def test_hard_split_never_cuts_an_entity() -> None:
    body = "x" * 2998 + "&" + "y" * 10  # escaped: the &amp; would straddle position 3000

    sections = section_texts(build_blocks(make_message(body=body)))

    assert sections == ["x" * 2998, "&amp;" + "y" * 10]


def test_largest_body_fits_the_block_limit() -> None:
    body = "x" * (MAX_TEXT_CHARS - len("Invoice paid\n"))

    blocks = build_blocks(make_message(body=body))

    assert len(blocks) <= MAX_BLOCKS
    assert len(blocks) == 2 + -(-len(body) // MAX_SECTION_CHARS)


def test_custom_blocks_from_data_replace_the_built_ones() -> None:
    custom = [{"type": "divider"}, {"type": "section", "text": {"type": "mrkdwn", "text": "*hi*"}}]

    body = body_of(make_message(data={"blocks": orjson.dumps(custom).decode()}))

    assert body["blocks"] == custom
    assert body["text"] == "Invoice paid\nInvoice #7 was paid — thank you."


@pytest.mark.parametrize(
    ("blocks", "reason"),
    [
        ("not json", "not JSON"),
        ('{"type": "divider"}', "non-empty JSON array"),
        ("[]", "non-empty JSON array"),
        ('[{"type": "divider"}, "divider"]', r"data.blocks\[1\] is not an object"),
        ('[{"text": "no type"}]', r"data.blocks\[0\]"),
        ('[{"type": 7}]', r"data.blocks\[0\]"),
        (orjson.dumps([{"type": "divider"}] * 51).decode(), "51 blocks; Slack allows 50"),
    ],
)
def test_invalid_custom_blocks(blocks: str, reason: str) -> None:
    with pytest.raises(InvalidMessage, match=reason):
        build_request(make_message(data={"blocks": blocks}), CONFIG)


def test_fifty_custom_blocks_are_allowed() -> None:
    blocks = orjson.dumps([{"type": "divider"}] * 50).decode()

    assert len(body_of(make_message(data={"blocks": blocks}))["blocks"]) == 50


# -- the text fallback and its limit ---------------------------------------------------


def test_text_fallback_is_title_and_body_escaped() -> None:
    body = body_of(make_message(title="Q&A", body="<b>"))

    assert body["text"] == "Q&amp;A\n&lt;b&gt;"


def test_text_fallback_with_only_one_part() -> None:
    assert body_of(make_message(title=None))["text"] == "Invoice #7 was paid — thank you."
    assert body_of(make_message(body=""))["text"] == "Invoice paid"


def test_text_at_the_limit_is_sent_and_one_more_character_is_refused() -> None:
    at_limit = "x" * (MAX_TEXT_CHARS - len("T\n"))
    assert len(body_of(make_message(title="T", body=at_limit))["text"]) == MAX_TEXT_CHARS

    with pytest.raises(InvalidMessage, match="the limit is 40000"):
        build_request(make_message(title="T", body=at_limit + "x"), CONFIG)


def test_text_limit_counts_escaped_characters() -> None:
    with pytest.raises(InvalidMessage, match="after escaping"):
        build_request(make_message(title="T", body="&" * 10_000), CONFIG)


# -- addresses ------------------------------------------------------------------------

LOCAL = SlackConfig(bot_token=TOKEN, webhook_url_prefixes=("http://127.0.0.1:8091/services/",))


@pytest.mark.parametrize(
    ("slack", "config", "address"),
    [
        ("C0123456789", CONFIG, SlackAddress(Mode.WEB_API, "C0123456789")),
        ("C024BE91L", CONFIG, SlackAddress(Mode.WEB_API, "C024BE91L")),
        ("G0123456789", CONFIG, SlackAddress(Mode.WEB_API, "G0123456789")),
        ("D0123456789", CONFIG, SlackAddress(Mode.WEB_API, "D0123456789")),
        ("U0123456789", CONFIG, SlackAddress(Mode.WEB_API, "U0123456789")),
        ("W0123456789", CONFIG, SlackAddress(Mode.WEB_API, "W0123456789")),
        ("#alerts", CONFIG, SlackAddress(Mode.WEB_API, "#alerts")),
        ("#ops-on_call2", CONFIG, SlackAddress(Mode.WEB_API, "#ops-on_call2")),
        (HOOK, CONFIG, SlackAddress(Mode.WEBHOOK, HOOK)),
        (
            "http://127.0.0.1:8091/services/T0/B0/X",
            LOCAL,
            SlackAddress(Mode.WEBHOOK, "http://127.0.0.1:8091/services/T0/B0/X"),
        ),
    ],
)
def test_address(slack: str, config: SlackConfig, address: SlackAddress) -> None:
    assert parse_address(make_message(slack), config) == address


@pytest.mark.parametrize(
    ("recipient", "reason"),
    [
        ({"user_id": "u"}, "no slack address"),
        ({"slack": None}, "no slack address"),
        ({"slack": ""}, "no slack address"),
        (None, "no slack address"),
        ({"slack": "general"}, "not a channel, user or webhook URL"),
        ({"slack": "c0123456789"}, "not a channel, user or webhook URL"),
        ({"slack": "C01"}, "not a channel, user or webhook URL"),
        ({"slack": "#has space"}, "not a channel, user or webhook URL"),
        ({"slack": "#" + "a" * 81}, "not a channel, user or webhook URL"),
        ({"slack": "C0123456789\r\nX-Injected: 1"}, "not a channel, user or webhook URL"),
        ({"slack": "https://evil.example/services/T0/B0/X"}, "not under an allowed prefix"),
        ({"slack": "https://hooks.slack.com.evil.example/services/x"}, "not under an allowed"),
        ({"slack": "http://hooks.slack.com/services/T0/B0/X"}, "not under an allowed prefix"),
        ({"slack": "https://hooks.slack.com@evil.example/x"}, "not under an allowed prefix"),
        ({"slack": HOOK + "\r\nX: 1"}, "spaces or control characters"),
    ],
)
def test_unusable_address(recipient: dict[str, Any] | None, reason: str) -> None:
    with pytest.raises(InvalidMessage, match=reason):
        build_request(make_message(recipient=recipient), CONFIG)


def test_local_webhook_prefix_does_not_admit_slack_itself() -> None:
    with pytest.raises(InvalidMessage, match="not under an allowed prefix"):
        parse_address(make_message(HOOK), LOCAL)


# -- requests -------------------------------------------------------------------------


def test_web_api_request() -> None:
    request = build_request(make_message(), CONFIG)
    body = orjson.loads(request.content)

    assert request.method == "POST"
    assert request.url == "https://slack.com/api/chat.postMessage"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["content-type"] == "application/json; charset=utf-8"
    assert body["channel"] == "C0123456789"
    assert body["text"] == "Invoice paid\nInvoice #7 was paid — thank you."
    assert [b["type"] for b in body["blocks"]] == ["header", "section", "context"]
    assert body["metadata"] == {
        "event_type": "tidings_notification",
        "event_payload": {
            "delivery_id": "dlv_0123456789abcdef0123456789abcdef",
            "notification_id": "ntf_1",
            "tenant_id": "acme",
            "category": "billing",
        },
    }


def test_base_url_is_configurable_with_or_without_a_trailing_slash() -> None:
    for base in ("http://127.0.0.1:8091", "http://127.0.0.1:8091/"):
        config = SlackConfig(bot_token=TOKEN, base_url=base)
        request = build_request(make_message(), config)
        assert request.url == "http://127.0.0.1:8091/api/chat.postMessage"


def test_webhook_request_carries_no_token_channel_or_metadata() -> None:
    request = build_request(make_message(HOOK), CONFIG)
    body = orjson.loads(request.content)

    assert request.url == HOOK
    assert "authorization" not in request.headers
    assert request.headers["content-type"] == "application/json; charset=utf-8"
    assert set(body) == {"text", "blocks"}
    assert body["blocks"][-1]["block_id"] == "dlv_0123456789abcdef0123456789abcdef"


def test_webhooks_need_no_token_but_channels_do() -> None:
    config = SlackConfig()

    assert build_request(make_message(HOOK), config).url == HOOK
    with pytest.raises(InvalidMessage, match="no Slack bot token"):
        build_request(make_message("C0123456789"), config)


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"title": None, "body": None}, "no title or body"),
        ({"title": " ", "body": "\n"}, "no title or body"),
        ({"delivery_id": ""}, "cannot be a Slack block_id"),
        ({"delivery_id": "dlv 1"}, "cannot be a Slack block_id"),
        ({"delivery_id": "d" * 256}, "cannot be a Slack block_id"),
        ({"title": 7}, "'title' is not a string"),
        ({"data": {"blocks": 7}}, "must be a string"),
    ],
)
def test_invalid_message(overrides: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidMessage, match=reason):
        build_request(make_message(**overrides), CONFIG)


def test_missing_field_is_an_invalid_message() -> None:
    message = make_message()
    del message["category"]

    with pytest.raises(InvalidMessage, match="no 'category' field"):
        build_request(message, CONFIG)


# -- config ---------------------------------------------------------------------------


def test_config_repr_hides_the_token() -> None:
    assert TOKEN not in repr(CONFIG)


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"bot_token": "not-a-token"}, "bot_token"),
        ({"bot_token": "xoxb-1\r\nX: 1"}, "bot_token"),
        ({"base_url": "slack.com"}, "base_url"),
        ({"base_url": "ftp://slack.com"}, "base_url"),
        ({"webhook_url_prefixes": "https://hooks.slack.com/"}, "not a str"),
        ({"webhook_url_prefixes": ("https://hooks.slack.com",)}, "must end with '/'"),
        ({"webhook_url_prefixes": ("https://hooks.slack.com/services",)}, "must end with '/'"),
        ({"webhook_url_prefixes": ("file:///services/",)}, "webhook_url_prefixes"),
        ({"timeout_s": 0}, "timeout_s"),
    ],
)
def test_config_rejects(kwargs: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        SlackConfig(**kwargs)


def test_rotating_tokens_are_accepted() -> None:
    assert SlackConfig(bot_token="xoxe.xoxb-1-abc").bot_token == "xoxe.xoxb-1-abc"


# -- classify: Web API ------------------------------------------------------------------


def api(error: str | None = None, **extra: Any) -> bytes:
    answer: dict[str, Any] = {"ok": error is None, **extra}
    if error is not None:
        answer["error"] = error
    return orjson.dumps(answer)


RETRY_AT = email.utils.formatdate(NOW + 120, usegmt=True)

WEB_API_ROWS = [
    # status, headers, body, outcome, retry_after — chat.postMessage "Errors" and common errors
    (200, {}, api(channel="C1", ts="1.000001"), Outcome.DELIVERED, None),
    (200, {}, api(warning="missing_charset"), Outcome.DELIVERED, None),
    (200, {}, api("not_authed"), Outcome.REJECTED, None),
    (200, {}, api("invalid_auth"), Outcome.REJECTED, None),
    (200, {}, api("account_inactive"), Outcome.REJECTED, None),
    (200, {}, api("token_revoked"), Outcome.REJECTED, None),
    (200, {}, api("token_expired"), Outcome.REJECTED, None),
    (200, {}, api("missing_scope"), Outcome.REJECTED, None),
    (200, {}, api("not_allowed_token_type"), Outcome.REJECTED, None),
    (200, {}, api("no_permission"), Outcome.REJECTED, None),
    (200, {}, api("access_denied"), Outcome.REJECTED, None),
    (200, {}, api("ekm_access_denied"), Outcome.REJECTED, None),
    (200, {}, api("channel_not_found"), Outcome.REJECTED, None),
    (200, {}, api("is_archived"), Outcome.ADDRESS_INVALID, None),
    (200, {}, api("not_in_channel"), Outcome.REJECTED, None),
    (200, {}, api("messages_tab_disabled"), Outcome.REJECTED, None),
    (200, {}, api("restricted_action"), Outcome.REJECTED, None),
    (200, {}, api("restricted_action_read_only_channel"), Outcome.REJECTED, None),
    (200, {}, api("msg_too_long"), Outcome.REJECTED, None),
    (200, {}, api("no_text"), Outcome.REJECTED, None),
    (200, {}, api("invalid_blocks"), Outcome.REJECTED, None),
    (200, {}, api("invalid_blocks_format"), Outcome.REJECTED, None),
    (200, {}, api("msg_blocks_too_long"), Outcome.REJECTED, None),
    (200, {}, api("too_many_attachments"), Outcome.REJECTED, None),
    (200, {}, api("invalid_metadata_format"), Outcome.REJECTED, None),
    (200, {}, api("metadata_too_large"), Outcome.REJECTED, None),
    (200, {}, api("invalid_arguments"), Outcome.REJECTED, None),
    (200, {}, api("invalid_post_type"), Outcome.REJECTED, None),
    (200, {}, api("missing_post_type"), Outcome.REJECTED, None),
    (200, {}, api("invalid_charset"), Outcome.REJECTED, None),
    (200, {}, api("invalid_json"), Outcome.REJECTED, None),
    (200, {}, api("json_not_object"), Outcome.REJECTED, None),
    (200, {}, api("method_deprecated"), Outcome.REJECTED, None),
    (200, {}, api("a_code_slack_adds_later"), Outcome.REJECTED, None),
    (200, {}, api("ratelimited"), Outcome.RETRY, None),
    (200, {"Retry-After": "7"}, api("ratelimited"), Outcome.RETRY, 7.0),
    (200, {}, api("rate_limited"), Outcome.RETRY, None),
    (200, {}, api("message_limit_exceeded"), Outcome.RETRY, None),
    (200, {}, api("fatal_error"), Outcome.RETRY, None),
    (200, {}, api("internal_error"), Outcome.RETRY, None),
    (200, {}, api("service_unavailable"), Outcome.RETRY, None),
    (200, {}, api("request_timeout"), Outcome.RETRY, None),
    (200, {}, api("team_added_to_org"), Outcome.RETRY, None),
    (200, {}, api("org_login_required"), Outcome.RETRY, None),
    # Rate limits: HTTP 429 with Retry-After (seconds, or an HTTP-date)
    (429, {"Retry-After": "3"}, api("ratelimited"), Outcome.RETRY, 3.0),
    (429, {"retry-after": RETRY_AT}, api("ratelimited"), Outcome.RETRY, 120.0),
    (429, {}, b"", Outcome.RETRY, None),
    # Slack's own trouble, whatever the body
    (500, {}, b"<html>oops</html>", Outcome.RETRY, None),
    (502, {}, b"", Outcome.RETRY, None),
    (503, {"Retry-After": "30"}, api("service_unavailable"), Outcome.RETRY, 30.0),
    (504, {}, b"", Outcome.RETRY, None),
    # Not Slack's answer (a proxy, a wrong base_url)
    (200, {}, b"<html>login</html>", Outcome.REJECTED, None),
    (200, {}, b'["ok"]', Outcome.REJECTED, None),
    (200, {}, b'{"ok": false}', Outcome.REJECTED, None),
    (301, {"Location": "https://x.example"}, b"", Outcome.REJECTED, None),
    (404, {}, b"Not Found", Outcome.REJECTED, None),
    (400, {}, api("invalid_arguments"), Outcome.REJECTED, None),
]


@pytest.mark.parametrize(("status", "headers", "body", "outcome", "retry_after"), WEB_API_ROWS)
def test_classify_web_api(
    status: int, headers: dict[str, str], body: bytes, outcome: Outcome, retry_after: float | None
) -> None:
    verdict = classify_web_api(status, headers, body, now=NOW)

    assert verdict.outcome is outcome
    assert verdict.retry_after == retry_after
    assert verdict.status_code == status


def test_web_api_reason_names_the_error_code() -> None:
    verdict = classify_web_api(200, {}, api("channel_not_found"))

    assert verdict.reason.startswith("channel_not_found: ")


def test_web_api_reason_quotes_slacks_block_messages() -> None:
    body = api(
        "invalid_blocks",
        response_metadata={
            "messages": ["[ERROR] must be less than 151 characters [json-pointer:/blocks/0/text]"]
        },
    )

    verdict = classify_web_api(200, {}, body)

    assert "must be less than 151 characters" in verdict.reason


def test_web_api_reason_is_bounded() -> None:
    verdict = classify_web_api(200, {}, b"x" * 10_000)

    assert len(verdict.reason) < 300


# -- classify: incoming webhooks ---------------------------------------------------------

WEBHOOK_ROWS = [
    # status, headers, body, outcome, retry_after — Slack "Handling errors" for webhooks
    (200, {}, b"ok", Outcome.DELIVERED, None),
    (204, {}, b"", Outcome.DELIVERED, None),
    (400, {}, b"invalid_payload", Outcome.REJECTED, None),
    (400, {}, b"no_text", Outcome.REJECTED, None),
    (400, {}, b"invalid_blocks", Outcome.REJECTED, None),
    (400, {}, b"too_many_attachments", Outcome.REJECTED, None),
    (400, {}, b"user_not_found", Outcome.REJECTED, None),
    (403, {}, b"action_prohibited", Outcome.REJECTED, None),
    (403, {}, b"posting_to_general_channel_denied", Outcome.REJECTED, None),
    (403, {}, b"invalid_token", Outcome.ADDRESS_INVALID, None),
    (404, {}, b"channel_not_found", Outcome.ADDRESS_INVALID, None),
    (404, {}, b"no_service", Outcome.ADDRESS_INVALID, None),
    (400, {}, b"no_service_id", Outcome.ADDRESS_INVALID, None),
    (400, {}, b"no_team", Outcome.ADDRESS_INVALID, None),
    (410, {}, b"channel_is_archived", Outcome.ADDRESS_INVALID, None),
    (410, {}, b"team_disabled", Outcome.ADDRESS_INVALID, None),
    (500, {}, b"rollup_error", Outcome.RETRY, None),
    (429, {"Retry-After": "3"}, b"rate_limited", Outcome.RETRY, 3.0),
    (429, {}, b"", Outcome.RETRY, None),
    # codes not listed: the status class decides
    (400, {}, b"something_new", Outcome.REJECTED, None),
    (410, {}, b"", Outcome.ADDRESS_INVALID, None),
    (302, {}, b"", Outcome.REJECTED, None),
    (502, {}, b"<html>bad gateway</html>", Outcome.RETRY, None),
    (503, {"Retry-After": "10"}, b"", Outcome.RETRY, 10.0),
]


@pytest.mark.parametrize(("status", "headers", "body", "outcome", "retry_after"), WEBHOOK_ROWS)
def test_classify_webhook(
    status: int, headers: dict[str, str], body: bytes, outcome: Outcome, retry_after: float | None
) -> None:
    verdict = classify_webhook(status, headers, body, now=NOW)

    assert verdict.outcome is outcome
    assert verdict.retry_after == retry_after
    assert verdict.status_code == status


def test_webhook_reason_quotes_status_and_code() -> None:
    verdict = classify_webhook(410, {}, b"channel_is_archived\n")

    assert verdict.reason == "HTTP 410: channel_is_archived: the webhook's channel is archived"


def test_rendered_template_blocks_come_before_blocks_in_data() -> None:
    rendered = [{"type": "header", "text": {"type": "plain_text", "text": "Bestellung"}}]
    from_data = [{"type": "divider"}]

    body = body_of(make_message(blocks=orjson.dumps(rendered).decode(),
                                data={"blocks": orjson.dumps(from_data).decode()}))

    assert body["blocks"] == rendered


def test_rendered_blocks_that_are_not_an_array_are_an_invalid_message() -> None:
    with pytest.raises(InvalidMessage, match=r"^blocks must be a non-empty JSON array"):
        body_of(make_message(blocks='{"type": "divider"}'))
