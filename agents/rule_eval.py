"""Rule evaluation, without Kafka: which rules an event triggers and the requests they make.

`RuleBook` holds every rule of every tenant, compiled once when it arrives (the rules stage
feeds it from the compacted rules topic). `RuleBook.evaluate(event)` runs each rule of the
event's tenant and type in rule-id order; a rule whose condition does not evaluate, or whose
recipients cannot be built, is reported as a `RuleFailure` with its id, and the other rules
still run.

Notification ids are derived, not drawn: uuid5 over tenant, event id, rule id and user id, so
a replayed event makes the same request again, which the intake stage reports as a duplicate
(its idempotency key is the same id) instead of notifying twice.
"""

from __future__ import annotations

import string
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import cel

from streams.errors import TidingsError, ValidationError
from streams.requests import CHANNEL_ADDRESS, normalize_request
from streams.rules import compile_condition

__all__ = ["CompiledRule", "RuleBook", "RuleFailure", "RuleError", "Evaluation",
           "notification_id_for"]

# A fixed namespace for uuid5 (RFC 9562 §5.5): the same event and rule give the same id.
_NOTIFICATION_NAMESPACE = uuid.UUID("0d6f4b8e-3f55-4f0b-9c27-7a1e2b5d9c41")


class RuleError(TidingsError):
    """A rule could not be applied to an event; the message starts with the rule id."""


@dataclass(frozen=True, slots=True)
class CompiledRule:
    rule: dict[str, Any]
    program: cel.Program

    @property
    def rule_id(self) -> str:
        return str(self.rule["rule_id"])


@dataclass(frozen=True, slots=True)
class RuleFailure:
    rule_id: str
    error: RuleError


@dataclass(slots=True)
class Evaluation:
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (rule id, req)
    failures: list[RuleFailure] = field(default_factory=list)
    evaluated: int = 0


def notification_id_for(tenant_id: str, event_id: str, rule_id: str, user_id: str) -> str:
    name = f"{tenant_id}\x1f{event_id}\x1f{rule_id}\x1f{user_id}"
    return f"ntf_{uuid.uuid5(_NOTIFICATION_NAMESPACE, name).hex}"


def activation(event: Mapping[str, Any]) -> dict[str, Any]:
    """What a condition sees: `event` (its fields but the payload) and `payload`."""
    return {
        "event": {
            "event_id": event["event_id"], "tenant_id": event["tenant_id"],
            "event_type": event["event_type"], "subject_id": event["subject_id"],
            "occurred_at": event["occurred_at"], "metadata": dict(event.get("metadata") or {}),
        },
        "payload": dict(event.get("payload") or {}),
    }


def condition_holds(program: cel.Program, context: cel.Context | dict[str, Any]) -> bool:
    """True or False; `RuleError` for a condition that fails or is not a boolean."""
    try:
        result = program.execute(context)
    # The binding raises built-in errors (KeyError for a missing payload key, TypeError for
    # "no such overload", ZeroDivisionError, RuntimeError from a function): every one of them
    # means "this condition does not evaluate on this event".
    except Exception as exc:  # noqa: BLE001
        raise RuleError(f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(result, bool):
        raise RuleError(f"condition gave {type(result).__name__} {result!r:.60}, not a bool")
    return result


def resolve(source: str | None, event: Mapping[str, Any]) -> str | None:
    """The value a recipient-mapping source names in `event` (None when absent)."""
    if source is None:
        return None
    if source.startswith("literal:"):
        return source.removeprefix("literal:")
    if source.startswith("payload."):
        value = (event.get("payload") or {}).get(source.removeprefix("payload."))
        return value if value else None
    value = event.get(source)
    return str(value) if value else None


def _substitute(text: str | None, event: Mapping[str, Any]) -> str | None:
    if text is None:
        return None
    values = {**(event.get("payload") or {}), "event_id": event["event_id"],
              "event_type": event["event_type"], "subject_id": event["subject_id"]}
    # string.Template only replaces ${name} with the value: no attribute or item access,
    # no format specs; unknown names stay as written.
    return string.Template(text).safe_substitute(values)


def build_requests(rule: Mapping[str, Any], event: Mapping[str, Any], now: int
                   ) -> list[dict[str, Any]]:
    """One single-recipient request per recipient mapping of a rule that fired."""
    requests = []
    for index, mapping in enumerate(rule["recipients"]):
        user_id = resolve(mapping["user_id"], event)
        if user_id is None:
            raise RuleError(f"recipients[{index}].user_id: {mapping['user_id']} is empty")
        recipient: dict[str, Any] = {
            name: resolve(mapping.get(name), event)
            for name in ("email", "phone", "slack", "webhook_url", "locale", "timezone")
        }
        tokens = resolve(mapping.get("push_tokens"), event)
        recipient.update(user_id=user_id, metadata={},
                         push_tokens=[t.strip() for t in (tokens or "").split(",") if t.strip()])

        def addressed(channels: list[str], who: dict[str, Any] = recipient) -> list[str]:
            return [c for c in channels if who.get(CHANNEL_ADDRESS[c])]

        channels = addressed(rule["channels"])
        if not channels:
            raise RuleError(f"recipient {user_id} has no address for any of {rule['channels']}")
        notification_id = notification_id_for(event["tenant_id"], event["event_id"],
                                              rule["rule_id"], user_id)
        raw = {
            "tenant_id": event["tenant_id"],
            "notification_id": notification_id,
            "idempotency_key": notification_id,
            "priority": rule["priority"],
            "category": rule["category"],
            "recipients": [recipient],
            "channels": channels,
            "fallback_channels": addressed(rule["fallback_channels"]),
            "template": rule["template"],
            "title": _substitute(rule["title"], event),
            "content": _substitute(rule["content"], event),
            "data": dict(event.get("payload") or {}),
            "metadata": {**(event.get("metadata") or {}), "rule_id": rule["rule_id"],
                         "event_id": event["event_id"], "event_type": event["event_type"]},
            "created_at": now,
        }
        try:
            requests.append(normalize_request(raw))
        except ValidationError as exc:
            raise RuleError(f"the request for {user_id} is invalid: {exc}") from exc
    return requests


class RuleBook:
    """Every tenant's rules by event type, compiled; fed by `put` and `remove`."""

    def __init__(self) -> None:
        self._by_key: dict[str, CompiledRule] = {}
        self._index: dict[tuple[str, str], list[CompiledRule]] = {}

    def __len__(self) -> int:
        return len(self._by_key)

    def put(self, rule: dict[str, Any]) -> None:
        """Add or replace a rule; `ValidationError` if its condition does not compile."""
        compiled = CompiledRule(rule, compile_condition(rule["condition"]))
        key = f"{rule['tenant_id']}/{rule['rule_id']}"
        self._drop(key)
        self._by_key[key] = compiled
        bucket = self._index.setdefault((rule["tenant_id"], rule["event_type"]), [])
        bucket.append(compiled)
        bucket.sort(key=lambda c: c.rule_id)

    def remove(self, key: str) -> None:
        """Forget the rule stored under `tenant/rule_id` (a tombstone on the topic)."""
        self._drop(key)

    def _drop(self, key: str) -> None:
        old = self._by_key.pop(key, None)
        if old is not None:
            bucket = self._index[(old.rule["tenant_id"], old.rule["event_type"])]
            bucket.remove(old)

    def rules_for(self, tenant_id: str, event_type: str) -> list[CompiledRule]:
        return list(self._index.get((tenant_id, event_type), ()))

    def evaluate(self, event: Mapping[str, Any], now: int) -> Evaluation:
        outcome = Evaluation()
        context: cel.Context | None = None
        for compiled in self.rules_for(event["tenant_id"], event["event_type"]):
            if not compiled.rule["enabled"]:
                continue
            # Converting the event into CEL values is most of the cost of a condition (64 µs
            # of 65 µs, tests/bench/rules.py): done once per event, shared by its rules.
            context = context or cel.Context(activation(event))
            outcome.evaluated += 1
            try:
                if condition_holds(compiled.program, context):
                    for request in build_requests(compiled.rule, event, now):
                        outcome.requests.append((compiled.rule_id, request))
            except RuleError as exc:
                error = RuleError(f"rule {compiled.rule_id}: {exc}")
                outcome.failures.append(RuleFailure(compiled.rule_id, error))
        return outcome
