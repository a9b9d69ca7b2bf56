"""Sentiment: VADER on English, `unsupported` (no score) elsewhere."""

from __future__ import annotations

from agents.enrich import UNSUPPORTED, sentiment_of

from .conftest import labelled

SIGN_FLOOR = 0.9


def test_sign_is_right_on_the_labelled_english_set() -> None:
    rows = labelled("sentiment_en.tsv")
    wrong = []
    for label, text in rows:
        sentiment = sentiment_of(text, "en")
        assert sentiment.score is not None and -1 <= sentiment.score <= 1
        sign_right = sentiment.score > 0 if label == "positive" else sentiment.score < 0
        if not sign_right or sentiment.label != label:
            wrong.append(f"{label}: {sentiment.label} {sentiment.score:+.3f} {text}")
    share = 1 - len(wrong) / len(rows)
    print(f"\nVADER sign right on {share:.0%} of {len(rows)} English sentences")
    for line in wrong:
        print(f"  missed: {line}")
    assert share >= SIGN_FLOOR


def test_neutral_text_is_neutral() -> None:
    assert sentiment_of("The meeting is in room 4B.", "en").label == "neutral"


def test_other_languages_are_unsupported_without_a_score() -> None:
    for language in ("fr", "de", "ja", None):
        sentiment = sentiment_of("Merci beaucoup, c'est parfait !", language)
        assert sentiment.label == UNSUPPORTED
        assert sentiment.score is None
