"""Metrics end to end: a real Prometheus (Debian's binary) scrapes real workers.

A routing-only worker (intake + dispatch) fills the webhook channel topic that no one
delivers from; Prometheus must see `notification_consumer_lag` rise with each batch.
Then a worker with every stage takes over, and the lag must fall to zero as it drains. On
the way, `promtool check metrics` lints a live `/metrics` page, and every query of the
Grafana dashboard and every recording rule is evaluated by the real server.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import kafka_local
import pytest
import yaml

from connectors.emulators.webhook_receiver import WebhookReceiver
from streams.publisher import Publisher

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "tidings.rules.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "tidings.json"
BATCH = 300
BATCHES = 3


class Prometheus:
    """`prometheus` on a free port with a temporary storage dir, scraping every second."""

    def __init__(self, workdir: Path, targets: list[str]) -> None:
        self.port = kafka_local.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s",
                       "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [{"job_name": "tidings-worker",
                                "static_configs": [{"targets": targets}]}],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log_path = workdir / "prometheus.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            ["prometheus", f"--config.file={workdir / 'prometheus.yml'}",
             f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self._log, stderr=subprocess.STDOUT,
        )
        self.client = httpx.AsyncClient(base_url=self.url, timeout=10)

    async def ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log_path.read_text()
            try:
                if (await self.client.get("/-/ready")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
        raise AssertionError(f"prometheus not ready: {self.log_path.read_text()[-2000:]}")

    async def query(self, expr: str) -> list[dict[str, Any]]:
        answer = (await self.client.get("/api/v1/query", params={"query": expr})).json()
        assert answer["status"] == "success", (expr, answer)
        return answer["data"]["result"]

    async def scalar(self, expr: str) -> float | None:
        result = await self.query(expr)
        return float(result[0]["value"][1]) if result else None

    async def wait_for(self, expr: str, predicate: Any, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = await self.scalar(expr)
            if value is not None and predicate(value):
                return value
            await asyncio.sleep(0.5)
        raise AssertionError(f"{expr} is {value} after {timeout}s")

    async def stop(self) -> None:
        await self.client.aclose()
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


@pytest.fixture
async def receiver(tidings_env: Any) -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver(tidings_env["TIDINGS_WEBHOOK_SECRET"]) as running:
        yield running


@pytest.fixture
def ports() -> Iterator[tuple[int, int]]:
    yield kafka_local.free_port(), kafka_local.free_port()


def requests(receiver: WebhookReceiver, batch: int) -> list[dict[str, Any]]:
    return [{
        "tenant_id": "acme", "idempotency_key": f"lag-{batch}-{i}", "channels": ["webhook"],
        "recipients": [{"user_id": f"user-{i % 50}", "webhook_url": f"{receiver.url}/hook"}],
        "title": "Backlog", "content": f"notification {batch}/{i}",
    } for i in range(BATCH)]


async def publish(env: Any, batch: list[dict[str, Any]]) -> None:
    def send() -> None:
        with Publisher(env.settings()) as publisher:
            publisher.publish_many(batch)

    await asyncio.to_thread(send)


async def test_prometheus_sees_the_lag_rise_with_a_backlog_and_fall_as_it_drains(
        tidings_env, worker, receiver, ports, tmp_path):
    routing_port, delivery_port = ports
    prometheus = Prometheus(tmp_path, [f"127.0.0.1:{routing_port}",
                                       f"127.0.0.1:{delivery_port}"])
    channel_topic = tidings_env.topic("channel.webhook")
    app = tidings_env["TIDINGS_APP_ID"]
    channel_lag = ("sum(max by (group, topic, partition) "
                   f'(notification_consumer_lag{{topic="{channel_topic}"}}))')
    all_lag = ("sum(max by (group, topic, partition) "
               f'(notification_consumer_lag{{group=~"{app}|{app}\\\\.delay-line"}}))')
    try:
        await prometheus.ready()
        started = time.time()
        routing = worker(TIDINGS_STAGES='["intake", "dispatch"]',
                         TIDINGS_WEB_PORT=str(routing_port), TIDINGS_METRICS_LAG_INTERVAL_S="1")
        # Nothing published yet: Prometheus sees the worker and a zero lag.
        assert await prometheus.wait_for(channel_lag, lambda v: True, timeout=120) == 0

        rising = []
        for batch in range(1, BATCHES + 1):
            await publish(tidings_env, requests(receiver, batch))
            # No one delivers: the channel topic's lag is exactly what was routed to it.
            rising.append(await prometheus.wait_for(
                channel_lag, lambda v, n=batch * BATCH: v == n, timeout=120))
        assert rising == [BATCH * b for b in range(1, BATCHES + 1)]
        assert len(receiver.delivered) == 0

        # The live page of a real worker passes Prometheus' own linter.
        page = httpx.get(f"http://127.0.0.1:{routing_port}/metrics").text
        lint = subprocess.run(["promtool", "check", "metrics"], input=page, text=True,
                              capture_output=True, timeout=60)
        assert lint.returncode == 0, lint.stdout + lint.stderr

        assert routing.stop() == 0
        drain_from = time.time()
        worker(TIDINGS_WEB_PORT=str(delivery_port), TIDINGS_METRICS_LAG_INTERVAL_S="1")
        await receiver.wait_for(BATCH * BATCHES, timeout=180)
        await prometheus.wait_for(all_lag, lambda v: v == 0, timeout=120)
        drained = time.time()

        # What Prometheus recorded: the lag's path over the whole run.
        answer = (await prometheus.client.get("/api/v1/query_range", params={
            "query": channel_lag, "start": started, "end": drained + 1, "step": "1s",
        })).json()
        series = [(float(t), float(v)) for t, v in answer["data"]["result"][0]["values"]]
        peak = max(v for _, v in series)
        assert peak == BATCH * BATCHES
        last_peak = max(t for t, v in series if v == peak)
        first_zero = min(t for t, v in series if v == 0 and t > last_peak)
        print(f"\npeak lag {peak:.0f} records; drained {first_zero - last_peak:.1f}s after "
              f"the last peak sample ({drained - drain_from:.1f}s from starting the delivery "
              f"worker, its start-up included)")
        changes = [f"{t - started:.0f}s:{v:.0f}" for i, (t, v) in enumerate(series)
                   if i == 0 or v != series[i - 1][1]]
        print("lag as Prometheus saw it (seconds into the run: records):", " ".join(changes))

        delivered = ('sum(max by (tenant_id, channel) '
                     '(notification_requests_total{status="delivered"}))')
        assert await prometheus.wait_for(delivered, lambda v: v == BATCH * BATCHES, 30)
        latency_count = "sum(notification_duration_seconds_count)"
        assert await prometheus.wait_for(latency_count, lambda v: v == BATCH * BATCHES, 30)

        page = httpx.get(f"http://127.0.0.1:{delivery_port}/metrics").text
        lint = subprocess.run(["promtool", "check", "metrics"], input=page, text=True,
                              capture_output=True, timeout=60)
        assert lint.returncode == 0, lint.stdout + lint.stderr

        # Every dashboard query runs on the real server (label_replace's regexes are only
        # compiled here, not by `promtool check rules`), and the recording rules record.
        board = json.loads(DASHBOARD.read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                await prometheus.query(target["expr"].replace("$__rate_interval", "1m"))
        (per_stage,) = (panel for panel in board["panels"]
                        if panel["title"] == "Consumer lag per stage and channel")
        stages = await prometheus.query(per_stage["targets"][0]["expr"])
        assert {s["metric"].get("stage") for s in stages} >= {"intake", "dispatch",
                                                              "deliver webhook"}
        assert await prometheus.query("tidings:consumer_lag:sum_by_topic")
    finally:
        await prometheus.stop()
