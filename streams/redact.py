"""Masking of personal data and secrets in log records (a structlog processor).

Logs leave the worker: they go to files, log shippers and people's terminals, so nothing in
them may name a recipient or unlock a provider. Two passes, both over every log record:

- by field name: a field called `email`, `phone`, `push_tokens`, `*token*`, `*secret*`,
  `*password*`, `api_key`, `authorization`, ... is masked whole, whatever it holds;
- by shape, inside every string (the message, exception text, tracebacks, nested values):
  e-mail addresses, E.164 phone numbers, push tokens, Standard Webhooks and Slack secrets,
  bearer/basic credentials, JWTs, credentials in URLs and secret-looking query parameters.

Masks keep what an operator needs to tell cases apart (an e-mail's domain, a phone number's
last two digits, which kind of token it was) and nothing that identifies the person.
Dead-letter records are not logs: they keep their original bytes for redrive.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

MASK = "[masked]"

# Field names whose whole value is masked (lower case; matched exactly or as a substring).
_SENSITIVE_NAMES = frozenset({
    "email", "phone", "push_tokens", "push_token", "to", "recipient", "address",
    "webhook_url", "slack", "api_key", "apikey", "authorization", "cookie",
})
_SENSITIVE_PARTS = ("token", "secret", "password", "passwd", "private_key", "credential")
# Ids the logs must keep, although their names contain a sensitive part.
_KEEP_NAMES = frozenset({"token_count"})


def _email(match: re.Match[str]) -> str:
    return f"***@{match.group('domain')}"


def _phone(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    return f"+***{digits[-2:]}"


def _keep_prefix(mask: str) -> Callable[[re.Match[str]], str]:
    return lambda match: f"{match.group('prefix')}{mask}"


# Order matters: credentials embedded in URLs and headers go before the generic shapes that
# could match parts of them. Each pattern cites the format it follows.
_PATTERNS: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], str] | str], ...] = (
    # PEM private keys (RFC 7468), e.g. an APNs .p8 key or an FCM service account's key.
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|$)",
                re.DOTALL), "[private key masked]"),
    # userinfo in a URL (RFC 3986 §3.2.1): scheme://user:password@host
    (re.compile(r"(?P<prefix>\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s:@]+:[^/\s@]+@"),
     _keep_prefix(f"{MASK}@")),
    # HTTP credentials (RFC 9110 §11): Authorization: Bearer/Basic <credentials>
    (re.compile(r"(?P<prefix>\b(?:Bearer|Basic)\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE),
     _keep_prefix(MASK)),
    # Secret-looking query parameters and key=value pairs in free text.
    (re.compile(r"(?P<prefix>\b(?:api[_-]?key|access[_-]?token|auth[_-]?token|token|secret|"
                r"password|sig|signature|key)=)[^&\s\"',;]+", re.IGNORECASE),
     _keep_prefix(MASK)),
    # Slack incoming-webhook URLs carry their secret in the path: /services/T…/B…/<secret>.
    (re.compile(r"(?P<prefix>/services/)T[A-Za-z0-9]+/B[A-Za-z0-9]+/[A-Za-z0-9]+"),
     _keep_prefix(MASK)),
    # Standard Webhooks signing secrets (`whsec_` + base64) and signatures (`v1,` + base64).
    (re.compile(r"\bwhsec_[A-Za-z0-9+/=]+"), "whsec_" + MASK),
    (re.compile(r"\bv1,[A-Za-z0-9+/]{20,}={0,2}"), "v1," + MASK),
    # Slack tokens: xoxb- (bot), xoxp- (user), xoxa-/xoxr-/xoxs-, xapp- (app-level).
    (re.compile(r"\b(?P<prefix>xox[abeoprs]-|xapp-)[A-Za-z0-9-]+"), _keep_prefix(MASK)),
    # JWTs (RFC 7519): three base64url parts, the first a JSON header (`eyJ`).
    (re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), "[jwt masked]"),
    # Our push token forms: `fcm:<registration token>`, `apns:<device token>`.
    (re.compile(r"\b(?P<prefix>fcm:|apns:)[A-Za-z0-9_:.-]+"), _keep_prefix(MASK)),
    # Bare APNs device tokens (32 bytes as 64 hex digits) and FCM registration tokens
    # (base64url, well over 100 characters).
    (re.compile(r"\b[0-9a-fA-F]{64}\b"), "[device token masked]"),
    (re.compile(r"\b[A-Za-z0-9_-]{20,}:[A-Za-z0-9_-]{100,}"), "[device token masked]"),
    # E-mail addresses (RFC 5322 addr-spec, the common dot-atom form).
    (re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@(?P<domain>[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)"),
     _email),
    # Phone numbers in E.164 (ITU-T E.164: + then up to 15 digits), also with the spaces,
    # dots, dashes or parentheses people type; ids and timestamps never start with '+'.
    (re.compile(r"\+\d(?:[\s().-]?\d){6,14}"), _phone),
)


def redact_text(text: str) -> str:
    """`text` with every e-mail, phone number, token and secret in it masked."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _is_sensitive(name: str) -> bool:
    lowered = name.lower()
    if lowered in _KEEP_NAMES:
        return False
    return lowered in _SENSITIVE_NAMES or any(part in lowered for part in _SENSITIVE_PARTS)


def redact_value(value: Any, depth: int = 0) -> Any:
    """Mask inside strings, and whole values under sensitive names, in nested data."""
    if isinstance(value, str):
        return redact_text(value)
    if depth > 8:  # a log record is shallow; stop on anything self-referential
        return value
    if isinstance(value, Mapping):
        return {k: MASK if isinstance(k, str) and _is_sensitive(k) and v
                else redact_value(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(v, depth + 1) for v in value]
    if isinstance(value, bytes | bytearray):
        return redact_text(bytes(value).decode("utf-8", "replace"))
    if isinstance(value, BaseException):
        return redact_text(f"{type(value).__name__}: {value}")
    return value


def redact_processor(_logger: Any, _method: str, event: MutableMapping[str, Any]
                     ) -> MutableMapping[str, Any]:
    """The structlog processor: runs last before rendering, after exceptions are formatted."""
    for key, value in list(event.items()):
        if key.startswith("_"):  # structlog's own (the stdlib record), never rendered
            continue
        if _is_sensitive(key) and value:
            event[key] = MASK
        elif isinstance(value, str | Mapping | list | tuple | bytes | BaseException):
            event[key] = redact_value(value)
    return event
