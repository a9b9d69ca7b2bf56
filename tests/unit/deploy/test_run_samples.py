"""`make run`'s sample rules, domain events and templates fit together: every sample event
fires its rules without a failure, and every request that names a template renders in the
recipient's locale on each of its channels (inline; the broker path is
tests/integration/test_rules_templates.py)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from agents.render_process import run_inline
from agents.rule_eval import RuleBook
from agents.templating import plan
from streams.events import normalize_event
from streams.rules import normalize_rule
from streams.templates import version_record

LOCAL = Path(__file__).resolve().parents[3] / "deploy" / "local"
NOW = 1772377200000  # 2026-03-01T15:00:00Z


def templates() -> dict[str, dict]:
    out = {}
    for path in sorted((LOCAL / "templates").glob("*.yaml")):
        record = version_record("acme", yaml.safe_load(path.read_text()), version=1,
                                occurred_at=0)
        out[record["template_id"]] = record
    return out


def fired() -> list[tuple[str, dict]]:
    book = RuleBook()
    for rule in yaml.safe_load((LOCAL / "rules.yaml").read_text()):
        book.put(normalize_rule(rule, now=NOW))
    requests = []
    for line in (LOCAL / "events.jsonl").read_text().splitlines():
        outcome = book.evaluate(normalize_event(json.loads(line), now=NOW), NOW)
        assert not outcome.failures, outcome.failures
        requests += outcome.requests
    return requests


def test_the_sample_orders_render_in_their_customers_locales() -> None:
    catalog = templates()
    rendered = {}
    for rule_id, request in fired():
        ref = request.get("template")
        if not ref:
            continue
        channels = request["channels"]
        selection, job = plan(catalog[ref["template_id"]], request, channels)
        parts = run_inline(job)
        assert all(parts[c].get("title") or parts[c].get("body") for c in channels)
        rendered[(rule_id, request["recipients"][0]["user_id"])] = (
            selection.locale.tag, parts["email"]["title"], parts["sms"]["body"])
    assert rendered == {
        ("order-shipped", "u6"): ("de", "Bestellung 1001 wurde versandt",
                                  "Bestellung 1001 versandt. Zustellung voraussichtlich am "
                                  "04.03.2026."),
        ("order-shipped", "u7"): ("fr", "Votre commande 1002 a été expédiée",
                                  "Commande 1002 expédiée. Livraison prévue le 5 mars 2026."),
        ("order-shipped", "u8"): ("ja", "ご注文 1003 を発送しました",
                                  "ご注文 1003 を発送しました。お届け予定：2026/03/06"),
    }
