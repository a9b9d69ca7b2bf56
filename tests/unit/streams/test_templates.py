"""The template document, its events and the catalog they build (streams/templates.py)."""

from __future__ import annotations

from typing import Any

import pytest

from streams.errors import ValidationError
from streams.serde import serde
from streams.templates import (
    TemplateCatalog,
    TemplateNotFound,
    activate_record,
    active_key,
    version_key,
    version_record,
)

DOCUMENT = {"template_id": "welcome", "default_locale": "en_us",
            "locales": {"en": {"title": "Hi {{ data.name }}"}, "fr_ca": {"title": "Salut"}},
            "shared": {"push.data": {"kind": "welcome"}}}


def publish(version: int, document: dict[str, Any] | None = None, tenant: str = "acme"
            ) -> dict[str, Any]:
    return version_record(tenant, document or DOCUMENT, version=version, occurred_at=version)


def test_a_document_becomes_a_publish_event_that_encodes() -> None:
    record = publish(1)
    assert record["default_locale"] == "en-US"
    assert sorted(record["locales"]) == ["en", "fr-CA"]
    assert record["shared"]["push.data"] == '{"kind":"welcome"}'  # JSON parts as JSON text
    assert serde("TemplateEvent").decode(serde("TemplateEvent").encode(record)) == record


@pytest.mark.parametrize(("change", "field"), [
    ({"template_id": "../globex/welcome"}, "template_id"),
    ({"template_id": "a/b"}, "template_id"),
    ({"template_id": "Welcome"}, "template_id"),
    ({"template_id": ""}, "template_id"),
    ({"locales": {"en": {"subject": "x"}}}, "locales.en"),
    ({"locales": {"en": {"title": "{% for %}"}}}, "locales.en.title"),
    ({"locales": {"en": {"title": "{{ unclosed"}}}, "locales.en.title"),
    ({"locales": {"not a tag": {"title": "x"}}}, "locales"),
    ({"locales": {"en": {"title": 5}}}, "locales.en"),
    ({"locales": {}, "shared": {}}, "locales"),
    ({"shared": {"push.data": {"n": 1}}}, "shared"),
    ({"shared": {"slack.blocks": {"type": "section"}}}, "shared"),
    ({"shared": {"webhook.payload": "[1, 2]"}}, "shared"),
    ({"shared": {"webhook.payload": "{not json"}}, "shared"),
    ({"experiment": {"id": "e", "variants": [{"name": "a", "weight": 1}]}},
     "experiment.variants"),
    ({"experiment": {"id": "e", "variants": [{"name": "a", "weight": -1},
                                             {"name": "b", "weight": 1}]}},
     "experiment.variants[0]"),
    ({"experiment": {"id": "e", "variants": [{"name": "a", "weight": 0},
                                             {"name": "a", "weight": 0}]}},
     "experiment.variants"),
    ({"unknown": 1}, "unknown"),
    ({"default_locale": "english please"}, "default_locale"),
])
def test_invalid_documents_name_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        version_record("acme", {**DOCUMENT, **change}, version=1, occurred_at=0)
    assert caught.value.field == field


def test_a_tenant_id_must_be_an_identifier() -> None:
    with pytest.raises(ValidationError) as caught:
        version_record("acme/../globex", DOCUMENT, version=1, occurred_at=0)
    assert caught.value.field == "tenant_id"


def test_keys_keep_versions_apart_under_compaction() -> None:
    first, changed = publish(1), publish(1, {**DOCUMENT, "locales": {"en": {"title": "x"}}})
    assert version_key("acme", "welcome", 1, first) != version_key("acme", "welcome", 1,
                                                                     changed)
    assert version_key("acme", "welcome", 1, first).startswith(b"acme/welcome/1/")
    assert active_key("acme", "welcome") == b"acme/welcome/active"


def test_resolve_pinned_active_then_latest() -> None:
    catalog = TemplateCatalog()
    for version in (1, 2, 3):
        catalog.apply(publish(version))
    assert catalog.resolve("acme", "welcome")["version"] == 3  # nothing active: latest
    catalog.apply(activate_record("acme", "welcome", 2, occurred_at=9))
    assert catalog.resolve("acme", "welcome")["version"] == 2
    assert catalog.resolve("acme", "welcome", 1)["version"] == 1
    with pytest.raises(TemplateNotFound):
        catalog.resolve("acme", "welcome", 7)


def test_a_version_is_immutable_the_first_in_the_log_stays() -> None:
    catalog = TemplateCatalog()
    catalog.apply(publish(1))
    catalog.apply(publish(1, {**DOCUMENT, "locales": {"en": {"title": "replaced"}}}))
    assert catalog.resolve("acme", "welcome", 1)["locales"]["en"]["title"] == "Hi {{ data.name }}"
    assert catalog.conflicts == 1
    catalog.apply(publish(1))  # the same content again (a retried publish) is no conflict
    assert catalog.conflicts == 1


def test_tenants_never_see_each_others_templates() -> None:
    catalog = TemplateCatalog()
    catalog.apply(publish(1, tenant="globex"))
    with pytest.raises(TemplateNotFound):
        catalog.resolve("acme", "welcome")
    assert catalog.listing("acme") == []
    assert [row["template_id"] for row in catalog.listing("globex")] == ["welcome"]


def test_an_activation_of_a_missing_version_resolves_to_not_found() -> None:
    catalog = TemplateCatalog()
    catalog.apply(publish(1))
    catalog.apply(activate_record("acme", "welcome", 5, occurred_at=1))
    with pytest.raises(TemplateNotFound, match="no version 5"):
        catalog.resolve("acme", "welcome")


def test_listing_shows_versions_active_and_locales() -> None:
    catalog = TemplateCatalog()
    catalog.apply(publish(1))
    catalog.apply(publish(2))
    catalog.apply(activate_record("acme", "welcome", 1, occurred_at=3))
    (row,) = catalog.listing("acme")
    assert (row["versions"], row["active"], row["locales"]) == ([1, 2], 1, ["en", "fr-CA"])


def test_a_version_too_large_for_one_kafka_message_is_refused() -> None:
    big = "x" * 60_000
    locales = {tag: {"title": big} for tag in ("en", "fr", "de", "es", "it", "pt", "nl", "pl",
                                              "sv", "tr", "ru", "ar", "ja", "zh", "ko", "fi")}
    with pytest.raises(ValidationError, match="at most"):
        version_record("acme", {"template_id": "big", "locales": locales}, version=1,
                       occurred_at=0)
