"""The NotificationRequest contract beyond what Avro checks: defaults, ids and our rules.

`normalize_request` turns what a caller hands the publisher (a JSON object, a dict) into a
complete record; `validate_request` enforces the rules a schema cannot express. Both are
pure; the publisher runs them before sending, the validate stage runs the second again on
what it reads (a producer that skipped our publisher must not get past it).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from streams.errors import ValidationError
from streams.settings import CHANNELS

PRIORITIES = ("low", "normal", "high", "critical")
# Identifiers end up in Kafka keys, table keys and log lines: keep them printable and short.
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@\-]{0,127}$")
_TEMPLATE_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")  # as streams/templates.py
_RECIPIENT_FIELDS = {
    "user_id", "email", "phone", "push_tokens", "slack", "webhook_url", "locale", "timezone",
    "metadata",
}
_REQUEST_FIELDS = {
    "tenant_id", "notification_id", "idempotency_key", "priority", "category", "recipients",
    "channels", "fallback_channels", "template", "title", "content", "data", "metadata",
    "created_at", "send_at",
}
# Which recipient field addresses each channel.
CHANNEL_ADDRESS = {
    "email": "email",
    "sms": "phone",
    "push": "push_tokens",
    "slack": "slack",
    "webhook": "webhook_url",
}
MAX_RECIPIENTS = 1000
MAX_CONTENT_CHARS = 64 * 1024


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _string_map(value: Any, field: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValidationError(f"{field} must be an object of strings", field=field)
    out = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise ValidationError(f"{field} keys must be strings", field=field)
        # Data values are rendered into messages; numbers and booleans are accepted as text.
        if isinstance(item, bool | int | float):
            item = str(item).lower() if isinstance(item, bool) else str(item)
        if not isinstance(item, str):
            raise ValidationError(f"{field}.{key} must be a string", field=f"{field}.{key}")
        out[key] = item
    return out


def _recipient(raw: Any, index: int) -> dict[str, Any]:
    where = f"recipients[{index}]"
    if not isinstance(raw, Mapping):
        raise ValidationError(f"{where} must be an object", field=where)
    unknown = sorted(set(raw) - _RECIPIENT_FIELDS)
    if unknown:
        raise ValidationError(f"{where} has unknown fields {unknown}", field=where)
    tokens = raw.get("push_tokens") or []
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise ValidationError(f"{where}.push_tokens must be a list of strings",
                              field=f"{where}.push_tokens")
    return {
        "user_id": raw.get("user_id"),
        "email": raw.get("email"),
        "phone": raw.get("phone"),
        "push_tokens": list(tokens),
        "slack": raw.get("slack"),
        "webhook_url": raw.get("webhook_url"),
        "locale": raw.get("locale"),
        "timezone": raw.get("timezone"),
        "metadata": _string_map(raw.get("metadata"), f"{where}.metadata"),
    }


def normalize_request(raw: Mapping[str, Any], *, now: int | None = None) -> dict[str, Any]:
    """Fill defaults (a fresh notification_id, created_at = now) and check the result."""
    if not isinstance(raw, Mapping):
        raise ValidationError("a notification request must be a JSON object")
    unknown = sorted(set(raw) - _REQUEST_FIELDS)
    if unknown:
        raise ValidationError(f"unknown fields {unknown}", field=unknown[0])
    recipients = raw.get("recipients")
    if not isinstance(recipients, list):
        raise ValidationError("recipients must be a list", field="recipients")
    channels = raw.get("channels")
    if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
        raise ValidationError("channels must be a list of channel names", field="channels")
    fallback = raw.get("fallback_channels") or []
    if not isinstance(fallback, list) or not all(isinstance(c, str) for c in fallback):
        raise ValidationError("fallback_channels must be a list of channel names",
                              field="fallback_channels")
    template = raw.get("template")
    if template is not None:
        if not isinstance(template, Mapping) or not isinstance(template.get("template_id"), str):
            raise ValidationError("template must be {template_id, version?}", field="template")
        template = {"template_id": template["template_id"], "version": template.get("version")}
    request = {
        "tenant_id": raw.get("tenant_id"),
        "notification_id": raw.get("notification_id") or f"ntf_{uuid.uuid4().hex}",
        "idempotency_key": raw.get("idempotency_key"),
        "priority": raw.get("priority", "normal"),
        "category": raw.get("category", "general"),
        "recipients": [_recipient(r, i) for i, r in enumerate(recipients)],
        "channels": list(channels),
        "fallback_channels": list(fallback),
        "template": template,
        "title": raw.get("title"),
        "content": raw.get("content"),
        "data": _string_map(raw.get("data"), "data"),
        "metadata": _string_map(raw.get("metadata"), "metadata"),
        "created_at": raw["created_at"] if raw.get("created_at") is not None
        else (now if now is not None else now_ms()),
        "send_at": raw.get("send_at"),
    }
    if request["idempotency_key"] is None:
        # Without a caller's key a request is unique by its id; a retried publish of the same
        # object then de-duplicates only if the caller set notification_id.
        request["idempotency_key"] = request["notification_id"]
    validate_request(request)
    return request


def validate_request(request: Mapping[str, Any]) -> None:
    """Rules a schema cannot express. Raises `ValidationError` naming the field."""
    for field in ("tenant_id", "notification_id", "idempotency_key"):
        value = request.get(field)
        if not isinstance(value, str) or not _ID.match(value):
            raise ValidationError(
                f"{field} must be 1-128 characters of letters, digits and ._:@- "
                f"(got {value!r:.60})",
                field=field,
            )
    if request.get("priority") not in PRIORITIES:
        raise ValidationError(f"priority must be one of {list(PRIORITIES)}", field="priority")
    category = request.get("category")
    if not isinstance(category, str) or not _ID.match(category):
        raise ValidationError("category must be a short identifier", field="category")
    channels = request.get("channels") or []
    if not channels:
        raise ValidationError("at least one channel is required", field="channels")
    unknown = sorted(set(channels) - set(CHANNELS))
    if unknown:
        raise ValidationError(f"unknown channels {unknown}", field="channels")
    if len(set(channels)) != len(channels):
        raise ValidationError("channels are listed twice", field="channels")
    fallback = request.get("fallback_channels") or []
    unknown = sorted(set(fallback) - set(CHANNELS))
    if unknown:
        raise ValidationError(f"unknown fallback channels {unknown}", field="fallback_channels")
    if set(fallback) & set(channels) or len(set(fallback)) != len(fallback):
        raise ValidationError("a fallback channel is listed twice or is also a primary channel",
                              field="fallback_channels")
    recipients = request.get("recipients") or []
    if not recipients:
        raise ValidationError("at least one recipient is required", field="recipients")
    if len(recipients) > MAX_RECIPIENTS:
        raise ValidationError(f"at most {MAX_RECIPIENTS} recipients per request",
                              field="recipients")
    seen_users = set()
    for index, recipient in enumerate(recipients):
        where = f"recipients[{index}]"
        user_id = recipient.get("user_id")
        if not isinstance(user_id, str) or not _ID.match(user_id):
            raise ValidationError(f"{where}.user_id is required (an identifier)",
                                  field=f"{where}.user_id")
        if user_id in seen_users:
            raise ValidationError(f"{where}.user_id {user_id!r} is listed twice",
                                  field=f"{where}.user_id")
        seen_users.add(user_id)
        for channel in [*channels, *fallback]:
            if not recipient.get(CHANNEL_ADDRESS[channel]):
                raise ValidationError(
                    f"{where} has no {CHANNEL_ADDRESS[channel]} for the {channel} channel",
                    field=f"{where}.{CHANNEL_ADDRESS[channel]}",
                )
        url = recipient.get("webhook_url")
        if url is not None and not (
            isinstance(url, str) and urlsplit(url).scheme in ("http", "https")
            and urlsplit(url).hostname
        ):
            raise ValidationError(f"{where}.webhook_url must be an http(s) URL",
                                  field=f"{where}.webhook_url")
    template = request.get("template")
    if template is None:
        if not request.get("title") and not request.get("content"):
            raise ValidationError("give a template or an inline title/content", field="content")
    else:
        # A template id is a token, never a path (streams/templates.py).
        if not isinstance(template.get("template_id"), str) or not _TEMPLATE_ID.match(
                template["template_id"]):
            raise ValidationError("template.template_id must be 1-64 of a-z 0-9 . _ -",
                                  field="template.template_id")
        version = template.get("version")
        if version is not None and (not isinstance(version, int) or isinstance(version, bool)
                                    or version < 1):
            raise ValidationError("template.version must be a positive integer",
                                  field="template.version")
    for field in ("title", "content"):
        value = request.get(field)
        if value is not None and (not isinstance(value, str) or len(value) > MAX_CONTENT_CHARS):
            raise ValidationError(f"{field} must be text of at most {MAX_CONTENT_CHARS} chars",
                                  field=field)
    for field in ("created_at", "send_at"):
        value = request.get(field)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                  or value < 0):
            raise ValidationError(f"{field} must be epoch milliseconds", field=field)


def request_key(request: Mapping[str, Any]) -> bytes:
    """Kafka key of a request: `tenant/user` of its first recipient (see streams/topics.py)."""
    return f"{request['tenant_id']}/{request['recipients'][0]['user_id']}".encode()
