"""Locale choice, fallback and Babel formatting (agents/l10n.py)."""

from __future__ import annotations

import pytest

from agents.l10n import (
    SUPPORTED,
    Formatter,
    LocaleError,
    choose_locale,
    direction_of,
    locale_chain,
    truncate,
)
from connectors.sms_encoding import segments

# 2026-03-01T23:30:00Z in each recipient's zone: the day moves to 2 March east of UTC and
# stays 1 March west of it. Expected strings are CLDR's (Babel 2.18) conventions.
EVERY_LOCALE = [
    ("en", "America/New_York", "USD", "3/1/26, 6:30\u202fPM", "$1,234.50"),
    ("fr", "Europe/Paris", "EUR", "02/03/2026 00:30", "1\u202f234,50\xa0€"),
    ("de", "Europe/Berlin", "EUR", "02.03.26, 00:30", "1.234,50\xa0€"),
    ("es", "Europe/Madrid", "EUR", "2/3/26, 0:30", "1.234,50\xa0€"),
    ("it", "Europe/Rome", "EUR", "02/03/26, 00:30", "1.234,50\xa0€"),
    ("pt", "America/Sao_Paulo", "BRL", "01/03/2026 20:30", "R$\xa01.234,50"),
    ("nl", "Europe/Amsterdam", "EUR", "02-03-2026, 00:30", "€\xa01.234,50"),
    ("pl", "Europe/Warsaw", "PLN", "2.03.2026, 00:30", "1\xa0234,50\xa0zł"),
    ("sv", "Europe/Stockholm", "SEK", "2026-03-02 00:30", "1\xa0234,50\xa0kr"),
    ("tr", "Europe/Istanbul", "TRY", "2.03.2026 02:30", "₺1.234,50"),
    ("ru", "Europe/Moscow", "RUB", "02.03.2026, 02:30", "1\xa0234,50\xa0₽"),
    ("ar", "Asia/Riyadh", "SAR", "2\u200f/3\u200f/2026، 2:30 ص", "\u200f1,234.50\xa0ر.س.\u200f"),
    ("ja", "Asia/Tokyo", "JPY", "2026/03/02 8:30", "￥1,234"),
    ("zh", "Asia/Shanghai", "CNY", "2026/3/2 07:30", "¥1,234.50"),
    ("ko", "Asia/Seoul", "KRW", "26. 3. 2. AM 8:30", "₩1,234"),
]


def test_the_table_covers_every_supported_locale() -> None:
    assert sorted(row[0] for row in EVERY_LOCALE) == sorted(SUPPORTED)


@pytest.mark.parametrize(("tag", "zone", "currency", "moment", "money"), EVERY_LOCALE)
def test_dates_and_money_in_the_recipients_locale_and_zone(
        tag: str, zone: str, currency: str, moment: str, money: str) -> None:
    formatter = Formatter(tag, zone)
    assert formatter.format_datetime("2026-03-01T23:30:00Z", "short") == moment
    assert formatter.format_datetime(1772407800000, "short") == moment  # epoch ms, same time
    assert formatter.format_currency("1234.5", currency) == money


def test_a_calendar_date_is_the_same_day_in_every_zone() -> None:
    assert Formatter("en", "Pacific/Honolulu").format_date("2026-03-04", "long") == \
        "March 4, 2026"
    # A moment is moved into the zone first: 01:00 UTC is still 3 March in Honolulu.
    assert Formatter("en", "Pacific/Honolulu").format_date("2026-03-04T01:00:00Z", "long") == \
        "March 3, 2026"


def test_an_unknown_zone_formats_in_utc() -> None:
    assert Formatter("en", "Mars/Olympus").format_datetime("2026-03-01T23:30:00Z", "HH:mm") == \
        "23:30"


@pytest.mark.parametrize(("call", "args"), [
    ("format_currency", ("12", "euro")),
    ("format_number", ("twelve",)),
    ("format_number", ("1e400",)),
    ("format_datetime", ("yesterday",)),
    ("format_datetime", ("2026-03-01T00:00:00Z", "y" * 100)),
])
def test_bad_arguments_are_locale_errors(call: str, args: tuple[str, ...]) -> None:
    with pytest.raises(LocaleError):
        getattr(Formatter("en", None), call)(*args)


def test_right_to_left_is_arabic_only_among_the_supported() -> None:
    assert [tag for tag in SUPPORTED if direction_of(tag) == "rtl"] == ["ar"]


@pytest.mark.parametrize(("candidates", "default", "chain"), [
    (["fr-CA"], "de", ["fr-CA", "fr", "de", "en"]),
    (["fr_ca"], None, ["fr-CA", "fr", "en"]),
    (["zh-hant-tw"], "en", ["zh-Hant-TW", "zh-Hant", "zh", "en"]),
    (["es", "pt-BR", None], "en", ["es", "pt-BR", "pt", "en"]),
    (["not a tag!", ""], "it", ["it", "en"]),
])
def test_locale_chain(candidates: list[str | None], default: str | None,
                      chain: list[str]) -> None:
    assert locale_chain(candidates, default) == chain


@pytest.mark.parametrize(("available", "candidates", "default", "picked", "formats_as"), [
    (["en", "fr"], ["fr-CA"], "en", "fr", "fr-CA"),        # region → language
    (["en", "de"], ["fr-CA"], "de", "de", "de"),           # → the tenant's default
    (["en", "ja"], ["fr-CA"], "it", "en", "en"),           # → en
    (["en", "fr"], ["de", "fr-BE"], "en", "fr", "fr-BE"),  # a later candidate
    (["EN", "Pt-br"], ["pt-BR"], None, "Pt-br", "pt-BR"),  # case does not matter
])
def test_choose_locale_follows_the_fallback_chain(
        available: list[str], candidates: list[str], default: str, picked: str,
        formats_as: str) -> None:
    choice = choose_locale(available, candidates, default)
    assert choice is not None
    assert (choice.tag, choice.format_tag) == (picked, formats_as)


def test_nothing_matches_without_en_or_the_default() -> None:
    assert choose_locale(["ja"], ["fr"], "de") is None


def test_truncate_by_characters_keeps_combining_marks_whole() -> None:
    assert truncate("abcdef", 4) == "abc…"
    assert truncate("short", 10) == "short"
    # é written as e + U+0301: a cut after the e would drop the accent, so it moves back.
    assert truncate("cafe\u0301s au lait", 4, end="") == "caf"
    assert truncate("cafe\u0301s au lait", 5, end="") == "cafe\u0301"


@pytest.mark.parametrize(("text", "parts"), [
    ("a" * 400, 1), ("a" * 400, 2), ("é€" * 300, 2), ("日本語" * 100, 1),
    ("😀" * 100, 1), ("x" * 159 + "😀", 1),
])
def test_truncate_to_sms_segments_fits_them(text: str, parts: int) -> None:
    cut = truncate(text, segments=parts)
    assert segments(cut)[1] <= parts
    assert len(cut) < len(text)
    # The longest that fits: one more character of the text would not.
    assert segments(text[: len(cut.rstrip('.…')) + 1] + "…")[1] > parts or \
        segments(text[: len(cut.rstrip('.…')) + 1] + "...")[1] > parts


def test_truncate_to_segments_keeps_a_gsm_text_in_gsm() -> None:
    cut = truncate("Signed in at 6:30\u202fPM. " + "x" * 300, segments=1, killwords=True)
    assert segments(cut) == (segments("a")[0], 1)
    assert len(cut) == 160 and cut.endswith("...")


def test_truncate_cuts_at_a_word_unless_told_to_kill_words() -> None:
    text = "New sign-in from Firefox in Lyon. " * 10
    assert truncate(text, 20) == "New sign-in from…"
    assert truncate(text, 20, True) == "New sign-in from Fi…"
    assert truncate(text, 20, False, "...") == "New sign-in from..."
    assert truncate("exactly twenty-two ch", 20, leeway=5) == "exactly twenty-two ch"
    by_segments = truncate(text, segments=1)
    assert segments(by_segments)[1] == 1 and by_segments.endswith(" from...")
    assert len(by_segments) > 140  # it still fills the segment up to the last word
    # No space near the cut (Japanese has none between words): it cuts at a character.
    japanese = "新しいログインがありました。心当たりがない場合はパスワードを変更してください。" * 3
    assert len(truncate(japanese, segments=1)) == 70


def test_a_text_that_fits_is_unchanged() -> None:
    assert truncate("Your code is 1234", segments=1) == "Your code is 1234"
