"""What rendering costs the pipeline: routed events/s of one worker, plain vs templated.

    TIDINGS_KAFKA_BOOTSTRAP=127.0.0.1:9092 .venv/bin/python tests/bench/render_pipeline.py \
        [--events 2000] [--budget 180]

For each mode, a fresh topic prefix: the sample templates published (templated mode), then
`--events` requests published (webhook channel, recipients spread over the 15 locales), then
one worker started with the intake and dispatch stages; the rate is the channel topic's
record timestamps, first to last (as tests/bench/scenarios.py measures the pipeline).
Nothing is delivered. The run's topics are deleted afterwards.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

import kafka_io  # noqa: E402
import processes  # noqa: E402
from confluent_kafka.admin import AdminClient  # noqa: E402

from agents.l10n import SUPPORTED  # noqa: E402
from streams.publisher import Publisher  # noqa: E402
from streams.serde import serde  # noqa: E402
from streams.settings import load_settings  # noqa: E402
from streams.template_store import TemplateStore  # noqa: E402
from streams.topics import channel_topic, create_topics, topic_specs  # noqa: E402

ORDER = {"order_id": "A-1042", "total": "1234.5", "currency": "EUR", "eta": "2026-03-04"}


def _requests(count: int, templated: bool) -> list[dict[str, Any]]:
    out = []
    for i in range(count):
        request: dict[str, Any] = {
            "tenant_id": "acme", "idempotency_key": f"k{i}", "category": "orders",
            "channels": ["webhook"],
            "recipients": [{"user_id": f"u{i}", "webhook_url": "http://127.0.0.1:9/none",
                            "locale": SUPPORTED[i % len(SUPPORTED)],
                            "timezone": "Europe/Paris"}],
            "data": {**ORDER, "order_id": f"A-{i}"},
        }
        if templated:
            request["template"] = {"template_id": "order-shipped"}
        else:
            request["title"] = f"Order A-{i} has shipped"
            request["content"] = f"Your order A-{i} (1,234.50 €) is on its way."
        out.append(request)
    return out


def run(bootstrap: str, events: int, templated: bool, budget_s: float, log_dir: Path
        ) -> dict[str, Any]:
    prefix = f"benchrender{uuid.uuid4().hex[:8]}"
    env = processes.worker_env(bootstrap, prefix, log_dir / prefix, stages=["intake",
                                                                           "dispatch"])
    os.environ.update({k: v for k, v in env.items() if k.startswith("TIDINGS_")})
    settings = load_settings()
    create_topics(settings)
    try:
        if templated:
            with TemplateStore(settings) as store:
                for path in sorted((REPO / "deploy" / "local" / "templates").glob("*.yaml")):
                    store.publish("acme", yaml.safe_load(path.read_text()), activate=True)
        with Publisher(settings) as publisher:
            publisher.publish_many(_requests(events, templated))
        topic = channel_topic(settings, "webhook")
        watch = kafka_io.Watermarks(bootstrap, topic)
        worker = processes.start_worker(prefix, env, log_dir)
        try:
            routed = watch.wait_for(events, budget_s)
        finally:
            watch.close()
            worker.stop()
        records = kafka_io.read_all(bootstrap, topic)
        stamps = sorted(r.timestamp_ms for r in records)
        span_s = (stamps[-1] - stamps[0]) / 1000 if len(stamps) > 1 else 0.0
        sample = serde("ChannelMessage").decode(records[0].value) if records else {}
        return {"mode": "templated" if templated else "plain", "routed": routed,
                "events_per_s": round(len(stamps) / span_s, 1) if span_s else None,
                "span_s": round(span_s, 2), "sample_title": sample.get("title"),
                "dead_letters": kafka_io.count(bootstrap, settings.topic("deadletter"))}
    finally:
        admin = AdminClient({"bootstrap.servers": bootstrap})
        names = [s.name for s in topic_specs(settings)] + [
            f"{settings.app_id}-{t}-changelog" for t in ("dedup", "rate-limits")]
        for future in admin.delete_topics(names, operation_timeout=30).values():
            try:
                future.result()
            except Exception:  # noqa: BLE001, S110 - a topic that was never made
                pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--budget", type=float, default=180.0, help="seconds per mode")
    args = parser.parse_args()
    bootstrap = os.environ.get("TIDINGS_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    with tempfile.TemporaryDirectory() as tmp:
        results = [run(bootstrap, args.events, templated, args.budget, Path(tmp))
                   for templated in (False, True)]
    for r in results:
        print(f"{r['mode']:10} {r['routed']:>6} routed  {r['events_per_s']} events/s "
              f"over {r['span_s']} s  dead letters {r['dead_letters']}  "
              f"e.g. {r['sample_title']!r}")
    time.sleep(0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
