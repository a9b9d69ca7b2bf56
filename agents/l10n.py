"""Localization: which of a template's locales a recipient gets, and Babel formatting.

The locale chain (`locale_chain`) tries, in order, the preferred locale from the
recipient's preferences, the recipient's own `locale`, the language detected in the
request (enrichment), then the template's default locale (the tenant's choice) and
finally `en`. Each tag is tried from most to least specific (BCP 47 "lookup", RFC 4647
§3.4): `fr-CA` → `fr`, `zh-Hant-TW` → `zh-Hant` → `zh`.

Formatting (dates, numbers, money) uses the most specific tag the recipient asked for in
the language that was chosen: a Canadian French recipient reading the `fr` template still
gets Canadian date and currency conventions.
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale, UnknownLocaleError
from babel import dates as babel_dates
from babel import numbers as babel_numbers

from connectors.sms_encoding import Encoding, encoding_of
from connectors.sms_encoding import segments as sms_segments

# The locales Tidings ships samples and tests for (issue 4). Any tag Babel knows works.
SUPPORTED = ("en", "fr", "de", "es", "it", "pt", "nl", "pl", "sv", "tr", "ru", "ar", "ja",
             "zh", "ko")
FALLBACK_LOCALE = "en"
_TAG = re.compile(r"^[A-Za-z]{2,8}(?:[-_][A-Za-z0-9]{1,8}){0,4}$")
_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")
_NAMED_FORMATS = ("short", "medium", "long", "full")
_MAX_PATTERN = 64


class LocaleError(ValueError):
    """A format argument the filters refuse (an unknown currency, a runaway pattern)."""


@dataclass(frozen=True, slots=True)
class LocaleChoice:
    """The template locale picked (`tag`, a key of the template) and how to format for it."""

    tag: str
    format_tag: str
    direction: str  # "ltr" or "rtl"

    @property
    def language(self) -> str:
        return self.tag.split("-")[0]


def normalize_tag(tag: str | None) -> str | None:
    """`fr_ca` → `fr-CA`, `zh-hant-tw` → `zh-Hant-TW`; None for anything not tag-shaped."""
    if not tag or not _TAG.match(tag.strip()):
        return None
    parts = re.split(r"[-_]", tag.strip())
    out = [parts[0].lower()]
    for part in parts[1:]:
        if len(part) == 4 and part.isalpha():
            out.append(part.title())  # script subtag (RFC 5646 §2.1.1)
        elif len(part) in (2, 3):
            out.append(part.upper())  # region
        else:
            out.append(part.lower())
    return "-".join(out)


def _truncations(tag: str) -> list[str]:
    parts = tag.split("-")
    return ["-".join(parts[:n]) for n in range(len(parts), 0, -1)]


def locale_chain(candidates: Iterable[str | None], default_locale: str | None) -> list[str]:
    """Every tag to try, most preferred first, without repeats (see module docstring)."""
    chain: list[str] = []
    for raw in [*candidates, default_locale, FALLBACK_LOCALE]:
        tag = normalize_tag(raw)
        if tag is None:
            continue
        for step in _truncations(tag):
            if step not in chain:
                chain.append(step)
    return chain


def choose_locale(available: Iterable[str], candidates: Sequence[str | None],
                  default_locale: str | None) -> LocaleChoice | None:
    """The first tag of the chain the template has (case-insensitive), or None."""
    by_folded = {normalize_tag(key) or key: key for key in available}
    wanted = [normalize_tag(c) for c in candidates]
    for tag in locale_chain(candidates, default_locale):
        if tag in by_folded:
            key = by_folded[tag]
            language = tag.split("-")[0]
            # Format with the most specific requested tag of the same language.
            format_tag = next((w for w in wanted if w and w.split("-")[0] == language), tag)
            return LocaleChoice(tag=key, format_tag=format_tag, direction=direction_of(tag))
    return None


@lru_cache(maxsize=512)
def babel_locale(tag: str) -> Locale:
    """Babel's locale for a tag, falling back to its language, then to English."""
    for step in _truncations(normalize_tag(tag) or FALLBACK_LOCALE):
        try:
            return Locale.parse(step, sep="-")
        except (UnknownLocaleError, ValueError):
            continue
    return Locale.parse(FALLBACK_LOCALE)


def direction_of(tag: str) -> str:
    return "rtl" if babel_locale(tag).character_order == "right-to-left" else "ltr"


@lru_cache(maxsize=512)
def zone(name: str | None) -> dt.tzinfo:
    """The IANA zone `name`; UTC when absent or unknown (a recipient's bad zone must not
    stop the message; the rendered times then say UTC)."""
    if not name:
        return dt.UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return dt.UTC


def to_datetime(value: object) -> dt.datetime:
    """A datetime from epoch milliseconds (int or digit string), ISO 8601 text or a datetime;
    naive values are taken as UTC."""
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, dt.date):
        moment = dt.datetime(value.year, value.month, value.day)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        moment = dt.datetime.fromtimestamp(value / 1000, dt.UTC)
    elif isinstance(value, str) and re.fullmatch(r"-?\d{1,15}", value.strip()):
        moment = dt.datetime.fromtimestamp(int(value) / 1000, dt.UTC)
    elif isinstance(value, str):
        try:
            moment = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError as exc:
            raise LocaleError(f"{value[:40]!r} is not a date or time") from exc
    else:
        raise LocaleError(f"{type(value).__name__} is not a date or time")
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _pattern(fmt: str) -> str:
    if not isinstance(fmt, str) or len(fmt) > _MAX_PATTERN:
        raise LocaleError(f"a format is one of {_NAMED_FORMATS} or a pattern of at most "
                          f"{_MAX_PATTERN} characters")
    return fmt


def _number(value: object) -> decimal.Decimal:
    try:
        number = decimal.Decimal(str(value).strip())
    except decimal.InvalidOperation as exc:
        raise LocaleError(f"{str(value)[:40]!r} is not a number") from exc
    if not number.is_finite() or abs(number.adjusted()) > 30:
        raise LocaleError("numbers are finite and below 10^30")
    return number


class Formatter:
    """The Babel filters for one recipient: a locale and a time zone."""

    def __init__(self, format_tag: str, timezone: str | None) -> None:
        self.locale = babel_locale(format_tag)
        self.tz = zone(timezone)

    def format_datetime(self, value: object, fmt: str = "medium") -> str:
        moment = to_datetime(value)
        return babel_dates.format_datetime(moment, _pattern(fmt), tzinfo=self.tz,
                                           locale=self.locale)

    def format_date(self, value: object, fmt: str = "medium") -> str:
        # A calendar date ("2026-03-04") is the same day everywhere; only a moment in time
        # is moved into the recipient's time zone first.
        if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
            day = value
        elif isinstance(value, str) and _DATE_ONLY.fullmatch(value.strip()):
            day = dt.date.fromisoformat(value.strip())
        else:
            day = to_datetime(value).astimezone(self.tz).date()
        return babel_dates.format_date(day, _pattern(fmt), locale=self.locale)

    def format_time(self, value: object, fmt: str = "short") -> str:
        moment = to_datetime(value)
        return babel_dates.format_time(moment, _pattern(fmt), tzinfo=self.tz,
                                       locale=self.locale)

    def format_number(self, value: object) -> str:
        return babel_numbers.format_decimal(_number(value), locale=self.locale)

    def format_currency(self, value: object, currency: str) -> str:
        if not isinstance(currency, str) or not re.fullmatch(r"[A-Z]{3}", currency):
            raise LocaleError(f"{str(currency)[:8]!r} is not an ISO 4217 currency code")
        return babel_numbers.format_currency(_number(value), currency, locale=self.locale)

    def filters(self) -> Mapping[str, object]:
        return {
            "format_datetime": self.format_datetime, "format_date": self.format_date,
            "format_time": self.format_time, "format_number": self.format_number,
            "format_currency": self.format_currency,
        }


_WORD_WINDOW = 20
_SMS_SPACES = str.maketrans({"\u00a0": " ", "\u202f": " ", "\u2009": " ", "\u2007": " "})


def _is_joiner(ch: str) -> bool:
    # Combining marks (U+0300-036F), variation selectors, skin-tone modifiers and the
    # zero-width joiner belong to the character before them: a cut before one would leave a
    # broken grapheme.
    code = ord(ch)
    return (0x300 <= code <= 0x36F or 0xFE00 <= code <= 0xFE0F or code == 0x200D
            or 0x1F3FB <= code <= 0x1F3FF)


def truncate(value: object, length: int = 255, killwords: bool = False, end: str = "…",
             leeway: int = 0, segments: int | None = None) -> str:
    """Cut `value` to `length` characters, or (with `segments`) to the longest prefix that,
    with `end`, is sent in at most that many SMS segments; never inside a combining
    sequence, and at a word boundary unless `killwords`. Segments are counted as the SMS
    connector bills them (connectors/sms_encoding.py: GSM-7 or UCS-2, escapes and surrogate
    pairs kept whole). The arguments before `segments` are those of Jinja's own `truncate`,
    so templates written for it keep working; `leeway` lets a text that is at most that much
    too long through whole."""
    text = str(value)
    if segments is not None:
        if not 1 <= segments <= 10:
            raise LocaleError("segments is between 1 and 10")
        # CLDR puts no-break spaces in dates and numbers ("12:00\u202fAM", "1\u202f234");
        # none is in the GSM alphabet, and one would turn the whole SMS into UCS-2.
        text = text.translate(_SMS_SPACES)
        if sms_segments(text)[1] <= segments:
            return text
        if encoding_of(text) is Encoding.GSM_7 and encoding_of(end) is Encoding.UCS_2:
            end = "..."  # "…" alone would turn a GSM-7 text into UCS-2: 70, not 160, a part
        low, high = 0, len(text)  # the longest fitting cut is in [low, high)
        while low < high - 1:
            middle = (low + high) // 2
            if sms_segments(text[:middle].rstrip() + end)[1] <= segments:
                low = middle
            else:
                high = middle
        cut = low
    else:
        if not 0 <= length <= 100_000 or not 0 <= leeway <= 1000:
            raise LocaleError("length is between 0 and 100000, leeway at most 1000")
        if len(text) <= length + leeway:
            return text
        cut = max(0, length - len(end))
    if not killwords and 0 < cut < len(text) and not text[cut].isspace():
        # Back to the last space, if it is near: Chinese, Japanese (and Korean, between
        # phrases) do not put spaces between words, and going back to a distant space would
        # throw away most of the text.
        space = max(text.rfind(" ", 0, cut), text.rfind("\n", 0, cut))
        if space > 0 and cut - space <= _WORD_WINDOW:
            cut = space
    while 0 < cut < len(text) and _is_joiner(text[cut]):
        cut -= 1
    return text[:cut].rstrip() + end
