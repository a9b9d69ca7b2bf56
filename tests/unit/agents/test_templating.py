"""Rendering template versions into channel parts (agents/templating.py), inline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from agents import templating
from agents.l10n import SUPPORTED
from agents.render_process import RenderFailed, run_inline
from agents.route import channel_messages, failover_message
from agents.templating import RenderError, apply, plan
from connectors.sms_encoding import segments
from streams.templates import version_record

REPO = Path(__file__).resolve().parents[3]
SAMPLES = {path.stem: yaml.safe_load(path.read_text())
           for path in (REPO / "deploy" / "local" / "templates").glob("*.yaml")}
CHANNELS = ["email", "sms", "push", "slack", "webhook"]
DATA = {"name": "Ann", "product": "Acme", "code": "493021", "order_id": "A-1042",
        "total": "1234.5", "currency": "EUR", "eta": "2026-03-04",
        "expires_at": "2026-03-01T23:45:00Z", "device": "Firefox", "location": "Lyon",
        "at": "2026-03-01T23:30:00Z"}


def record(document: dict[str, Any], version: int = 1) -> dict[str, Any]:
    return version_record("acme", document, version=version, occurred_at=0)


def request(locale: str | None = None, timezone: str | None = None, user: str = "u1",
            **extra: Any) -> dict[str, Any]:
    return {
        "tenant_id": "acme", "notification_id": "n1", "category": "account",
        "priority": "normal", "created_at": 1772407800000, "data": dict(DATA),
        "recipients": [{"user_id": user, "locale": locale, "timezone": timezone,
                        "email": "ann@example.com", "phone": "+14155550100",
                        "push_tokens": ["fcm:t1"], "slack": "C0123456789",
                        "webhook_url": "https://example.com/h", "metadata": {}}],
        "channels": CHANNELS, **extra,
    }


def render(document: dict[str, Any], req: dict[str, Any], channels: list[str] | None = None,
           **options: Any) -> tuple[templating.Selection, dict[str, dict[str, Any]]]:
    selection, job = plan(record(document), req, channels or CHANNELS, **options)
    return selection, run_inline(job)


@pytest.mark.parametrize("tag", SUPPORTED)
@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_sample_renders_every_channel_in_every_locale(name: str, tag: str) -> None:
    selection, out = render(SAMPLES[name], request(tag, "Asia/Tokyo"))
    assert selection.locale.tag == tag
    assert set(out) == set(CHANNELS)
    for channel, parts in out.items():
        assert parts.get("title") or parts.get("body"), channel
    html = out["email"]["html"]
    direction = "rtl" if tag == "ar" else "ltr"
    assert f'<html lang="{tag}" dir="{direction}">' in html
    assert "<strong>" in html  # the text's markdown, rendered
    assert isinstance(orjson.loads(out["webhook"]["payload"]), dict)
    assert all(isinstance(v, str) for v in out["push"]["data"].values())
    if name == "security_alert":
        assert segments(out["sms"]["body"])[1] == 1  # cut to one SMS segment


def test_each_locale_has_its_own_words() -> None:
    titles = {tag: render(SAMPLES["order_shipped"], request(tag), ["email"])[1]["email"]["title"]
              for tag in SUPPORTED}
    assert len(set(titles.values())) == len(SUPPORTED)
    assert titles["ja"] == "ご注文 A-1042 を発送しました"
    assert titles["ar"] == "تم شحن الطلب A-1042"
    assert titles["de"] == "Bestellung A-1042 wurde versandt"


@pytest.mark.parametrize(("tag", "zone", "moment", "money"), [
    ("en", "America/New_York", "March 1, 2026, 6:30:00\u202fPM EST", "€1,234.50"),
    ("ar", "Asia/Riyadh", "2 مارس 2026، 2:30:00 ص +0300", "\u200f1,234.50\xa0€"),
    ("ja", "Asia/Tokyo", "2026年3月2日 8:30:00 JST", "€1,234.50"),
    ("zh", "Asia/Shanghai", "2026年3月2日 +0800 07:30:00", "€1,234.50"),
    ("ko", "Asia/Seoul", "2026년 3월 2일 AM 8시 30분 0초 +0900", "€1,234.50"),
])
def test_dates_and_money_follow_the_recipient(tag: str, zone: str, moment: str,
                                              money: str) -> None:
    _, security = render(SAMPLES["security_alert"], request(tag, zone), ["email"])
    assert moment in security["email"]["body"]
    _, order = render(SAMPLES["order_shipped"], request(tag, zone), ["email"])
    assert money in order["email"]["body"]


def test_fallback_chain_region_then_language_then_tenant_default_then_en() -> None:
    document = {"template_id": "t", "default_locale": "de",
                "locales": {tag: {"text": tag} for tag in ("en", "fr", "de")}}
    assert render(document, request("fr-CA"), ["sms"])[1]["sms"]["body"] == "fr"
    assert render(document, request("ja-JP"), ["sms"])[1]["sms"]["body"] == "de"
    assert render(document, request(None), ["sms"])[1]["sms"]["body"] == "de"
    del document["default_locale"]
    assert render(document, request("ja-JP"), ["sms"])[1]["sms"]["body"] == "en"


def test_preferences_and_detected_language_are_candidates_too() -> None:
    document = {"template_id": "t", "locales": {tag: {"text": tag} for tag in
                                                 ("en", "fr", "es", "de")}}
    # The preferred locale (preferences) comes before the recipient's own.
    assert render(document, request("fr"), ["sms"], preferred_locale="es-MX"
                  )[1]["sms"]["body"] == "es"
    # The detected language (enrichment) comes after the recipient's own.
    assert render(document, request("fr"), ["sms"], detected_language="de"
                  )[1]["sms"]["body"] == "fr"
    assert render(document, request(None), ["sms"], detected_language="de"
                  )[1]["sms"]["body"] == "de"


def test_extra_context_is_merged_but_cannot_shadow_the_request() -> None:
    document = {"template_id": "t", "locales": {"en": {
        "text": "{{ sentiment.label }} {{ detected_language }} {{ data.name }}"}}}
    extra = {"sentiment": {"label": "negative", "score": 0.9}, "detected_language": "en",
             "data": {"name": "Mallory"}}
    _, out = render(document, request("en"), ["sms"], extra=extra)
    assert out["sms"]["body"] == "negative en Ann"


def test_a_variant_overrides_only_its_parts() -> None:
    document = SAMPLES["welcome"]
    titles = {}
    for user in (f"u{i}" for i in range(40)):
        selection, out = render(document, request("en", user=user), ["email"])
        titles[selection.variant] = out["email"]["title"]
        assert selection.details()["experiment_id"] == "welcome-subject-2026"
        assert selection.details()["variant"] == selection.variant
    assert titles["control"] == "Welcome to Acme, Ann"
    assert titles["friendly"] == "Ann, you're in! Welcome to Acme 🎉"
    # Other locales have no override: both variants read the same there.
    fr = {render(document, request("fr", user=f"u{i}"), ["email"])[1]["email"]["title"]
          for i in range(40)}
    assert fr == {"Bienvenue sur Acme, Ann"}


def test_the_same_recipient_always_gets_the_same_variant() -> None:
    picks = {render(SAMPLES["welcome"], request("en", user="u7"), ["email"])[0].variant
             for _ in range(5)}
    assert len(picks) == 1


def test_json_parts_cannot_be_broken_by_data() -> None:
    document = {"template_id": "t", "locales": {"en": {"title": "x"}},
                "shared": {"webhook.payload": {"note": "{{ data.name }}"}}}
    req = request("en")
    req["data"]["name"] = '", "admin": true, "x": "'
    _, out = render(document, req, ["webhook"])
    assert orjson.loads(out["webhook"]["payload"]) == {"note": '", "admin": true, "x": "'}


def test_html_parts_escape_data_and_text_parts_do_not() -> None:
    document = {"template_id": "t", "locales": {"en": {
        "title": "{{ data.name }}", "text": "{{ data.name }}",
        "email.html": "<p>{{ data.name }}</p>{{ parts.text | markdown }}"}}}
    req = request("en")
    req["data"]["name"] = "<script>x</script>"
    _, out = render(document, req, ["email"])
    assert out["email"]["title"] == "<script>x</script>"
    assert "<script>" not in out["email"]["html"]
    assert out["email"]["html"].count("&lt;script&gt;") == 2


def test_a_channel_without_parts_is_a_render_error() -> None:
    document = {"template_id": "t", "locales": {"en": {"email.subject": "Hi"}}}
    with pytest.raises(RenderError, match=r"template 't' v1 \(en\): has no part for the sms"):
        plan(record(document), request("en"), ["sms"])


def test_an_undefined_variable_fails_the_whole_render() -> None:
    document = {"template_id": "t", "locales": {"en": {"title": "ok",
                                                       "text": "{{ data.missing }}"}}}
    with pytest.raises(RenderFailed) as caught:
        render(document, request("en"), ["email"])
    assert caught.value.error_class == "UndefinedError"


def test_rendered_parts_land_on_the_channel_messages() -> None:
    req = request("ja", "Asia/Tokyo", channels=["email", "push", "slack"],
                  fallback_channels=[])
    selection, out = render(SAMPLES["welcome"], req, ["email", "push", "slack"])
    messages = list(channel_messages(req))
    for message in messages:
        apply(message, out, selection)
    email, push, slack = messages
    assert email["locale"] == "ja" and email["html"].startswith("<!DOCTYPE html>")
    assert push["data"]["kind"] == "welcome" and push["data"]["order_id"] == "A-1042"
    assert orjson.loads(slack["blocks"])[0]["type"] == "header"
    assert email["title"] == push["title"] == "Acmeへようこそ、Annさん"


def test_a_failover_sends_what_the_template_says_for_the_fallback_channel() -> None:
    req = request("de", "Europe/Berlin", channels=["email"], fallback_channels=["sms", "push"])
    selection, out = render(SAMPLES["password_reset"], req, ["email", "sms", "push"])
    (email,) = channel_messages(req)
    apply(email, out, selection)
    assert sorted(email["rendered_fallbacks"]) == ["push", "sms"]

    sms = failover_message(email)
    assert sms is not None and sms["channel"] == "sms"
    assert sms["title"] is None and sms["html"] is None
    assert sms["body"] == out["sms"]["body"]
    assert sms["body"].startswith("493021 ist Ihr Code")
    assert sms["locale"] == "de" and list(sms["rendered_fallbacks"]) == ["push"]
    push = failover_message(sms)
    assert push is not None and push["data"]["kind"] == "password-reset"
    assert push["rendered_fallbacks"] == {}
