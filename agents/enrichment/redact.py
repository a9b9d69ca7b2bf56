"""Redaction of personal data for channels a tenant marks insecure (SMS previews, Slack).

What is removed: e-mail addresses, phone numbers (Google's libphonenumber matcher, so only
numbers valid for their region), payment card numbers (13-19 digits passing the Luhn check,
ISO/IEC 7812-1 Annex B) and the names of people the entity recogniser found. Names are
replaced wherever they occur in the text, not by offset, so a text rendered after
enrichment (a template) is redacted too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import markupsafe
import orjson
import phonenumbers

# Bounded parts (RFC 5321 §4.5.3.1: local part <= 64 octets, labels <= 63) starting at a
# word edge: an unbounded `[...]+@` would rescan a long run of letters from every position.
EMAIL = re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@"
                   r"[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){0,8}\.[A-Za-z]{2,24}")
# 13 to 19 digits, optionally grouped by spaces or dashes (ISO/IEC 7812 lengths).
CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
PLACEHOLDERS = {"email": "[email]", "card": "[card]", "phone": "[phone]", "person": "[name]"}


def luhn_valid(digits: str) -> bool:
    """The Luhn check (ISO/IEC 7812-1 Annex B) over a string of digits."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def card_numbers(text: str) -> list[tuple[int, int]]:
    spans = []
    for match in CARD.finditer(text):
        digits = re.sub(r"\D", "", match.group())
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            spans.append(match.span())
    return spans


def phone_numbers(text: str, region: str) -> list[tuple[int, int]]:
    """Spans of phone numbers valid for `region` (or written in international form)."""
    matcher = phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.VALID)
    return [(match.start, match.end) for match in matcher]


def redact(text: str, people: Iterable[str] = (), *, region: str = "US") -> str:
    """`text` with e-mails, cards, phones and the given people's names replaced by
    placeholders (`[email]`, `[card]`, `[phone]`, `[name]`)."""
    if not text:
        return text
    text = EMAIL.sub(PLACEHOLDERS["email"], text)
    text = _replace(text, card_numbers(text), PLACEHOLDERS["card"])
    text = _replace(text, phone_numbers(text, region), PLACEHOLDERS["phone"])
    # Longest names first, so "Ada Lovelace" goes before a lone "Ada".
    for name in sorted({p.strip() for p in people if len(p.strip()) > 1}, key=len, reverse=True):
        text = re.sub(rf"(?<!\w){re.escape(name)}(?!\w)", PLACEHOLDERS["person"], text)
    return text


def redact_tree(value: Any, people: Iterable[str] = (), *, region: str = "US") -> Any:
    """Every string leaf of a JSON value (a Slack block list, a webhook payload) redacted;
    keys and structure stay, so the result is the same shape of JSON."""
    if isinstance(value, str):
        return redact(value, people, region=region)
    if isinstance(value, Mapping):
        return {key: redact_tree(item, people, region=region) for key, item in value.items()}
    if isinstance(value, list):
        return [redact_tree(item, people, region=region) for item in value]
    return value


def redact_html(text: str, people: Iterable[str] = (), *, region: str = "US") -> str:
    """An HTML document redacted like text; names also in their escaped form (Jinja's
    autoescape, i.e. MarkupSafe, writes "O'Brien" as "O&#39;Brien")."""
    people = list(people)
    return redact(text, [*people, *(str(markupsafe.escape(p)) for p in people)], region=region)


# The personal parts of a ChannelMessage, and of each of its rendered fallbacks (the same
# names: agents/route.py `with_rendered`): text, HTML, JSON text (blocks, payload), a map.
_JSON_TEXT = ("blocks", "payload")


def redact_parts(parts: Mapping[str, Any], people: Iterable[str] = (), *, region: str = "US"
                 ) -> dict[str, Any]:
    """A message's (or a rendered fallback's) title, body, html, blocks, payload and data
    redacted; other fields as they are."""
    people = list(people)
    out = dict(parts)
    for name in ("title", "body"):
        if out.get(name):
            out[name] = redact(out[name], people, region=region)
    if out.get("html"):
        out["html"] = redact_html(out["html"], people, region=region)
    for name in _JSON_TEXT:
        if out.get(name):
            tree = redact_tree(orjson.loads(out[name]), people, region=region)
            out[name] = orjson.dumps(tree).decode()
    if out.get("data"):
        out["data"] = redact_tree(out["data"], people, region=region)
    return out


def _replace(text: str, spans: list[tuple[int, int]], placeholder: str) -> str:
    for start, end in sorted(spans, reverse=True):
        text = text[:start] + placeholder + text[end:]
    return text
