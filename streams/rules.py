"""Rules: for events of one type, when a CEL condition holds, notify recipients taken from
the event. The contract (checking a rule, compiling its condition) and the client that
publishes rules to the compacted `<prefix>.rules` topic, keyed `tenant/rule_id`.

    with RulesClient(load_settings()) as rules:
        rules.put({"tenant_id": "acme", "rule_id": "shipped-email",
                   "event_type": "order.shipped", "condition": "int(payload.total) >= 50",
                   "recipients": [{"user_id": "payload.customer_id",
                                   "email": "payload.customer_email"}],
                   "channels": ["email"], "title": "Order ${order_id} shipped",
                   "content": "It is on its way."})

CEL (https://github.com/google/cel-spec) is evaluated with `common-expression-language`, the
Python binding of the Rust `cel` crate, rather than the pure-Python `cel-python`. Measured on
this machine (timeit, Python 3.11; the condition
`event.event_type == "order.shipped" && int(payload.total) > 100 && payload.country in
["FR", "DE"]`): compile 240 µs vs 1,800 µs, evaluate 58 µs vs 1,680 µs — 29x faster to
evaluate, which is the per-event, per-rule cost — and it ships type stubs, so mypy --strict
checks our calls. Neither evaluates Python: CEL has no I/O, no loops beyond bounded
comprehensions over its inputs, and no access to Python objects. Each condition is compiled
once, when a rule is put (to refuse a bad one at the edge) and when the rules stage loads it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import cel

from streams.errors import ValidationError
from streams.keyed import KeyedProducer, read_latest
from streams.requests import CHANNEL_ADDRESS, PRIORITIES, now_ms
from streams.serde import serde
from streams.settings import CHANNELS, Settings

__all__ = ["RulesClient", "compile_condition", "normalize_rule", "rule_key"]

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@\-]{0,127}$")
_EVENT_TYPE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")
_SOURCE = re.compile(r"^(subject_id|event_type|event_id|tenant_id|payload\.[^\s]{1,128}|"
                     r"literal:.{1,512})$", re.DOTALL)
_FIELDS = {"tenant_id", "rule_id", "event_type", "condition", "recipients", "channels",
           "fallback_channels", "template", "title", "content", "category", "priority",
           "enabled", "updated_at"}
MAPPING_FIELDS = ("user_id", "email", "phone", "push_tokens", "slack", "webhook_url", "locale",
                  "timezone")
# A condition is a filter, not a program: a bound on its size bounds its cost per event.
MAX_CONDITION_CHARS = 4096
MAX_RECIPIENT_MAPPINGS = 50
CONDITION_VARIABLES = ("event", "payload")


def compile_condition(condition: str) -> cel.Program:
    """The compiled CEL program, or `ValidationError` with the parser's message."""
    if not isinstance(condition, str) or not condition.strip():
        raise ValidationError("condition must be a CEL expression", field="condition")
    if len(condition) > MAX_CONDITION_CHARS:
        raise ValidationError(f"condition is longer than {MAX_CONDITION_CHARS} characters",
                              field="condition")
    try:
        return cel.compile(condition)
    # The binding raises ValueError for a syntax error; anything else it raises is as much a
    # refusal of this text, and must reach the caller as ours.
    except Exception as exc:  # noqa: BLE001
        raise ValidationError(f"condition is not valid CEL: {exc}", field="condition") from exc


def _mapping(raw: Any, index: int, channels: list[str]) -> dict[str, Any]:
    where = f"recipients[{index}]"
    if not isinstance(raw, Mapping):
        raise ValidationError(f"{where} must be an object of field → source", field=where)
    unknown = sorted(set(raw) - set(MAPPING_FIELDS))
    if unknown:
        raise ValidationError(f"{where}: unknown recipient fields {unknown}; known: "
                              f"{list(MAPPING_FIELDS)}", field=f"{where}.{unknown[0]}")
    mapping: dict[str, Any] = {field: raw.get(field) for field in MAPPING_FIELDS}
    if mapping["user_id"] is None:
        raise ValidationError(f"{where}.user_id is required (e.g. \"subject_id\" or "
                              f"\"payload.customer_id\")", field=f"{where}.user_id")
    for field, source in mapping.items():
        if source is not None and (not isinstance(source, str) or not _SOURCE.match(source)):
            raise ValidationError(
                f"{where}.{field} must be subject_id, event_type, event_id, tenant_id, "
                f"payload.<key> or literal:<text> (got {source!r:.60})", field=f"{where}.{field}")
    if not any(mapping[CHANNEL_ADDRESS[c]] for c in channels):
        raise ValidationError(
            f"{where} maps no address for any of the channels {channels} (e.g. \"email\": "
            f"\"payload.email\")", field=where)
    return mapping


def normalize_rule(raw: Mapping[str, Any], *, now: int | None = None) -> dict[str, Any]:
    """Fill defaults, check every field and compile the condition. Raises `ValidationError`."""
    if not isinstance(raw, Mapping):
        raise ValidationError("a rule must be a JSON object")
    unknown = sorted(set(raw) - _FIELDS)
    if unknown:
        raise ValidationError(f"unknown fields {unknown}", field=unknown[0])
    for field in ("tenant_id", "rule_id"):
        value = raw.get(field)
        if not isinstance(value, str) or not _ID.match(value):
            raise ValidationError(f"{field} must be 1-128 characters of letters, digits and "
                                  f"._:@- (got {value!r:.60})", field=field)
    event_type = raw.get("event_type")
    if not isinstance(event_type, str) or not _EVENT_TYPE.match(event_type):
        raise ValidationError("event_type must be dotted lower-case words like order.shipped",
                              field="event_type")
    channels = raw.get("channels")
    if (not isinstance(channels, list) or not channels
            or not all(isinstance(c, str) for c in channels)):
        raise ValidationError("channels must be a non-empty list", field="channels")
    fallback = raw.get("fallback_channels") or []
    if not isinstance(fallback, list) or not all(isinstance(c, str) for c in fallback):
        raise ValidationError("fallback_channels must be a list", field="fallback_channels")
    for field, names in (("channels", channels), ("fallback_channels", fallback)):
        bad = sorted(set(names) - set(CHANNELS))
        if bad:
            raise ValidationError(f"unknown {field} {bad}; known: {list(CHANNELS)}", field=field)
    if len(set(channels) | set(fallback)) != len(channels) + len(fallback):
        raise ValidationError("a channel is listed twice", field="channels")
    recipients = raw.get("recipients")
    if not isinstance(recipients, list) or not recipients:
        raise ValidationError("recipients must be a non-empty list of mappings",
                              field="recipients")
    if len(recipients) > MAX_RECIPIENT_MAPPINGS:
        raise ValidationError(f"at most {MAX_RECIPIENT_MAPPINGS} recipient mappings",
                              field="recipients")
    template = raw.get("template")
    if template is not None:
        if not isinstance(template, Mapping) or not isinstance(template.get("template_id"), str):
            raise ValidationError("template must be {template_id, version?}", field="template")
        template = {"template_id": template["template_id"], "version": template.get("version")}
    title, content = raw.get("title"), raw.get("content")
    for field, value in (("title", title), ("content", content)):
        if value is not None and not isinstance(value, str):
            raise ValidationError(f"{field} must be text", field=field)
    if template is None and not title and not content:
        raise ValidationError("give a template or an inline title/content", field="content")
    category = raw.get("category", "general")
    if not isinstance(category, str) or not _ID.match(category):
        raise ValidationError("category must be a short identifier", field="category")
    priority = raw.get("priority", "normal")
    if priority not in PRIORITIES:
        raise ValidationError(f"priority must be one of {list(PRIORITIES)}", field="priority")
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ValidationError("enabled must be true or false", field="enabled")
    condition = raw.get("condition", "true")
    compile_condition(condition)
    updated = raw.get("updated_at")
    return {
        "tenant_id": raw["tenant_id"],
        "rule_id": raw["rule_id"],
        "event_type": event_type,
        "condition": condition,
        "recipients": [_mapping(r, i, channels) for i, r in enumerate(recipients)],
        "channels": list(channels),
        "fallback_channels": list(fallback),
        "template": template,
        "title": title,
        "content": content,
        "category": category,
        "priority": priority,
        "enabled": enabled,
        "updated_at": updated if isinstance(updated, int) else (now or now_ms()),
    }


def rule_key(tenant_id: str, rule_id: str) -> bytes:
    return f"{tenant_id}/{rule_id}".encode()


class RulesClient:
    """Put, read and delete rules on `<prefix>.rules` (compacted; a tombstone deletes)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._topic = settings.topic("rules")
        self._serde = serde("Rule")
        self._producer: KeyedProducer | None = None

    def _send(self, key: bytes, value: bytes | None) -> None:
        if self._producer is None:
            self._producer = KeyedProducer(self._settings)
        self._producer.send(self._topic, key, value)
        self._producer.flush()

    def put(self, rule: Mapping[str, Any]) -> dict[str, Any]:
        """Check and publish a rule (replacing one with the same id); returns it as stored."""
        record = normalize_rule(rule)
        self._send(rule_key(record["tenant_id"], record["rule_id"]), self._serde.encode(record))
        return record

    def delete(self, tenant_id: str, rule_id: str) -> None:
        self._send(rule_key(tenant_id, rule_id), None)

    def list(self, tenant_id: str | None = None) -> list[dict[str, Any]]:
        prefix = f"{tenant_id}/".encode() if tenant_id else b""
        latest = read_latest(self._settings, self._topic,
                             accept=lambda key: key.startswith(prefix))
        rules = [self._serde.decode(value) for value in latest.values()]
        return sorted(rules, key=lambda r: (r["tenant_id"], r["rule_id"]))

    def get(self, tenant_id: str, rule_id: str) -> dict[str, Any] | None:
        key = rule_key(tenant_id, rule_id)
        value = read_latest(self._settings, self._topic, accept=lambda k: k == key).get(key)
        return None if value is None else self._serde.decode(value)

    def __enter__(self) -> RulesClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._producer is not None:
            self._producer.flush()
