"""Slack connector: ``chat.postMessage`` with a bot token, or an incoming webhook.

``recipient.slack`` picks the mode::

    "C0123456789", "U0123456789", "#alerts"      Web API: POST {base_url}/api/chat.postMessage
    "https://hooks.slack.com/services/T…/B…/…"    incoming webhook: POST to that URL

Both modes send the same Block Kit message (a header with the title, mrkdwn sections with
the body, a context line) plus the ``text`` fallback Slack shows in notifications. They
answer differently, hence two pure classifiers: the Web API answers HTTP 200 with
``{"ok": false, "error": "<code>"}``, incoming webhooks use HTTP statuses with the code
as plain text.

Slack has no idempotency key for either. The delivery id travels in the Web API's
message ``metadata`` and as the ``block_id`` of the context block (the one slot an
incoming webhook has), so a repeat after a timeout can be found, not prevented; the long
default timeout keeps such repeats rare.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

import httpx
import orjson

from connectors import transport
from connectors.transport import Classifier, retry_after_seconds
from connectors.verdict import HttpRequest, InvalidMessage, Outcome, Verdict

__all__ = [
    "Mode",
    "SlackAddress",
    "SlackChannel",
    "SlackConfig",
    "build_blocks",
    "build_request",
    "classify_web_api",
    "classify_webhook",
    "escape_mrkdwn",
    "parse_address",
]

SLACK_BASE_URL: Final = "https://slack.com"
SLACK_WEBHOOK_PREFIXES: Final = ("https://hooks.slack.com/",)
# python-slack-sdk's WebClient and WebhookClient both default to 30 s. A shorter deadline
# buys nothing here: chat.postMessage has no idempotency key, so an attempt abandoned
# while Slack is still posting becomes a duplicate message on retry.
REQUEST_TIMEOUT_S: Final = 30.0

# chat.postMessage, "Truncating content": Slack truncates text longer than 40,000
# characters. We refuse instead, so a message is never cut short silently.
MAX_TEXT_CHARS: Final = 40_000
# Block Kit reference, "Blocks": "You can include up to 50 blocks in each message".
MAX_BLOCKS: Final = 50
# Header block: text is plain_text, "Maximum length for the text in this field is 150 characters."
MAX_HEADER_CHARS: Final = 150
# Section block: "Maximum length for the text in this field is 3000 characters."
MAX_SECTION_CHARS: Final = 3000
# Block Kit: block_id "Maximum length for this field is 255 characters."
MAX_BLOCK_ID_CHARS: Final = 255
# Message metadata: event_type is "a human readable alphanumeric string".
METADATA_EVENT_TYPE: Final = "tidings_notification"

# Conversation IDs start C (channel), G (private channel, group DM) or D (DM); user IDs
# (U, W) post to the app's DM with that user. Slack has said IDs may grow, so no fixed length.
_CONVERSATION_ID = re.compile(r"[CDGUW][A-Z0-9]{8,31}")
# Channel names: lowercase, no spaces or periods, at most 80 characters (Slack help,
# "Create a channel"). Non-Latin letters occur in real workspaces, so only separators
# and mrkdwn control characters are refused here; Slack answers channel_not_found for the rest.
_CHANNEL_NAME = re.compile(r"#[^\s.,#@<>&|*`]{1,80}")
# Header values must be visible ASCII: a token or id with CR/LF would inject headers.
_VISIBLE_ASCII = re.compile(r"[!-~]+")
_REASON_CHARS: Final = 200


class Mode(enum.Enum):
    WEB_API = "web_api"
    WEBHOOK = "webhook"


@dataclass(frozen=True, slots=True)
class SlackAddress:
    mode: Mode
    target: str
    """The conversation id or ``#name`` (Web API), or the webhook URL."""


@dataclass(frozen=True, slots=True)
class SlackConfig:
    bot_token: str = field(default="", repr=False)
    """Bot token (``xoxb-…``) for the Web API; empty when only webhooks are used."""
    base_url: str = SLACK_BASE_URL
    webhook_url_prefixes: tuple[str, ...] = SLACK_WEBHOOK_PREFIXES
    """Incoming-webhook URLs must start with one of these (scheme, host and a path)."""
    timeout_s: float = REQUEST_TIMEOUT_S
    user_agent: str = "Tidings-Slack/0.1"

    def __post_init__(self) -> None:
        if self.bot_token and not (
            self.bot_token.startswith("xox") and _VISIBLE_ASCII.fullmatch(self.bot_token)
        ):
            raise ValueError("bot_token must be a Slack token (xoxb-…) of visible ASCII")
        _require_http_url(self.base_url, "base_url")
        if isinstance(self.webhook_url_prefixes, str):
            raise ValueError("webhook_url_prefixes must be a tuple of URL prefixes, not a str")
        for prefix in self.webhook_url_prefixes:
            _require_http_url(prefix, "webhook_url_prefixes")
            # Without the slash after the host, "https://hooks.slack.com" would also
            # admit "https://hooks.slack.com.attacker.example/".
            if urlsplit(prefix).path[:1] != "/" or not prefix.endswith("/"):
                raise ValueError(f"webhook URL prefix {prefix!r} must end with '/'")
        if self.timeout_s <= 0:
            raise ValueError("timeout_s must be positive")


def _require_http_url(url: str, name: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{name}: {url!r} is not an http(s) URL with a host")


# -- the request ------------------------------------------------------------------


def parse_address(message: Mapping[str, Any], config: SlackConfig) -> SlackAddress:
    """Where ``recipient.slack`` points, or :class:`InvalidMessage` when it cannot be used."""
    recipient = message.get("recipient") or {}
    slack = recipient.get("slack") if isinstance(recipient, Mapping) else None
    if not slack or not isinstance(slack, str):
        raise InvalidMessage("recipient has no slack address")
    if slack.startswith(("http://", "https://")):
        return SlackAddress(Mode.WEBHOOK, _webhook_url(slack, config))
    if _CONVERSATION_ID.fullmatch(slack) or _CHANNEL_NAME.fullmatch(slack):
        return SlackAddress(Mode.WEB_API, slack)
    raise InvalidMessage(f"recipient.slack {slack[:80]!r} is not a channel, user or webhook URL")


def _webhook_url(url: str, config: SlackConfig) -> str:
    # Only configured prefixes: recipient data must not make us POST to arbitrary hosts.
    parts = urlsplit(url)
    for prefix in config.webhook_url_prefixes:
        if url.startswith(prefix) and parts.netloc == urlsplit(prefix).netloc:
            if not _VISIBLE_ASCII.fullmatch(url):
                raise InvalidMessage("slack webhook URL contains spaces or control characters")
            return url
    raise InvalidMessage(
        f"slack webhook URL {parts.scheme}://{parts.netloc}… is not under an allowed "
        f"prefix {list(config.webhook_url_prefixes)}"
    )


def build_request(
    message: Mapping[str, Any], config: SlackConfig, address: SlackAddress | None = None
) -> HttpRequest:
    """The POST for one attempt at ``message``; :class:`InvalidMessage` if it cannot be sent."""
    address = address or parse_address(message, config)
    payload: dict[str, Any] = {"text": _fallback_text(message), "blocks": build_blocks(message)}
    headers = {
        "content-type": "application/json; charset=utf-8",
        "user-agent": config.user_agent,
    }
    if address.mode is Mode.WEBHOOK:
        # The bot token never goes to a webhook URL: the URL is its own credential.
        return HttpRequest("POST", address.target, headers, orjson.dumps(payload))
    if not config.bot_token:
        raise InvalidMessage("no Slack bot token is configured for channel and user addresses")
    body = {"channel": address.target, **payload, "metadata": _metadata(message)}
    return HttpRequest(
        "POST",
        f"{config.base_url.rstrip('/')}/api/chat.postMessage",
        headers | {"authorization": f"Bearer {config.bot_token}"},
        orjson.dumps(body),
    )


def escape_mrkdwn(text: str) -> str:
    """Slack "Formatting text", "Escaping text": ``&``, ``<`` and ``>`` are control
    characters and become HTML entities; nothing else is entity-encoded."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def build_blocks(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The Block Kit blocks: ``data["blocks"]`` when given, else header, sections, context."""
    custom = _custom_blocks(message)
    if custom is not None:
        return custom
    blocks: list[dict[str, Any]] = []
    if title := _field(message, "title").strip():
        header = {"type": "plain_text", "text": _header_text(title), "emoji": True}
        blocks.append({"type": "header", "text": header})
    for chunk in _split_section_text(escape_mrkdwn(_field(message, "body"))):
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": chunk}})
    about = escape_mrkdwn(f"{_field(message, 'category')} · {_field(message, 'notification_id')}")
    blocks.append(
        {
            "type": "context",
            "block_id": _delivery_id(message),
            "elements": [{"type": "mrkdwn", "text": about}],
        }
    )
    if len(blocks) > MAX_BLOCKS:  # unreachable under MAX_TEXT_CHARS; kept as the invariant
        raise InvalidMessage(f"message needs {len(blocks)} blocks; Slack allows {MAX_BLOCKS}")
    return blocks


def _field(message: Mapping[str, Any], name: str) -> str:
    if name not in message:
        raise InvalidMessage(f"message has no {name!r} field")
    value = message[name]
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidMessage(f"message field {name!r} is not a string")
    return value


def _delivery_id(message: Mapping[str, Any]) -> str:
    delivery_id = _field(message, "delivery_id")
    if not _VISIBLE_ASCII.fullmatch(delivery_id) or len(delivery_id) > MAX_BLOCK_ID_CHARS:
        raise InvalidMessage(f"delivery_id {delivery_id[:80]!r} cannot be a Slack block_id")
    return delivery_id


def _fallback_text(message: Mapping[str, Any]) -> str:
    parts = [p for p in (_field(message, "title"), _field(message, "body")) if p.strip()]
    if not parts:
        raise InvalidMessage("message has no title or body for Slack's notification text")
    text = escape_mrkdwn("\n".join(parts))
    if len(text) > MAX_TEXT_CHARS:
        raise InvalidMessage(
            f"Slack text is {len(text)} characters after escaping; the limit is {MAX_TEXT_CHARS}"
        )
    return text


def _header_text(title: str) -> str:
    line = " ".join(title.split())  # a header is one line
    return line if len(line) <= MAX_HEADER_CHARS else line[: MAX_HEADER_CHARS - 1] + "…"


def _split_section_text(text: str, limit: int = MAX_SECTION_CHARS) -> list[str]:
    """Pieces of at most ``limit`` characters, cut at a line break, else a space, else
    anywhere but inside an ``&amp;``/``&lt;``/``&gt;`` entity; blank pieces are dropped
    (Slack rejects a section whose text is empty)."""
    pieces: list[str] = []
    rest = text
    while len(rest) > limit:
        cut = rest.rfind("\n", 0, limit + 1)
        if cut <= 0:
            cut = rest.rfind(" ", 0, limit + 1)
        if cut > 0:
            pieces.append(rest[:cut])
            rest = rest[cut + 1 :]
            continue
        cut = limit
        entity = rest.rfind("&", cut - len("&amp;") + 1, cut)
        if entity > 0 and rest.find(";", entity, cut) == -1:
            cut = entity
        pieces.append(rest[:cut])
        rest = rest[cut:]
    pieces.append(rest)
    return [piece for piece in pieces if piece.strip()]


def _custom_blocks(message: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    # A template's rendered `slack.blocks` part (ChannelMessage v3 `blocks`) comes first,
    # then blocks the producer put in data.
    where, raw = "blocks", message.get("blocks")
    if raw is None:
        data = message.get("data") or {}
        where, raw = "data.blocks", data.get("blocks") if isinstance(data, Mapping) else None
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise InvalidMessage(f"{where} must be a string holding a JSON array of blocks")
    try:
        blocks = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidMessage(f"{where} is not JSON: {exc}") from exc
    if not isinstance(blocks, list) or not blocks:
        raise InvalidMessage(f"{where} must be a non-empty JSON array of blocks")
    if len(blocks) > MAX_BLOCKS:
        raise InvalidMessage(f"{where} has {len(blocks)} blocks; Slack allows {MAX_BLOCKS}")
    for index, block in enumerate(blocks):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise InvalidMessage(f"{where}[{index}] is not an object with a 'type'")
    return blocks


def _metadata(message: Mapping[str, Any]) -> dict[str, Any]:
    """chat.postMessage ``metadata`` ({event_type, event_payload}), naming the delivery."""
    return {
        "event_type": METADATA_EVENT_TYPE,
        "event_payload": {
            "delivery_id": _delivery_id(message),
            "notification_id": _field(message, "notification_id"),
            "tenant_id": _field(message, "tenant_id"),
            "category": _field(message, "category"),
        },
    }


# -- classifying answers -----------------------------------------------------------

_RETRY, _REJECT, _GONE = Outcome.RETRY, Outcome.REJECTED, Outcome.ADDRESS_INVALID

# Web API error code → outcome. Source: the "Errors" table of chat.postMessage
# (docs.slack.dev/reference/methods/chat.postMessage), which also lists the errors every
# Web API method shares. A code not listed is rejected, quoting the code.
_WEB_API_ROWS: Final[tuple[tuple[str, Outcome, str], ...]] = (
    # Authentication and grants: every message fails alike until an operator acts.
    ("not_authed", _REJECT, "no token was sent"),
    ("invalid_auth", _REJECT, "token invalid, or the request came from a disallowed IP"),
    ("account_inactive", _REJECT, "token belongs to a deleted user or workspace"),
    ("token_revoked", _REJECT, "token revoked or the app was uninstalled"),
    ("token_expired", _REJECT, "token expired (token rotation is on)"),
    ("missing_scope", _REJECT, "token lacks the chat:write scope"),
    ("not_allowed_token_type", _REJECT, "this token type cannot post messages"),
    ("no_permission", _REJECT, "token lacks permission for this conversation"),
    ("access_denied", _REJECT, "access to the conversation is denied"),
    ("ekm_access_denied", _REJECT, "administrators suspended posting"),
    ("accesslimited", _REJECT, "method not allowed from this network"),
    ("two_factor_setup_required", _REJECT, "two-factor setup is required"),
    ("enterprise_is_restricted", _REJECT, "method cannot be called from an Enterprise"),
    ("method_deprecated", _REJECT, "method deprecated"),
    ("deprecated_endpoint", _REJECT, "endpoint deprecated"),
    # The conversation. channel_not_found is also what a private channel the app was
    # never invited to answers, so it may be fixed by an invitation and the address is not
    # known to be dead: rejected, not address_invalid. is_archived is the channel itself
    # refusing messages for good (as a webhook's 410 channel_is_archived says), which
    # is what address_invalid ("endpoint disabled") means.
    ("channel_not_found", _REJECT, "channel unknown, or private without the app in it"),
    ("is_archived", _GONE, "channel is archived"),
    ("not_in_channel", _REJECT, "the app is not a member of the channel; invite it"),
    ("messages_tab_disabled", _REJECT, "the user turned off messages from apps"),
    ("restricted_action", _REJECT, "a workspace preference prevents posting"),
    ("restricted_action_read_only_channel", _REJECT, "channel is read-only"),
    ("restricted_action_thread_only_channel", _REJECT, "channel takes thread replies only"),
    ("restricted_action_non_threadable_channel", _REJECT, "channel does not allow threads"),
    ("team_access_not_granted", _REJECT, "token has no access to this workspace"),
    # The message itself.
    ("msg_too_long", _REJECT, "message text is too long"),
    ("no_text", _REJECT, "no message text provided"),
    ("invalid_blocks", _REJECT, "blocks are invalid"),
    ("invalid_blocks_format", _REJECT, "blocks are not a JSON array"),
    # Undocumented, yet answered for long block content (slackapi/bolt-js#2509).
    ("msg_blocks_too_long", _REJECT, "blocks are too long in total"),
    ("too_many_attachments", _REJECT, "too many attachments"),
    ("invalid_metadata_format", _REJECT, "metadata is malformed"),
    ("invalid_metadata_schema", _REJECT, "metadata does not match its schema"),
    ("metadata_too_large", _REJECT, "metadata is too large"),
    ("metadata_must_be_sent_from_app", _REJECT, "metadata needs an app token"),
    ("invalid_arguments", _REJECT, "invalid arguments"),
    ("invalid_arg_name", _REJECT, "invalid argument name"),
    ("invalid_array_arg", _REJECT, "array argument not allowed"),
    ("invalid_charset", _REJECT, "invalid charset in Content-Type"),
    ("invalid_form_data", _REJECT, "invalid form data"),
    ("invalid_post_type", _REJECT, "invalid Content-Type"),
    ("missing_post_type", _REJECT, "no Content-Type"),
    ("invalid_json", _REJECT, "body is not JSON"),
    ("json_not_object", _REJECT, "body is not a JSON object"),
    # Transient: rate limits and Slack's own trouble. fatal_error and internal_error say
    # "some aspect of the operation" may have succeeded, so the retry may repeat a post;
    # the delivery id in metadata and block_id lets it be spotted.
    ("ratelimited", _RETRY, "rate limited"),
    ("rate_limited", _RETRY, "application posted too many messages"),
    ("message_limit_exceeded", _RETRY, "workspace message limit reached"),
    ("fatal_error", _RETRY, "Slack failed catastrophically"),
    ("internal_error", _RETRY, "Slack internal error"),
    ("service_unavailable", _RETRY, "Slack service unavailable"),
    ("request_timeout", _RETRY, "POST data missing or truncated"),
    ("team_added_to_org", _RETRY, "workspace is migrating to an Enterprise org"),
    ("org_login_required", _RETRY, "workspace is migrating to an Enterprise org"),
)
_WEB_API_ERRORS: Final = {code: (outcome, why) for code, outcome, why in _WEB_API_ROWS}

# Incoming-webhook answer (plain-text body) → outcome. Sources: Slack's "Sending messages
# using incoming webhooks", "Handling errors", and the changelog "Improving error
# conditions for Incoming Webhooks" (2016-05-17). The documented status is in the
# comment; the body decides, the status class covers codes not listed.
_WEBHOOK_ROWS: Final[tuple[tuple[str, Outcome, str], ...]] = (
    ("invalid_payload", _REJECT, "payload cannot be understood"),  # 400
    ("no_text", _REJECT, "no text or blocks"),  # 400
    ("invalid_blocks", _REJECT, "blocks are invalid"),  # 400
    ("invalid_blocks_format", _REJECT, "blocks are not a JSON array"),  # 400
    ("too_many_attachments", _REJECT, "too many attachments"),  # 400
    ("user_not_found", _REJECT, "user in the request does not exist"),  # 400
    # 403: a workspace restriction on posting; the hook itself may still work later.
    ("action_prohibited", _REJECT, "workspace restricts this webhook"),
    ("posting_to_general_channel_denied", _REJECT, "only admins may post to #general"),  # 403
    # A webhook is bound to one channel when installed, so these mean the URL will never
    # post again: the endpoint is disabled (address_invalid), as a webhook's 410 is.
    ("channel_not_found", _GONE, "the webhook's channel no longer exists"),  # 404
    ("channel_is_archived", _GONE, "the webhook's channel is archived"),  # 410
    ("no_service", _GONE, "webhook disabled, removed or invalid"),  # 404
    ("no_service_id", _GONE, "webhook URL has no service id"),  # 400
    ("no_team", _GONE, "webhook URL names no workspace"),  # 400
    ("team_disabled", _GONE, "the workspace is no longer active"),  # 410
    ("invalid_token", _GONE, "the webhook URL's token is invalid"),  # 403
    ("rollup_error", _RETRY, "Slack error, likely not ours"),  # 500
)
_WEBHOOK_ERRORS: Final = {code: (outcome, why) for code, outcome, why in _WEBHOOK_ROWS}


def classify_web_api(
    status: int, headers: Mapping[str, str], body: bytes, *, now: float | None = None
) -> Verdict:
    """Verdict for a chat.postMessage answer. ``now`` only matters for an HTTP-date Retry-After."""
    answer = _json_object(body)
    code = answer.get("error") if answer is not None else None
    code = code if isinstance(code, str) else None
    if status == 429 or status >= 500:
        # Rate limits: "HTTP 429 Too Many Requests … and a Retry-After HTTP header".
        why = "rate limited" if status == 429 else "Slack server error"
        return _retry(f"HTTP {status}: {code or why}", headers, status, now)
    if answer is not None and answer.get("ok") is True and 200 <= status <= 299:
        return Verdict.delivered(status_code=status)
    if code is None:
        # A proxy's page, or a base_url that is not Slack: repeating will not help.
        reason = f"HTTP {status}: not a Slack answer: {_excerpt(body)}"
        return Verdict.rejected(reason, status_code=status)
    outcome, why = _WEB_API_ERRORS.get(code, (_REJECT, "unknown Slack error"))
    reason = f"{code}: {why}{_details(answer or {})}"
    if outcome is _RETRY:
        return _retry(reason, headers, status, now)
    if outcome is _GONE:
        return Verdict.address_invalid(reason, status_code=status)
    return Verdict.rejected(reason, status_code=status)


def classify_webhook(
    status: int, headers: Mapping[str, str], body: bytes, *, now: float | None = None
) -> Verdict:
    """Verdict for an incoming webhook's answer: 200 ``ok``, else a status and a code."""
    if 200 <= status <= 299:
        # Slack: "interpret a HTTP 200 response as success".
        return Verdict.delivered(status_code=status)
    code = _excerpt(body)
    if status == 429:
        return _retry(f"HTTP 429: rate limited{': ' + code if code else ''}", headers, status, now)
    outcome, why = _WEBHOOK_ERRORS.get(code, _webhook_status_rule(status))
    reason = f"HTTP {status}: {code + ': ' if code else ''}{why}"
    if outcome is _RETRY:
        return _retry(reason, headers, status, now)
    if outcome is _GONE:
        return Verdict.address_invalid(reason, status_code=status)
    return Verdict.rejected(reason, status_code=status)


def _webhook_status_rule(status: int) -> tuple[Outcome, str]:
    if status >= 500:
        return _RETRY, "Slack server error"
    if status == 410:
        return _GONE, "webhook gone"
    if 300 <= status <= 399:
        return _REJECT, "redirect not followed"
    return _REJECT, "rejected by Slack"


def _retry(reason: str, headers: Mapping[str, str], status: int, now: float | None) -> Verdict:
    after = retry_after_seconds(headers, now=now)
    return Verdict.retry(reason, retry_after=after, status_code=status)


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _details(answer: Mapping[str, Any]) -> str:
    """Slack's own explanation, e.g. invalid_blocks' ``response_metadata.messages``."""
    metadata = answer.get("response_metadata")
    messages = metadata.get("messages") if isinstance(metadata, dict) else None
    if not isinstance(messages, list) or not messages:
        return ""
    return " (" + "; ".join(str(m) for m in messages)[:_REASON_CHARS] + ")"


def _excerpt(body: bytes) -> str:
    return body[: _REASON_CHARS * 4].decode("utf-8", "replace").strip()[:_REASON_CHARS]


# -- the channel ------------------------------------------------------------------

_CLASSIFIERS: Final[dict[Mode, Classifier]] = {
    Mode.WEB_API: classify_web_api,
    Mode.WEBHOOK: classify_webhook,
}


class SlackChannel:
    """One attempt per :meth:`send`: a verdict for every answer and network failure,
    :class:`InvalidMessage` for a message that can never be sent."""

    def __init__(self, config: SlackConfig, client: httpx.AsyncClient | None = None) -> None:
        self.config = config
        self._owns_client = client is None
        self._client = client if client is not None else httpx.AsyncClient()

    async def send(self, message: Mapping[str, Any]) -> Verdict:
        address = parse_address(message, self.config)
        request = build_request(message, self.config, address)
        return await transport.send(
            self._client, request, self.config.timeout_s, _CLASSIFIERS[address.mode]
        )

    async def aclose(self) -> None:
        """Close the HTTP client if this channel made it; a client passed in is the caller's."""
        if self._owns_client:
            await self._client.aclose()
