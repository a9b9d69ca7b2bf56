"""`tidings enrich`: one JSON object per input line."""

from __future__ import annotations

import json

from click.testing import CliRunner

from streams.cli import main

LINES = [
    "Hi Ada Lovelace, your refund from Acme Corp was approved. Thank you!",
    "URGENT: verify your password at http://10.1.2.3/login within 24 hours",
    "",
    "Votre commande a été expédiée et arrivera demain.",
]


def test_each_line_becomes_one_json_object() -> None:
    result = CliRunner().invoke(main, ["enrich", "-"], input="\n".join(LINES) + "\n")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert len(rows) == len(LINES)
    assert all(set(row) == {"language", "sentiment", "entities", "spam_score",
                            "spam_reasons"} for row in rows)
    thanks, phishing, empty, french = rows
    assert thanks["language"] == "en"
    assert thanks["sentiment"]["label"] == "positive"
    assert {"text": "Ada Lovelace", "label": "person"} in thanks["entities"]
    assert phishing["spam_score"] > 0.8
    assert "ip_literal_link: 10.1.2.3" in phishing["spam_reasons"]
    assert empty["language"] is None
    assert french["language"] == "fr"
    assert french["sentiment"] == {"label": "unsupported", "score": None}


def test_no_entities_skips_the_recogniser() -> None:
    result = CliRunner().invoke(main, ["enrich", "--no-entities", "-"], input=LINES[0] + "\n")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["entities"] == []


def test_release_needs_ids_or_all() -> None:
    result = CliRunner().invoke(main, ["quarantine", "release"])
    assert result.exit_code != 0
    assert "name the notification ids to release, or pass --all" in result.output
