"""`tidings rules|preferences|events` as a user runs them, against the real broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

RULE = """
tenant_id: acme
rule_id: shipped
event_type: order.shipped
condition: int(payload.total) > 10
recipients: [{user_id: payload.customer_id, email: payload.email}]
channels: [email]
title: Order ${order_id} shipped
"""


def tidings(env, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args], input=stdin, capture_output=True,
        text=True, env={**os.environ, **env}, timeout=120, check=False,
    )


def test_rules_put_list_show_delete(tidings_env, create_topics, tmp_path: Path):
    create_topics()
    path = tmp_path / "rules.yaml"
    path.write_text(RULE)
    put = tidings(tidings_env, "rules", "put", str(path))
    assert put.returncode == 0, put.stderr
    assert put.stdout.split() == ["acme/shipped"]

    listed = tidings(tidings_env, "rules", "list", "--tenant", "acme")
    assert listed.stdout.strip() == "acme/shipped\torder.shipped\temail\tint(payload.total) > 10"
    shown = json.loads(tidings(tidings_env, "rules", "show", "acme", "shipped").stdout)
    assert shown["recipients"][0]["user_id"] == "payload.customer_id"

    deleted = tidings(tidings_env, "rules", "delete", "acme", "shipped")
    assert deleted.returncode == 0
    assert tidings(tidings_env, "rules", "list").stdout == ""
    missing = tidings(tidings_env, "rules", "show", "acme", "shipped")
    assert missing.returncode == 1 and "no rule acme/shipped" in missing.stderr


def test_a_bad_rule_is_refused_with_the_reason(tidings_env, create_topics, tmp_path: Path):
    create_topics()
    path = tmp_path / "rules.yaml"
    path.write_text(RULE.replace("int(payload.total) > 10", "int(payload.total) >"))
    refused = tidings(tidings_env, "rules", "put", str(path))
    assert refused.returncode == 1
    assert "rule 1: condition is not valid CEL" in refused.stderr
    assert tidings(tidings_env, "rules", "list").stdout == ""


def test_preferences_set_and_show(tidings_env, create_topics):
    create_topics()
    changed = tidings(tidings_env, "preferences", "set", "acme", "u1", "--opt-out-channel",
                      "sms", "--opt-out-category", "marketing", "--quiet-hours", "22:00-07:00",
                      "--timezone", "Europe/Paris", "--locale", "fr-FR")
    assert changed.returncode == 0, changed.stderr
    again = tidings(tidings_env, "preferences", "set", "acme", "u1", "--opt-in-channel", "sms",
                    "--locale", "none")
    assert again.returncode == 0, again.stderr
    # Shown as the stage will fold the two changes (no worker is running here).
    shown = json.loads(tidings(tidings_env, "preferences", "show", "acme", "u1").stdout)
    assert shown["channel_opt_outs"] == [] and shown["category_opt_outs"] == ["marketing"]
    assert shown["quiet_hours"] == {"start": "22:00", "end": "07:00"}
    assert (shown["timezone"], shown["locale"], shown["revision"]) == ("Europe/Paris", None, 2)

    refused = tidings(tidings_env, "preferences", "set", "acme", "u1", "--opt-out-category",
                      "security")
    assert refused.returncode == 1 and "required category" in refused.stderr
    bad_zone = tidings(tidings_env, "preferences", "set", "acme", "u1", "--timezone", "Mars/X")
    assert bad_zone.returncode == 1 and "unknown time zone" in bad_zone.stderr


async def test_events_publish_checks_every_line_first(tidings_env, create_topics, read_topic):
    create_topics()
    events = read_topic(tidings_env.topic("events"), "DomainEvent")
    good = '{"tenant_id":"acme","event_type":"order.shipped","subject_id":"o1","payload":{}}'
    bad = '{"tenant_id":"acme","event_type":"order.shipped","subject_id":"o2",' \
          '"payload":{"items":[1]}}'
    refused = tidings(tidings_env, "events", "publish", "-", stdin=f"{good}\n{bad}\n")
    assert refused.returncode == 1 and "line 2: payload.items" in refused.stderr
    published = tidings(tidings_env, "events", "publish", "-", stdin=f"{good}\n")
    assert published.returncode == 0, published.stderr
    (event_id,) = published.stdout.split()
    (record,) = await events.wait_until(lambda r: r, 30)
    assert record["event_id"] == event_id and record["subject_id"] == "o1"
