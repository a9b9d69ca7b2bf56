import asyncio
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from connectors.emulators.slack import SlackEmulator
from connectors.slack import SlackChannel, SlackConfig
from connectors.verdict import Outcome, Verdict

TOKEN = "xoxb-test-token"
CHANNEL = "C0123456789"
HOOK = "/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"
REPO_ROOT = Path(__file__).resolve().parents[3]


def make_message(slack: str, delivery_id: str = "dlv_1", **overrides: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "delivery_id": delivery_id,
        "notification_id": "ntf_1",
        "tenant_id": "acme",
        "channel": "slack",
        "category": "billing",
        "priority": "normal",
        "recipient": {"user_id": "u-42", "slack": slack},
        "title": "Invoice paid",
        "body": "Invoice #7 was paid <today> & on time.",
        "data": {},
        "metadata": {},
        "attempt": 1,
        "created_at": 1_699_999_999_123,
        "not_before": 0,
        "last_error": None,
    }
    message.update(overrides)
    return message


@pytest.fixture
async def slack() -> AsyncIterator[SlackEmulator]:
    emulator = SlackEmulator(
        bot_tokens=[TOKEN],
        channels={CHANNEL: "alerts", "C0000000002": "billing"},
        users=["U0123456789"],
        webhooks={HOOK: CHANNEL},
    )
    async with emulator:
        yield emulator


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def config_for(slack: SlackEmulator, token: str = TOKEN) -> SlackConfig:
    return SlackConfig(
        bot_token=token, base_url=slack.url, webhook_url_prefixes=(slack.url + "/services/",)
    )


@pytest.fixture
def channel(slack: SlackEmulator, client: httpx.AsyncClient) -> SlackChannel:
    return SlackChannel(config_for(slack), client)


async def post_message(
    client: httpx.AsyncClient, slack: SlackEmulator, payload: Any, **headers: str
) -> dict[str, Any]:
    response = await client.post(
        slack.url + "/api/chat.postMessage",
        content=orjson.dumps(payload),
        headers={
            "Authorization": f"Bearer {TOKEN}",
            "Content-Type": "application/json; charset=utf-8",
        }
        | headers,
    )
    assert response.status_code == 200
    answer: dict[str, Any] = response.json()
    return answer


# -- the channel against the emulator ------------------------------------------------


async def test_web_api_delivery_with_blocks(slack: SlackEmulator, channel: SlackChannel) -> None:
    verdict = await channel.send(make_message(CHANNEL))

    assert verdict == Verdict.delivered(status_code=200)
    [posted] = await slack.wait_for(1, timeout=5)
    assert posted.via == "web_api"
    assert posted.channel == CHANNEL
    assert posted.text == "Invoice paid\nInvoice #7 was paid &lt;today&gt; &amp; on time."
    assert [b["type"] for b in posted.blocks] == ["header", "section", "context"]
    assert posted.blocks[1]["text"]["text"] == "Invoice #7 was paid &lt;today&gt; &amp; on time."
    assert posted.metadata is not None
    assert posted.metadata["event_payload"]["delivery_id"] == "dlv_1"
    assert slack.by_delivery_id() == {"dlv_1": 1}


@pytest.mark.parametrize(
    ("slack_address", "landed_in"),
    [("#alerts", CHANNEL), ("C0000000002", "C0000000002"), ("U0123456789", "D0123456789")],
)
async def test_names_and_users_resolve(
    slack: SlackEmulator, channel: SlackChannel, slack_address: str, landed_in: str
) -> None:
    assert (await channel.send(make_message(slack_address))).outcome is Outcome.DELIVERED
    assert slack.accepted[0].channel == landed_in


async def test_incoming_webhook_delivery(slack: SlackEmulator, channel: SlackChannel) -> None:
    verdict = await channel.send(make_message(slack.url + HOOK, "dlv_hook"))

    assert verdict == Verdict.delivered(status_code=200)
    [posted] = await slack.wait_for(1, timeout=5)
    assert posted.via == "webhook"
    assert posted.hook == HOOK
    assert posted.channel == CHANNEL
    assert posted.metadata is None
    assert posted.delivery_id == "dlv_hook"  # from the context block's block_id


async def test_custom_blocks_are_posted(slack: SlackEmulator, channel: SlackChannel) -> None:
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*Paid*"}}]
    message = make_message(CHANNEL, data={"blocks": orjson.dumps(blocks).decode()})

    assert (await channel.send(message)).outcome is Outcome.DELIVERED
    assert slack.accepted[0].blocks == blocks


async def test_bad_token_is_rejected(slack: SlackEmulator, client: httpx.AsyncClient) -> None:
    channel = SlackChannel(config_for(slack, token="xoxb-wrong"), client)

    verdict = await channel.send(make_message(CHANNEL))

    assert verdict.outcome is Outcome.REJECTED
    assert verdict.reason.startswith("invalid_auth")
    assert slack.accepted == []


async def test_429_with_retry_after_then_delivered(
    slack: SlackEmulator, channel: SlackChannel
) -> None:
    slack.fail_next(CHANNEL, [429], retry_after=3)
    message = make_message(CHANNEL)

    first, second = [await channel.send(message) for _ in range(2)]

    assert first.outcome is Outcome.RETRY
    assert first.retry_after == 3.0
    assert first.status_code == 429
    assert second.outcome is Outcome.DELIVERED
    assert slack.by_delivery_id() == {"dlv_1": 1}


async def test_unknown_channel_is_rejected(slack: SlackEmulator, channel: SlackChannel) -> None:
    verdict = await channel.send(make_message("C9999999999"))

    assert verdict.outcome is Outcome.REJECTED
    assert verdict.reason.startswith("channel_not_found")


@pytest.mark.parametrize(
    ("failure", "outcome"),
    [
        ("ratelimited", Outcome.RETRY),
        ("internal_error", Outcome.RETRY),
        ("fatal_error", Outcome.RETRY),
        ("channel_not_found", Outcome.REJECTED),
        ("not_in_channel", Outcome.REJECTED),
        ("token_revoked", Outcome.REJECTED),
        ("is_archived", Outcome.ADDRESS_INVALID),
        (500, Outcome.RETRY),
        (503, Outcome.RETRY),
    ],
)
async def test_scripted_web_api_failures(
    slack: SlackEmulator, channel: SlackChannel, failure: str | int, outcome: Outcome
) -> None:
    slack.fail_next("#alerts", [failure])  # scripted by name, posted by id

    verdicts = [await channel.send(make_message(CHANNEL)) for _ in range(2)]

    assert [v.outcome for v in verdicts] == [outcome, Outcome.DELIVERED]


async def test_archived_channel_and_its_webhook(
    slack: SlackEmulator, channel: SlackChannel
) -> None:
    slack.archive("alerts")

    api = await channel.send(make_message(CHANNEL))
    hook = await channel.send(make_message(slack.url + HOOK))

    assert api.outcome is Outcome.ADDRESS_INVALID
    assert api.reason.startswith("is_archived")
    assert (hook.outcome, hook.status_code) == (Outcome.ADDRESS_INVALID, 410)


async def test_unknown_webhook_is_an_invalid_address(
    slack: SlackEmulator, channel: SlackChannel
) -> None:
    verdict = await channel.send(make_message(slack.url + "/services/T0/B0/nope"))

    assert verdict.outcome is Outcome.ADDRESS_INVALID
    assert verdict.status_code == 404
    assert "no_service" in verdict.reason


@pytest.mark.parametrize(
    ("failure", "status", "outcome", "retry_after"),
    [
        (429, 429, Outcome.RETRY, 2.0),
        (500, 500, Outcome.RETRY, None),
        ("rollup_error", 500, Outcome.RETRY, None),
        ("invalid_payload", 400, Outcome.REJECTED, None),
        ("action_prohibited", 403, Outcome.REJECTED, None),
        ("channel_not_found", 404, Outcome.ADDRESS_INVALID, None),
        ("channel_is_archived", 410, Outcome.ADDRESS_INVALID, None),
    ],
)
async def test_scripted_webhook_failures(
    slack: SlackEmulator,
    channel: SlackChannel,
    failure: str | int,
    status: int,
    outcome: Outcome,
    retry_after: float | None,
) -> None:
    slack.fail_next(slack.url + HOOK, [failure], retry_after=2)
    message = make_message(slack.url + HOOK)

    first, second = [await channel.send(message) for _ in range(2)]

    assert (first.outcome, first.status_code, first.retry_after) == (outcome, status, retry_after)
    assert second.outcome is Outcome.DELIVERED


async def test_fail_next_only_touches_its_target(
    slack: SlackEmulator, channel: SlackChannel
) -> None:
    slack.fail_next("C0000000002", [500])

    assert (await channel.send(make_message(CHANNEL))).outcome is Outcome.DELIVERED


async def test_unreachable_slack_is_retried(client: httpx.AsyncClient) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    channel = SlackChannel(SlackConfig(bot_token=TOKEN, base_url=f"http://127.0.0.1:{port}"))
    try:
        verdict = await channel.send(make_message(CHANNEL))
    finally:
        await channel.aclose()

    assert verdict.outcome is Outcome.RETRY
    assert "ConnectError" in verdict.reason


async def test_channel_closes_only_its_own_client(
    slack: SlackEmulator, client: httpx.AsyncClient
) -> None:
    owned = SlackChannel(config_for(slack))
    assert (await owned.send(make_message(CHANNEL))).outcome is Outcome.DELIVERED
    await owned.aclose()

    shared = SlackChannel(config_for(slack), client)
    await shared.aclose()
    assert not client.is_closed


# -- what the emulator checks, as Slack does -------------------------------------------


async def test_answer_has_slacks_shape(slack: SlackEmulator, client: httpx.AsyncClient) -> None:
    answer = await post_message(client, slack, {"channel": "#alerts", "text": "hi"})

    assert answer["ok"] is True
    assert answer["channel"] == CHANNEL
    assert answer["message"]["text"] == "hi"
    assert answer["ts"] == answer["message"]["ts"]
    assert "warning" not in answer


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        ({"Authorization": ""}, "not_authed"),
        ({"Authorization": "Bearer xoxb-other"}, "invalid_auth"),
        ({"Authorization": f"Basic {TOKEN}"}, "invalid_auth"),
        ({"Content-Type": "application/x-www-form-urlencoded"}, "invalid_post_type"),
        ({"Content-Type": "application/json; charset=koi8-r"}, "invalid_charset"),
    ],
)
async def test_transport_and_auth_errors(
    slack: SlackEmulator, client: httpx.AsyncClient, headers: dict[str, str], error: str
) -> None:
    answer = await post_message(client, slack, {"channel": CHANNEL, "text": "hi"}, **headers)

    assert answer == {"ok": False, "error": error}
    assert slack.accepted == []


async def test_body_errors(slack: SlackEmulator, client: httpx.AsyncClient) -> None:
    url = slack.url + "/api/chat.postMessage"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    json = {"Content-Type": "application/json"}

    no_type = await client.post(url, content=b'{"text": "x"}', headers=auth)
    bad_json = await client.post(url, content=b"{nope", headers=auth | json)
    array = await client.post(url, content=b"[]", headers=auth | json)

    assert no_type.json()["error"] == "missing_post_type"
    assert bad_json.json()["error"] == "invalid_json"
    assert array.json()["error"] == "json_not_object"


async def test_missing_charset_is_a_warning(
    slack: SlackEmulator, client: httpx.AsyncClient
) -> None:
    answer = await post_message(
        client, slack, {"channel": CHANNEL, "text": "hi"}, **{"Content-Type": "application/json"}
    )

    assert answer["ok"] is True
    assert answer["warning"] == "missing_charset"
    assert answer["response_metadata"]["warnings"] == ["missing_charset"]


def header(text: str) -> dict[str, Any]:
    return {"type": "header", "text": {"type": "plain_text", "text": text}}


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


@pytest.mark.parametrize(
    ("payload", "error", "detail"),
    [
        ({"channel": CHANNEL}, "no_text", None),
        ({"channel": CHANNEL, "text": "  "}, "no_text", None),
        ({"channel": CHANNEL, "blocks": []}, "no_text", None),
        ({"channel": CHANNEL, "text": "x", "blocks": "[]"}, "invalid_blocks_format", None),
        ({"channel": CHANNEL, "blocks": [header("h" * 151)]}, "invalid_blocks", "151"),
        ({"channel": CHANNEL, "blocks": [section("s" * 3001)]}, "invalid_blocks", "3001"),
        ({"channel": CHANNEL, "blocks": [{"type": "divider"}] * 51}, "invalid_blocks", "50"),
        ({"channel": CHANNEL, "blocks": [{"type": "banner"}]}, "invalid_blocks", "banner"),
        (
            {"channel": CHANNEL, "blocks": [{"type": "header", "text": {"type": "mrkdwn"}}]},
            "invalid_blocks",
            "plain_text",
        ),
        ({"channel": CHANNEL, "blocks": [{"type": "section"}]}, "invalid_blocks", "text or"),
        (
            {"channel": CHANNEL, "blocks": [{"type": "context", "elements": []}]},
            "invalid_blocks",
            "elements",
        ),
        (
            {"channel": CHANNEL, "blocks": [section("a") | {"block_id": "x"}] * 2},
            "invalid_blocks",
            "duplicate block_id",
        ),
        (
            {"channel": CHANNEL, "text": "x", "metadata": {"event_type": 1}},
            "invalid_metadata_format",
            None,
        ),
        ({"text": "x"}, "channel_not_found", None),
    ],
)
async def test_message_errors(
    slack: SlackEmulator,
    client: httpx.AsyncClient,
    payload: dict[str, Any],
    error: str,
    detail: str | None,
) -> None:
    answer = await post_message(client, slack, payload)

    assert answer["ok"] is False
    assert answer["error"] == error
    if detail is not None:
        assert detail in " ".join(answer["errors"])
        assert answer["response_metadata"]["messages"][0].startswith("[ERROR] ")
    assert slack.accepted == []


async def test_limits_are_inclusive(slack: SlackEmulator, client: httpx.AsyncClient) -> None:
    blocks = [header("h" * 150), section("s" * 3000)] + [{"type": "divider"}] * 48

    answer = await post_message(client, slack, {"channel": CHANNEL, "blocks": blocks})

    assert answer["ok"] is True


async def test_overlong_text_is_truncated_as_slack_does(
    slack: SlackEmulator, client: httpx.AsyncClient
) -> None:
    await post_message(client, slack, {"channel": CHANNEL, "text": "x" * 40_001})

    assert len(slack.accepted[0].text) == 40_000


@pytest.mark.parametrize(
    ("content", "content_type", "status", "body"),
    [
        (b'{"text": "hi"}', "application/json", 200, "ok"),
        (b"payload=%7B%22text%22%3A%22hi%22%7D", "application/x-www-form-urlencoded", 200, "ok"),
        (b"{nope", "application/json", 400, "invalid_payload"),
        (b'{"username": "bot"}', "application/json", 400, "no_text"),
        (b'{"blocks": [{"type": "banner"}]}', "application/json", 400, "invalid_blocks"),
    ],
)
async def test_webhook_checks(
    slack: SlackEmulator,
    client: httpx.AsyncClient,
    content: bytes,
    content_type: str,
    status: int,
    body: str,
) -> None:
    response = await client.post(
        slack.url + HOOK, content=content, headers={"Content-Type": content_type}
    )

    assert (response.status_code, response.text) == (status, body)
    assert len(slack.accepted) == (1 if status == 200 else 0)


async def test_every_answer_is_recorded(slack: SlackEmulator, channel: SlackChannel) -> None:
    slack.fail_next(CHANNEL, ["internal_error"])
    await channel.send(make_message(CHANNEL))
    await channel.send(make_message(CHANNEL))

    assert [(a.status, a.error) for a in slack.answers] == [(200, "internal_error"), (200, None)]


async def test_wait_for_wakes_on_concurrent_messages(
    slack: SlackEmulator, channel: SlackChannel
) -> None:
    waiter = asyncio.create_task(slack.wait_for(3, timeout=5))
    await asyncio.sleep(0)
    await asyncio.gather(*(channel.send(make_message(CHANNEL, f"dlv_{n}")) for n in range(3)))

    assert len(await waiter) == 3
    assert len({p.ts for p in slack.accepted}) == 3


async def test_wait_for_times_out_saying_how_many_arrived(slack: SlackEmulator) -> None:
    with pytest.raises(TimeoutError, match="0 of 1"):
        await slack.wait_for(1, timeout=0.05)


async def test_url_needs_a_started_emulator() -> None:
    emulator = SlackEmulator(bot_tokens=[TOKEN], channels={CHANNEL: "alerts"})
    with pytest.raises(RuntimeError):
        _ = emulator.url
    await emulator.start()
    await emulator.stop()
    with pytest.raises(RuntimeError):
        _ = emulator.url


# -- command line -----------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_command_line_prints_messages_and_stops_cleanly(
    client: httpx.AsyncClient, signum: signal.Signals, run_emulator: Callable[..., Any]
) -> None:
    async with run_emulator("slack", "--token", TOKEN, timeout=10) as cli:
        url = cli.banner.rsplit(" ", 1)[-1].strip()
        assert url.startswith("http://127.0.0.1:"), cli.banner
        config = SlackConfig(
            bot_token=TOKEN, base_url=url, webhook_url_prefixes=(url + "/services/",)
        )
        channel = SlackChannel(config, client)

        api = await channel.send(make_message("#general", "dlv_cli"))
        api_line = await cli.readline()
        hook = await channel.send(make_message(url + HOOK, "dlv_cli_hook"))
        hook_line = await cli.readline()

        await cli.stop(signum)

    assert (api.outcome, hook.outcome) == (Outcome.DELIVERED, Outcome.DELIVERED)
    assert api_line.startswith("web_api channel=C0123456789 ")
    assert "delivery_id=dlv_cli " in api_line
    assert "Invoice paid" in api_line
    assert hook_line.startswith("webhook channel=C0123456789 ")
    assert "delivery_id=dlv_cli_hook " in hook_line


def test_command_line_needs_a_token() -> None:
    import subprocess

    result = subprocess.run(
        [sys.executable, "-m", "connectors.emulators.slack", "--port", "0"],
        cwd=REPO_ROOT,
        capture_output=True,
        env={"PATH": "/usr/bin:/bin"},
        timeout=30,
    )

    assert result.returncode == 2
    assert b"--token or TIDINGS_SLACK_BOT_TOKEN is required" in result.stderr
