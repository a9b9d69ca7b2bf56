"""Slack, played locally: ``chat.postMessage`` and incoming webhooks on a real HTTP server.

It checks what Slack checks and answers the way Slack does: the Web API with HTTP 200 and
``{"ok": false, "error": …}`` (bearer token, JSON content type, channel, text or blocks,
Block Kit limits, metadata shape), incoming webhooks with an HTTP status and a plain-text
code (known hook path, payload, text or blocks). It records what it accepted and can be
told to fail the way Slack does, then succeed::

    async with SlackEmulator(bot_tokens=["xoxb-test"], channels={"C0123456789": "alerts"},
                             webhooks={"/services/T0/B0/XYZ": "C0123456789"}) as slack:
        slack.fail_next("C0123456789", [429, "internal_error"], retry_after=3)
        ...  # SlackConfig(bot_token="xoxb-test", base_url=slack.url,
             #             webhook_url_prefixes=(slack.url + "/services/",))
        [posted] = await slack.wait_for(1, timeout=5)

Only JSON bodies are spoken on the Web API (Slack also takes form posts; Tidings does not
send them, so the emulator answers ``invalid_post_type``). Run it on its own (one line per
accepted message, stops on Ctrl-C or SIGTERM)::

    python -m connectors.emulators.slack --port 8091 --token xoxb-local \\
        --channel C0123456789=alerts --webhook /services/T0/B0/XYZ=C0123456789
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from aiohttp import web

from connectors.emulators._server import HttpEmulator, serve_until_signalled, wait_until

# Slack "Truncating content": text beyond 40,000 characters is cut, not refused.
MAX_TEXT_CHARS = 40_000
# Status an incoming webhook answers with for each code (Slack, "Handling errors").
WEBHOOK_ERROR_STATUS: dict[str, int] = {
    "invalid_payload": 400,
    "no_text": 400,
    "invalid_blocks": 400,
    "invalid_blocks_format": 400,
    "too_many_attachments": 400,
    "user_not_found": 400,
    "no_service_id": 400,
    "no_team": 400,
    "action_prohibited": 403,
    "posting_to_general_channel_denied": 403,
    "invalid_token": 403,
    "channel_not_found": 404,
    "no_service": 404,
    "channel_is_archived": 410,
    "team_disabled": 410,
    "rollup_error": 500,
}
_BOT_USER, _BOT_ID = "U0TIDINGS1", "B0TIDINGS1"

Failure = str | int
"""A scripted answer: a Slack error code, or an HTTP status (429 carries Retry-After)."""


@dataclass(frozen=True, slots=True)
class Posted:
    """One message the emulator accepted."""

    via: str
    """``web_api`` or ``webhook``."""
    channel: str
    """The conversation id it landed in."""
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    metadata: dict[str, Any] | None
    hook: str | None
    """The webhook path, for ``via == "webhook"``."""
    received_at: float

    @property
    def delivery_id(self) -> str | None:
        """Tidings' delivery id: metadata ``event_payload.delivery_id``, else a block_id."""
        payload = (self.metadata or {}).get("event_payload")
        if isinstance(payload, dict) and isinstance(payload.get("delivery_id"), str):
            return str(payload["delivery_id"])
        ids = [b["block_id"] for b in self.blocks if isinstance(b.get("block_id"), str)]
        return ids[-1] if ids else None


@dataclass(frozen=True, slots=True)
class Answer:
    """Every request answered, accepted or not."""

    via: str
    target: str
    status: int
    error: str | None


@dataclass(frozen=True, slots=True)
class _Failure:
    failure: Failure
    retry_after: int


class SlackEmulator(HttpEmulator):
    """A local Slack: Web API ``chat.postMessage`` and incoming webhooks.

    ``channels`` maps conversation id → name (posts may name either, ``#name`` too);
    ``users`` are user ids a bot may DM; ``webhooks`` maps hook path → channel id.
    """

    def __init__(
        self,
        *,
        bot_tokens: Iterable[str],
        channels: Mapping[str, str],
        users: Iterable[str] = (),
        webhooks: Mapping[str, str] | None = None,
        on_accepted: Callable[[Posted], None] | None = None,
    ) -> None:
        self._tokens = frozenset(bot_tokens)
        self._channels = dict(channels)
        self._names = {name.lstrip("#"): cid for cid, name in self._channels.items()}
        self._users = frozenset(users)
        self._hooks = dict(webhooks or {})
        self._archived: set[str] = set()
        self._on_accepted = on_accepted
        self.accepted: list[Posted] = []
        self.answers: list[Answer] = []
        self._queued: dict[str, collections.deque[_Failure]] = collections.defaultdict(
            collections.deque
        )
        self._sequence = 0
        self._arrived = asyncio.Event()

    # -- lifecycle (start, stop, async with, url: HttpEmulator) -------------------

    def _application(self) -> web.Application:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_post("/api/chat.postMessage", self._post_message)
        app.router.add_post("/services/{path:.*}", self._incoming_webhook)
        return app

    # -- scripting ---------------------------------------------------------------

    def fail_next(self, target: str, failures: Sequence[Failure], retry_after: int = 1) -> None:
        """Answer the next ``len(failures)`` authenticated requests for ``target`` (a
        channel id, name or ``#name``, or a webhook path or URL) with these failures, in
        order. A str is a Slack error code (Web API: HTTP 200 ``ok: false``; webhook: its
        documented status); an int is an HTTP status, and 429 carries ``Retry-After``."""
        self._queued[self._key(target)].extend(_Failure(f, retry_after) for f in failures)

    def archive(self, channel: str) -> None:
        """Archive a channel: posts answer ``is_archived``, its hooks ``channel_is_archived``."""
        self._archived.add(self._resolve(channel) or channel)

    def _key(self, target: str) -> str:
        if target.startswith(("http://", "https://")):
            return urlsplit(target).path
        if target.startswith("/"):
            return target
        return self._resolve(target) or target

    def _resolve(self, channel: str) -> str | None:
        if channel in self._channels:
            return channel
        if channel in self._users:
            return "D" + channel[1:]  # the app's DM with that user
        return self._names.get(channel.removeprefix("#"))

    # -- what arrived ------------------------------------------------------------

    def by_delivery_id(self) -> collections.Counter[str]:
        """How many times each delivery id was accepted; 1 everywhere means exactly once."""
        return collections.Counter(p.delivery_id for p in self.accepted if p.delivery_id)

    # The timeout is part of the assertion (ASYNC109): the failure says how many arrived.
    async def wait_for(self, count: int, timeout: float) -> list[Posted]:  # noqa: ASYNC109
        """Wait until at least ``count`` messages were accepted; TimeoutError otherwise."""
        await wait_until(
            self._arrived,
            lambda: len(self.accepted) >= count,
            timeout,
            lambda: f"{len(self.accepted)} of {count} Slack messages",
        )
        return list(self.accepted)

    # -- Web API -------------------------------------------------------------------

    async def _post_message(self, request: web.Request) -> web.Response:
        payload, error, warnings = _json_body(request, await request.read())
        requested = payload.get("channel") if payload is not None else None
        target = requested if isinstance(requested, str) else "-"
        # Slack checks the transport first, then the token, then the arguments.
        error = error or self._auth_error(request.headers.get("Authorization"))
        if error is not None or payload is None:
            return self._api_error(target, error or "invalid_arguments", warnings)
        if failure := self._scripted(self._key(target)):
            return self._api_failure(target, failure)
        channel = self._resolve(target)
        if channel is None:
            return self._api_error(target, "channel_not_found", warnings)
        if channel in self._archived:
            return self._api_error(target, "is_archived", warnings)
        error, details = _message_errors(payload)
        if error is not None:
            return self._api_error(target, error, warnings, details)
        metadata = payload.get("metadata")
        if metadata is not None and not _valid_metadata(metadata):
            return self._api_error(target, "invalid_metadata_format", warnings)

        posted = self._accept("web_api", channel, payload, None)
        message = {
            "type": "message",
            "user": _BOT_USER,
            "bot_id": _BOT_ID,
            "text": posted.text,
            "ts": posted.ts,
            "blocks": posted.blocks,
        }
        if metadata is not None:
            message["metadata"] = metadata
        answer: dict[str, Any] = {
            "ok": True,
            "channel": channel,
            "ts": posted.ts,
            "message": message,
        }
        return self._api_answer(target, 200, answer, warnings)

    def _auth_error(self, authorization: str | None) -> str | None:
        if not authorization:
            return "not_authed"
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or token.strip() not in self._tokens:
            return "invalid_auth"
        return None

    def _api_error(
        self, target: str, error: str, warnings: list[str], details: list[str] | None = None
    ) -> web.Response:
        answer: dict[str, Any] = {"ok": False, "error": error}
        if details:
            answer["errors"] = details
            answer["response_metadata"] = {"messages": [f"[ERROR] {d}" for d in details]}
        return self._api_answer(target, 200, answer, warnings)

    def _api_failure(self, target: str, scripted: _Failure) -> web.Response:
        failure = scripted.failure
        if isinstance(failure, str):
            return self._api_answer(target, 200, {"ok": False, "error": failure}, [])
        if failure == 429:
            response = self._api_answer(target, 429, {"ok": False, "error": "ratelimited"}, [])
            response.headers["Retry-After"] = str(scripted.retry_after)
            return response
        self.answers.append(Answer("web_api", target, failure, None))
        return web.Response(status=failure, text=f"scripted HTTP {failure}")

    def _api_answer(
        self, target: str, status: int, answer: dict[str, Any], warnings: list[str]
    ) -> web.Response:
        if warnings:
            answer["warning"] = ",".join(warnings)
            metadata = answer.setdefault("response_metadata", {})
            metadata["warnings"] = warnings
        error = answer.get("error")
        self.answers.append(Answer("web_api", target, status, error))
        return web.Response(
            status=status,
            body=orjson.dumps(answer),
            content_type="application/json",
            charset="utf-8",
        )

    # -- incoming webhooks --------------------------------------------------------

    async def _incoming_webhook(self, request: web.Request) -> web.Response:
        path = request.path
        body = await request.read()
        channel = self._hooks.get(path)
        if channel is None:
            return self._hook_answer(path, "no_service")
        if failure := self._scripted(path):
            if isinstance(failure.failure, str):
                return self._hook_answer(path, failure.failure)
            status = failure.failure
            code = "rate_limited" if status == 429 else "rollup_error"
            response = self._hook_answer(path, code, status)
            if status == 429:
                response.headers["Retry-After"] = str(failure.retry_after)
            return response
        if channel in self._archived:
            return self._hook_answer(path, "channel_is_archived")
        payload = _webhook_payload(request.content_type, body)
        if payload is None:
            return self._hook_answer(path, "invalid_payload")
        error, _ = _message_errors(payload)
        if error is not None:
            return self._hook_answer(path, error)
        self._accept("webhook", channel, payload, path)
        return self._hook_answer(path, None)

    def _hook_answer(self, path: str, error: str | None, status: int | None = None) -> web.Response:
        status = status or (WEBHOOK_ERROR_STATUS.get(error, 400) if error else 200)
        self.answers.append(Answer("webhook", path, status, error))
        return web.Response(status=status, text=error or "ok")

    # -- shared ------------------------------------------------------------------

    def _scripted(self, key: str) -> _Failure | None:
        queue = self._queued.get(key)
        return queue.popleft() if queue else None

    def _accept(self, via: str, channel: str, payload: dict[str, Any], hook: str | None) -> Posted:
        self._sequence += 1
        now = time.time()
        text = payload.get("text")
        metadata = payload.get("metadata") if via == "web_api" else None
        posted = Posted(
            via=via,
            channel=channel,
            ts=f"{int(now)}.{self._sequence % 1_000_000:06d}",
            text=text[:MAX_TEXT_CHARS] if isinstance(text, str) else "",
            blocks=list(payload.get("blocks") or []),
            metadata=metadata if isinstance(metadata, dict) else None,
            hook=hook,
            received_at=now,
        )
        self.accepted.append(posted)
        self._arrived.set()
        if self._on_accepted is not None:
            self._on_accepted(posted)
        return posted


def _json_body(
    request: web.Request, body: bytes
) -> tuple[dict[str, Any] | None, str | None, list[str]]:
    """The JSON object posted, or the Web API's error for the transport, and any warnings."""
    charset = request.charset
    if "Content-Type" not in request.headers:
        return None, "missing_post_type", []
    if request.content_type != "application/json":
        return None, "invalid_post_type", []
    if charset is not None and charset.lower() not in ("utf-8", "iso-8859-1"):
        return None, "invalid_charset", []
    warnings = [] if charset else ["missing_charset"]
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, "invalid_json", warnings
    if not isinstance(payload, dict):
        return None, "json_not_object", warnings
    return payload, None, warnings


def _message_errors(payload: Mapping[str, Any]) -> tuple[str | None, list[str]]:
    """The Slack error code for the message's text and blocks, with per-block details."""
    text, blocks = payload.get("text"), payload.get("blocks")
    has_text = isinstance(text, str) and text.strip() != ""
    if blocks is None or blocks == []:
        return (None, []) if has_text else ("no_text", [])
    if not isinstance(blocks, list):
        return "invalid_blocks_format", []
    details = block_errors(blocks)
    return ("invalid_blocks", details) if details else (None, [])


# Block Kit reference ("Blocks", and each block's page): the types a message may hold and
# the limits Slack enforces, reported as Slack does, with a JSON pointer.
_BLOCK_TYPES = frozenset(
    "actions context divider file header image input markdown rich_text section table video".split()
)
MAX_BLOCKS = 50
_LIMIT_HEADER, _LIMIT_SECTION, _LIMIT_FIELD, _LIMIT_BLOCK_ID = 150, 3000, 2000, 255
# Markdown block: "The cumulative limit for all markdown blocks in a single payload is
# 12,000 characters"; checked per block here.
_LIMIT_MARKDOWN = 12_000


def block_errors(blocks: list[Any]) -> list[str]:
    """What Slack would say is wrong with ``blocks``; empty when they are valid."""
    errors = []
    if len(blocks) > MAX_BLOCKS:
        errors.append(f"no more than {MAX_BLOCKS} items allowed [json-pointer:/blocks]")
    block_ids: set[str] = set()
    for index, block in enumerate(blocks):
        at = f"/blocks/{index}"
        if not isinstance(block, dict) or block.get("type") not in _BLOCK_TYPES:
            kind = block.get("type") if isinstance(block, dict) else block
            errors.append(f"unsupported type: {kind!r} [json-pointer:{at}/type]")
            continue
        block_id = block.get("block_id")
        if block_id is not None:
            if not isinstance(block_id, str) or not 0 < len(block_id) <= _LIMIT_BLOCK_ID:
                errors.append(f"must be 1 to 255 characters [json-pointer:{at}/block_id]")
            elif block_id in block_ids:
                errors.append(f"duplicate block_id [json-pointer:{at}/block_id]")
            block_ids.add(str(block_id))
        errors += _block_content_errors(block, at)
    return errors


def _block_content_errors(block: dict[str, Any], at: str) -> list[str]:
    kind = block["type"]
    if kind == "header":
        return _text_errors(block.get("text"), f"{at}/text", _LIMIT_HEADER, ("plain_text",))
    if kind == "section":
        if "text" not in block and "fields" not in block:
            return [f"must provide text or fields [json-pointer:{at}]"]
        errors = []
        if "text" in block:
            errors += _text_errors(block["text"], f"{at}/text", _LIMIT_SECTION)
        fields = block.get("fields", [{"type": "plain_text", "text": "-"}])
        if not isinstance(fields, list) or not 0 < len(fields) <= 10:
            return [*errors, f"must provide 1 to 10 fields [json-pointer:{at}/fields]"]
        for n, item in enumerate(fields):
            errors += _text_errors(item, f"{at}/fields/{n}", _LIMIT_FIELD)
        return errors
    if kind == "context":
        elements = block.get("elements")
        if not isinstance(elements, list) or not 0 < len(elements) <= 10:
            return [f"must provide 1 to 10 elements [json-pointer:{at}/elements]"]
        return [
            error
            for n, item in enumerate(elements)
            if not (isinstance(item, dict) and item.get("type") == "image")
            for error in _text_errors(item, f"{at}/elements/{n}", _LIMIT_SECTION)
        ]
    if kind == "markdown":
        text = {"type": "mrkdwn", "text": block.get("text")}
        return _text_errors(text, at, _LIMIT_MARKDOWN)
    return []


def _text_errors(
    value: Any, at: str, limit: int, kinds: tuple[str, ...] = ("plain_text", "mrkdwn")
) -> list[str]:
    if not isinstance(value, dict) or value.get("type") not in kinds:
        return [f"must be a {' or '.join(kinds)} text object [json-pointer:{at}]"]
    text = value.get("text")
    if not isinstance(text, str) or not text:
        return [f"must be more than 0 characters [json-pointer:{at}/text]"]
    if len(text) > limit:
        return [f"must be less than {limit + 1} characters [json-pointer:{at}/text]"]
    return []


def _valid_metadata(metadata: Any) -> bool:
    return (
        isinstance(metadata, dict)
        and isinstance(metadata.get("event_type"), str)
        and bool(metadata["event_type"])
        and isinstance(metadata.get("event_payload"), dict)
    )


def _webhook_payload(content_type: str, body: bytes) -> dict[str, Any] | None:
    """The JSON object posted, as a JSON body or a form's ``payload`` field (both work)."""
    raw = body
    if content_type == "application/x-www-form-urlencoded":
        fields = parse_qs(body.decode("utf-8", "replace"))
        raw = fields.get("payload", [""])[0].encode()
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


# -- command line ----------------------------------------------------------------


def _print_line(posted: Posted) -> None:
    print(
        f"{posted.via} channel={posted.channel} ts={posted.ts} "
        f"delivery_id={posted.delivery_id or '-'} text={posted.text[:80]!r}",
        flush=True,
    )


def _pairs(values: list[str], option: str, parser: argparse.ArgumentParser) -> dict[str, str]:
    pairs = {}
    for value in values:
        key, sep, target = value.partition("=")
        if not sep or not key or not target:
            parser.error(f"{option} takes KEY=VALUE, got {value!r}")
        pairs[key] = target
    return pairs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m connectors.emulators.slack",
        description="Local Slack: chat.postMessage and incoming webhooks; prints each message.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8091)
    parser.add_argument(
        "--token",
        action="append",
        default=[],
        help="bot token to accept, repeatable (default: $TIDINGS_SLACK_BOT_TOKEN)",
    )
    parser.add_argument(
        "--channel",
        action="append",
        default=[],
        metavar="ID=NAME",
        help="a channel, repeatable (default: C0123456789=general)",
    )
    parser.add_argument("--user", action="append", default=[], help="a user id the bot may DM")
    parser.add_argument(
        "--webhook",
        action="append",
        default=[],
        metavar="PATH=CHANNEL_ID",
        help="an incoming webhook, repeatable (default: "
        "/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX=<first channel>)",
    )
    args = parser.parse_args(argv)
    tokens = args.token or [t for t in [os.environ.get("TIDINGS_SLACK_BOT_TOKEN")] if t]
    if not tokens:
        parser.error("--token or TIDINGS_SLACK_BOT_TOKEN is required")
    channels = _pairs(args.channel, "--channel", parser) or {"C0123456789": "general"}
    default_hook = {"/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX": next(iter(channels))}
    webhooks = _pairs(args.webhook, "--webhook", parser) or default_hook
    for path, channel in webhooks.items():
        if not path.startswith("/services/") or channel not in channels:
            parser.error(f"--webhook {path}={channel}: path under /services/, a known channel id")
    emulator = SlackEmulator(
        bot_tokens=tokens,
        channels=channels,
        users=args.user,
        webhooks=webhooks,
        on_accepted=_print_line,
    )
    asyncio.run(
        serve_until_signalled(
            emulator,
            lambda: emulator.start(args.host, args.port),
            lambda: f"slack emulator listening on {emulator.url}",
            "slack emulator stopped",
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
