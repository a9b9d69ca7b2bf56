"""Fan-out and routing: one request becomes one record per recipient, then one
ChannelMessage per channel for that recipient.

The delivery id is stable — derived from tenant, notification id, channel and recipient —
so a replay or a retry of the same delivery carries the same id, which the delivered ledger
and the provider (Standard Webhooks `webhook-id`, SMTP Message-ID, ...) use to drop repeats.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import orjson

from streams.replay import generation_of, redelivery_id

# A fixed namespace for uuid5 (RFC 9562 §5.5): the same inputs give the same id forever.
_DELIVERY_NAMESPACE = uuid.UUID("6f1d3c52-6a0e-4c55-9c7b-2b1f4f3c9a10")


def delivery_id(tenant_id: str, notification_id: str, channel: str, user_id: str) -> str:
    name = f"{tenant_id}\x1f{notification_id}\x1f{channel}\x1f{user_id}"
    return f"dlv_{uuid.uuid5(_DELIVERY_NAMESPACE, name).hex}"


def recipient_key(tenant_id: str, user_id: str) -> bytes:
    return f"{tenant_id}/{user_id}".encode()


def fan_out(request: Mapping[str, Any]) -> Iterator[tuple[bytes, dict[str, Any]]]:
    """One (key, request) per recipient, each request naming only that recipient."""
    for recipient in request["recipients"]:
        single = dict(request)
        single["recipients"] = [recipient]
        yield recipient_key(request["tenant_id"], recipient["user_id"]), single


def channel_messages(request: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """The ChannelMessages of a single-recipient request, one per channel.

    Push is one message per device token: each token is its own delivery (its own id,
    retries and verdict), so one dead token never holds back or re-sends the others.
    """
    (recipient,) = request["recipients"]
    for channel in request["channels"]:
        yield from _for_channel(request, recipient, channel, request.get("fallback_channels") or [])


def failover_message(message: Mapping[str, Any]) -> dict[str, Any] | None:
    """The message for the next fallback channel of a delivery that ended undelivered.

    None when no fallback is left. The new delivery has its own stable id, so a failover
    triggered twice (two primary channels failing) still delivers once.
    """
    fallback = list(message.get("fallback_channels") or [])
    if not fallback:
        return None
    channel, rest = fallback[0], fallback[1:]
    rendered = dict(message.get("rendered_fallbacks") or {})
    request = {
        "tenant_id": message["tenant_id"], "notification_id": message["notification_id"],
        "category": message["category"], "priority": message["priority"],
        "title": message.get("title"), "content": message.get("body"),
        "data": message.get("data") or {}, "metadata": message.get("metadata") or {},
        "created_at": message["created_at"],
    }
    following = next(_for_channel(request, message["recipient"], channel, rest), None)
    if following is not None and channel in rendered:
        with_rendered(following, orjson.loads(rendered[channel]), message.get("locale"))
        following["rendered_fallbacks"] = {c: v for c, v in rendered.items() if c in rest}
    return following


def with_rendered(message: dict[str, Any], parts: Mapping[str, Any], locale: str | None
                  ) -> dict[str, Any]:
    """Put one channel's rendered template parts (agents/render.py) on its message."""
    message["title"] = parts.get("title") or None
    message["body"] = parts.get("body") or None
    message["html"] = parts.get("html")
    message["blocks"] = parts.get("blocks")
    message["payload"] = parts.get("payload")
    message["locale"] = locale
    if parts.get("data"):
        message["data"] = {**(message.get("data") or {}), **parts["data"]}
    return message


def _for_channel(
    request: Mapping[str, Any], recipient: Mapping[str, Any], channel: str, fallback: list[str]
) -> Iterator[dict[str, Any]]:
    user_id = recipient["user_id"]
    # A replay with --resend names a generation (streams/replay.py): the same delivery sent
    # again under a new id, which the ledger has not seen and the receiver does not drop.
    generation = generation_of(request)
    targets: list[tuple[str, Mapping[str, Any]]]
    if channel == "push":
        targets = [(f"{user_id}/{token}", {**recipient, "push_tokens": [token]})
                   for token in recipient.get("push_tokens") or []]
    else:
        targets = [(user_id, recipient)]
    for target, addressed in targets:
        first_id = delivery_id(request["tenant_id"], request["notification_id"], channel, target)
        yield {
            "delivery_id": redelivery_id(first_id, generation) if generation else first_id,
            "notification_id": request["notification_id"],
            "tenant_id": request["tenant_id"],
            "channel": channel,
            "fallback_channels": list(fallback),
            "category": request["category"],
            "priority": request["priority"],
            "recipient": dict(addressed),
            "title": request.get("title"),
            "body": request.get("content"),
            "data": dict(request.get("data") or {}),
            "metadata": dict(request.get("metadata") or {}),
            # Rendered parts (agents/render.py) for templated requests; None otherwise.
            "html": None, "blocks": None, "payload": None, "locale": None,
            "rendered_fallbacks": {},
            "attempt": 0,
            "created_at": request["created_at"],
            "not_before": 0,
            "last_error": None,
        }
