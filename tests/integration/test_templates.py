"""Templates end to end: published through the CLI and the API to the real broker, rendered
by a worker process, delivered to the SMTP emulator and the webhook receiver."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from connectors.emulators.smtp_server import SmtpServer
from connectors.emulators.webhook_receiver import WebhookReceiver
from streams.publisher import Publisher
from streams.template_store import TemplateStore

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SAMPLES = sorted((REPO / "deploy" / "local" / "templates").glob("*.yaml"))
CREATED_AT = 1772377200000  # 2026-03-01T15:00:00Z


def cli(env: Any, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "streams.cli", "templates", *args], cwd=REPO,
        env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def publish(env: Any, requests: list[dict[str, Any]]) -> list[str]:
    def send() -> list[str]:
        with Publisher(env.settings()) as publisher:
            return publisher.publish_many(requests)

    return await asyncio.to_thread(send)


def templated(template_id: str, channels: list[str], recipient: dict[str, Any],
              data: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {
        "tenant_id": "acme", "idempotency_key": f"k-{time.monotonic_ns()}",
        "category": "orders", "channels": channels, "created_at": CREATED_AT,
        "recipients": [{"user_id": "u1", **recipient}],
        "template": {"template_id": template_id}, "data": data, **extra,
    }


ORDER = {"order_id": "A-1042", "total": "1234.5", "currency": "EUR", "eta": "2026-03-04"}


@pytest.fixture
async def receiver(tidings_env: Any):
    async with WebhookReceiver(tidings_env["TIDINGS_WEBHOOK_SECRET"]) as running:
        yield running


async def test_cli_published_templates_arrive_localized(tidings_env, worker, receiver,
                                                       read_topic):
    async with SmtpServer(tls_mode="none") as smtp:
        tidings_env.update(
            TIDINGS_ENABLED_CHANNELS='["email", "webhook"]', TIDINGS_SMTP_HOST="127.0.0.1",
            TIDINGS_SMTP_PORT=str(smtp.port), TIDINGS_SMTP_TLS_MODE="none",
            TIDINGS_SMTP_FROM="Acme <notify@acme.example>",
        )
        worker()  # creates the topics, the templates topic among them
        published = cli(tidings_env, "publish", "--tenant", "acme", "--activate",
                        *map(str, SAMPLES))
        assert sorted(line.split("\t")[0] for line in published.splitlines()) == [
            "order-shipped", "password-reset", "security-alert", "welcome"]
        listing = cli(tidings_env, "list", "--tenant", "acme")
        assert "order-shipped\tversions=1\tactive=1" in listing
        assert "ar,de,en,es,fr,it,ja,ko,nl,pl,pt,ru,sv,tr,zh" in listing
        assert cli(tidings_env, "list", "--tenant", "globex") == ""  # another tenant's view

        statuses = read_topic(tidings_env.topic("status"), "DeliveryStatus")
        french, arabic = await publish(tidings_env, [
            templated("order-shipped", ["email"], {
                "email": "ann@example.com", "locale": "fr-CA", "timezone": "America/Toronto",
            }, ORDER),
            templated("order-shipped", ["webhook"], {
                "user_id": "u2", "webhook_url": f"{receiver.url}/hook", "locale": "ar",
                "timezone": "Asia/Riyadh",
            }, ORDER),
        ])
        (mail,) = await smtp.wait_for(1, timeout=90)
        (hook,) = await receiver.wait_for(1, timeout=60)

    message = mail.message
    assert message["Subject"] == "Votre commande A-1042 a été expédiée"
    assert message["Content-Language"] == "fr"
    text = message.get_body(("plain",)).get_content()
    # fr-CA conventions for the money and the full date (Babel/CLDR).
    assert "1\u00a0234,50\u00a0€" in text and "mercredi 4 mars 2026" in text
    html = message.get_body(("html",)).get_content()
    assert 'lang="fr" dir="ltr"' in html and "<strong>A-1042</strong>" in html

    payload = hook.payload["data"]
    assert payload["title"] == "تم شحن الطلب A-1042"
    assert payload["locale"] == "ar"
    assert payload["payload"]["event"] == "order.shipped"
    assert "الأربعاء" in payload["payload"]["eta"]  # Wednesday, in Arabic

    records = await statuses.wait_until(
        lambda r: len([s for s in r if s["status"] == "delivered"]) == 2, 30)
    rendered = {s["notification_id"]: s["details"] for s in records if s["status"] == "rendered"}
    assert rendered[french] == {"template_id": "order-shipped", "template_version": "1",
                                "locale": "fr"}
    assert rendered[arabic]["locale"] == "ar"


HOSTILE = {
    "template_id": "hostile",
    "locales": {"en": {"title": "{{ 'x' * 10**9 }}"},
                "de": {"title": "{% for i in range(10000) %}{% for j in range(10000) %}"
                                "{% for k in range(10000) %}{% endfor %}{% endfor %}"
                                "{% endfor %}"},
                "fr": {"title": "{{ ().__class__.__base__.__subclasses__() }}"}},
}
GOOD = {"template_id": "hello", "locales": {"en": {"title": "Hello {{ data.name }}",
                                                   "text": "Variant {{ variant }}"}},
        "experiment": {"id": "hello-1", "variants": [{"name": "a", "weight": 1},
                                                     {"name": "b", "weight": 1}]}}


async def test_hostile_templates_are_dead_lettered_and_the_worker_goes_on(
        tidings_env, worker, receiver, read_topic):
    tidings_env.update(TIDINGS_RENDER_TIMEOUT_S="2")
    running = worker()

    def publish_templates() -> None:
        with TemplateStore(tidings_env.settings()) as store:
            assert store.publish("acme", HOSTILE) == 1
            assert store.publish("acme", GOOD, activate=True) == 1

    await asyncio.to_thread(publish_templates)
    dead = read_topic(tidings_env.topic("deadletter"), "DeadLetter")
    statuses = read_topic(tidings_env.topic("status"), "DeliveryStatus")
    hook = {"webhook_url": f"{receiver.url}/hook"}
    hostile = await publish(tidings_env, [
        templated("hostile", ["webhook"], {**hook, "user_id": f"h-{locale}", "locale": locale},
                  {}) for locale in ("en", "de", "fr")
    ] + [templated("missing", ["webhook"], {**hook, "user_id": "h-missing"}, {})])
    letters = await dead.wait_until(lambda r: len(r) == 4, 90)
    by_id = {d["notification_id"]: d for d in letters}
    assert {d["stage"] for d in letters} == {"render"}
    assert "template 'hostile' v1 (en): TemplateRefused" in by_id[hostile[0]]["message"]
    assert "template 'hostile' v1 (de): RenderTimeout" in by_id[hostile[1]]["message"]
    assert "(fr): SecurityError" in by_id[hostile[2]]["message"]
    assert "has no template 'missing'" in by_id[hostile[3]]["message"]
    assert all(d["original_bytes"] for d in letters)

    good = await publish(tidings_env, [
        templated("hello", ["webhook"], {**hook, "user_id": f"g{i}"}, {"name": f"G{i}"})
        for i in range(4)
    ])
    arrived = await receiver.wait_for(4, timeout=60)
    assert running.process.poll() is None  # the worker is still up
    assert receiver.received and not [h for h in arrived if h.payload["data"]["title"] is None]
    titles = sorted(h.payload["data"]["title"] for h in arrived)
    assert titles == ["Hello G0", "Hello G1", "Hello G2", "Hello G3"]
    records = await statuses.wait_until(
        lambda r: len([s for s in r if s["status"] == "rendered"]) == 4, 30)
    variants = {s["notification_id"]: s["details"]["variant"]
                for s in records if s["status"] == "rendered"}
    assert set(variants) == set(good)
    bodies = {h.payload["data"]["notification_id"]: h.payload["data"]["body"] for h in arrived}
    assert all(bodies[nid] == f"Variant {variants[nid]}" for nid in good)


def cli_fails(env: Any, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "streams.cli", "templates", *args], cwd=REPO,
        env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode != 0, done.stdout
    return done.stderr


def test_versions_are_immutable_and_one_is_active(tidings_env, create_topics, tmp_path):
    import json

    create_topics()
    first, second, bad = (tmp_path / "v1.json", tmp_path / "v2.yaml", tmp_path / "bad.yaml")
    first.write_text(json.dumps({"template_id": "note", "locales": {"en": {"title": "one"}}}))
    second.write_text("template_id: note\nlocales:\n  en:\n    title: two\n")
    bad.write_text("template_id: note\nlocales:\n  en:\n    title: '{% if %}'\n")

    assert cli(tidings_env, "publish", "--tenant", "acme", str(first)) == "note\t1\n"
    assert cli(tidings_env, "publish", "--tenant", "acme", str(second)) == "note\t2\n"
    assert "template syntax error" in cli_fails(tidings_env, "publish", "--tenant", "acme",
                                                str(bad))
    # Nothing active yet: requests get the latest.
    assert '"version": 2' in cli(tidings_env, "show", "--tenant", "acme", "note")
    assert cli(tidings_env, "activate", "--tenant", "acme", "note", "1") == "note\t1\tactive\n"
    shown = json.loads(cli(tidings_env, "show", "--tenant", "acme", "note"))
    assert (shown["version"], shown["locales"]["en"]["title"]) == (1, "one")
    assert "note\tversions=1,2\tactive=1" in cli(tidings_env, "list", "--tenant", "acme")
    assert "no version 7" in cli_fails(tidings_env, "activate", "--tenant", "acme", "note", "7")
    assert "has no template 'note'" in cli_fails(tidings_env, "show", "--tenant", "globex",
                                                 "note")
    assert "an id, not a path" in cli_fails(tidings_env, "show", "--tenant", "acme",
                                            "../globex/note")

    def republish() -> None:
        with TemplateStore(tidings_env.settings()) as store:
            store.publish("acme", {"template_id": "note", "version": 2,
                                   "locales": {"en": {"title": "replaced"}}})

    with pytest.raises(Exception, match="already published; versions are immutable"):
        republish()


async def test_a_templated_notification_in_quiet_hours_goes_out_rendered_when_they_end(
        tidings_env, worker, receiver, read_topic):
    """Quiet hours defer the message after enrichment and rendering, so what is delivered at
    the window's end is the rendered message, in the locale the user prefers."""
    import datetime

    from streams.preferences import PreferencesClient

    settings = tidings_env.settings()
    worker()
    cli(tidings_env, "publish", "--tenant", "acme", "--activate", *map(str, SAMPLES))
    now = datetime.datetime.now(datetime.UTC)
    quiet_end = now + datetime.timedelta(seconds=8)
    window = f"{(now - datetime.timedelta(minutes=1)):%H:%M:%S}-{quiet_end:%H:%M:%S}"

    def prefer() -> None:
        with PreferencesClient(settings) as preferences:
            preferences.change("acme", "u-quiet", [
                ("set_quiet_hours", window), ("set_timezone", "UTC"), ("set_locale", "de"),
            ])

    prefs = read_topic(tidings_env.topic("preferences"), "Preferences")
    await asyncio.to_thread(prefer)
    await prefs.wait_until(lambda r: any(p["kind"] == "state" for p in r), 60)
    statuses = read_topic(tidings_env.topic("status"), "DeliveryStatus")
    (quiet,) = await publish(tidings_env, [templated("order-shipped", ["webhook"], {
        "user_id": "u-quiet", "webhook_url": f"{receiver.url}/hook", "locale": "fr",
    }, ORDER)])

    (hook,) = await receiver.wait_for(1, timeout=60)
    assert hook.received_at >= quiet_end.timestamp() - 1
    assert hook.payload["data"]["title"] == "Bestellung A-1042 wurde versandt"
    assert hook.payload["data"]["locale"] == "de"
    records = await statuses.wait_until(
        lambda r: any(s["status"] == "delivered" for s in r), 30)
    (deferred,) = [s for s in records if s["status"] == "deferred"]
    assert deferred["notification_id"] == quiet
    assert deferred["details"]["cause"] == "quiet_hours"
