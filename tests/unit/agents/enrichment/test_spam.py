"""Spam score: each signal, and the labelled set separated at the default threshold."""

from __future__ import annotations

import pytest

from agents.enrichment.models import detect_language
from agents.enrichment.spam import WEIGHTS, combine, spam_verdict

from .conftest import labelled

DEFAULT_THRESHOLD = 0.8


@pytest.mark.parametrize(
    ("text", "language", "signals"),
    [
        ("Log in at http://192.168.4.5/login", "en", {"ip_literal_link"}),
        ("Log in at http://[2001:db8::1]/login", "en", {"ip_literal_link"}),
        ("Log in at http://3232235777/", "en", {"ip_literal_link"}),
        ("See https://xn--pple-43d.com/id", "en", {"punycode_link"}),
        ("See https://аpple.com/id", "en", {"punycode_link"}),
        ("Open [paypal.com](https://evil.example.net/x)", "en", {"link_text_mismatch"}),
        ('<a href="https://evil.example.net">www.paypal.com</a>', "en",
         {"link_text_mismatch"}),
        ("<https://evil.example.net/x|paypal.com>", "en", {"link_text_mismatch"}),
        ("Open [www.paypal.com](https://www.paypal.com/signin)", "en", set()),
        ("Open [our shop](https://evil.example.net/x)", "en", set()),
        ("Report: https://bit.ly/abc", "en", {"url_shortener"}),
        ("Act now, this is urgent", "en", {"urgency"}),
        ("Répondez immédiatement", "fr", {"urgency"}),
        ("Bitte sofort antworten", "de", {"urgency"}),
        ("Bitte sofort antworten", "en", set()),  # German phrases only for German text
        ("Please verify your account", "en", {"credential_request"}),
        ("Verifique su cuenta hoy", "es", {"credential_request"}),
        ("Conferma la tua password", "it", {"credential_request"}),
        ("You have won a car", "en", {"prize_claim"}),
        # Every template locale has its own phrases (the detected language picks them).
        ("Pilne: zweryfikuj swoje konto", "pl", {"urgency", "credential_request"}),
        ("Brådskande: verifiera ditt konto", "sv", {"urgency", "credential_request"}),
        ("Acil: hesabınızı doğrulayın", "tr", {"urgency", "credential_request"}),
        ("Срочно: подтвердите свой аккаунт", "ru", {"urgency", "credential_request"}),
        ("عاجل: تحقق من حسابك", "ar", {"urgency", "credential_request"}),
        ("至急、アカウントを確認してください", "ja", {"urgency", "credential_request"}),
        ("紧急：请验证您的账户", "zh", {"urgency", "credential_request"}),
        ("긴급: 계정을 확인하세요", "ko", {"urgency", "credential_request"}),
        ("Вы выиграли приз", "ru", {"prize_claim"}),
        ("THIS IS A VERY LOUD MESSAGE FOR EVERYONE", "en", {"all_caps"}),
        ("FYI OK", "en", set()),  # too few letters to call it shouting
        ("Your order has shipped: https://shop.example.com/t/1", "en", set()),
    ],
)
def test_signals(text: str, language: str, signals: set[str]) -> None:
    verdict = spam_verdict(text, language)
    assert {reason.split(":")[0] for reason in verdict.reasons} == signals
    assert verdict.score == combine(signals)


def test_score_is_a_noisy_or_within_0_and_1() -> None:
    assert combine([]) == 0.0
    assert combine(["urgency"]) == WEIGHTS["urgency"]
    everything = combine(WEIGHTS)
    assert 0.99 < everything <= 1.0
    assert combine(["urgency", "credential_request"]) > combine(["credential_request"])


def test_phishing_and_normal_sets_are_separated_at_the_default_threshold() -> None:
    rows = labelled("spam.tsv")
    scores = {"phishing": [], "normal": []}
    for label, text in rows:
        verdict = spam_verdict(text, detect_language(text))
        scores[label].append((verdict.score, text, verdict.reasons))
    lowest_phishing = min(scores["phishing"])
    highest_normal = max(scores["normal"])
    print(f"\nspam score: {len(scores['phishing'])} phishing-like, lowest {lowest_phishing[0]}; "
          f"{len(scores['normal'])} normal, highest {highest_normal[0]} "
          f"(threshold {DEFAULT_THRESHOLD})")
    assert lowest_phishing[0] > DEFAULT_THRESHOLD, lowest_phishing
    assert highest_normal[0] <= DEFAULT_THRESHOLD, highest_normal
    languages = {detect_language(text) for label, text in rows if label == "phishing"}
    assert {"en", "fr", "de", "es", "it", "pt", "nl"} <= languages
