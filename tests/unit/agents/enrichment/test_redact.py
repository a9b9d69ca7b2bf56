"""Redaction: e-mails, phones, cards (Luhn) and the names the recogniser found."""

from __future__ import annotations

import pytest

from agents.enrich import enrich_batch
from agents.enrichment.redact import card_numbers, luhn_valid, redact

SAMPLE = ("Hi Ada Lovelace, Charles Babbage from Acme Corp asked you to call him on "
          "+44 20 7946 0958 or (415) 555-2671, or write to charles.babbage@example.co.uk. "
          "The card 4111 1111 1111 1111 was charged $42.50 on March 3 in London.")


@pytest.mark.parametrize(
    ("digits", "valid"),
    [
        ("4111111111111111", True),   # Visa test number
        ("5555555555554444", True),   # Mastercard test number
        ("378282246310005", True),    # American Express test number
        ("4111111111111112", False),
        ("1234567812345678", False),
        ("0", True),
    ],
)
def test_luhn(digits: str, valid: bool) -> None:
    assert luhn_valid(digits) is valid


def test_card_numbers_need_the_luhn_check_and_a_card_length() -> None:
    assert card_numbers("pay with 4111-1111-1111-1111 now") == [(9, 28)]
    assert card_numbers("order 4111 1111 1111 1112") == []
    assert card_numbers("id 411111111111") == []  # 12 digits


def test_entities_are_found_in_the_sample() -> None:
    (enrichment,) = enrich_batch([SAMPLE])
    found = {(e.text, e.kind) for e in enrichment.entities}
    print(f"\nentities: {sorted(found)}")
    assert {("Ada Lovelace", "person"), ("Charles Babbage", "person")} <= found
    assert ("Acme Corp", "org") in found
    assert ("London", "place") in found
    assert any(kind == "money" and "42.50" in text for text, kind in found)
    assert ("March 3", "date") in found


def test_names_emails_phones_and_cards_are_redacted() -> None:
    (enrichment,) = enrich_batch([SAMPLE])
    redacted = redact(SAMPLE, enrichment.people(), region="US")
    print(f"\nredacted: {redacted}")
    for secret in ("Ada Lovelace", "Charles Babbage", "charles.babbage@example.co.uk",
                   "7946 0958", "555-2671", "4111 1111 1111 1111"):
        assert secret not in redacted
    assert redacted.count("[name]") == 2
    assert redacted.count("[phone]") == 2
    assert "[email]" in redacted and "[card]" in redacted
    # What is not personal data stays.
    assert "Acme Corp" in redacted and "$42.50" in redacted and "London" in redacted


def test_a_name_is_redacted_wherever_it_occurs_but_not_inside_words() -> None:
    text = "Ada paid. Thanks, Ada! Adam and Canada stay."
    assert redact(text, ["Ada"]) == "[name] paid. Thanks, [name]! Adam and Canada stay."


def test_numbers_that_are_not_phones_or_cards_stay() -> None:
    text = "Order 12345 of 2024-03-01 costs 99.90"
    assert redact(text) == text
