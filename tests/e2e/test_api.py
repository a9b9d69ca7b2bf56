"""The HTTP API as it runs: `tidings api` processes, the real broker, a worker, a receiver."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import kafka_local
import pytest
from confluent_kafka import Producer

from agents.route import delivery_id
from connectors.emulators.webhook_receiver import WebhookReceiver
from streams.api.keys import new_key, write_keys
from streams.records import status_record
from streams.serde import serde

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PROBLEM = "application/problem+json"


class ApiProcess:
    """One replica: `tidings api` with its own port and store, sharing the keys file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.url = f"http://127.0.0.1:{env['TIDINGS_API_PORT']}"
        self.log_path = log_path
        log = open(log_path, "ab")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "api"], cwd=REPO,
            env={**os.environ, **env, "PYTHONUNBUFFERED": "1"}, stdout=log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log_path.read_text()
            try:
                response = httpx.get(f"{self.url}/ready", timeout=5)
                last = response.json()
                if response.status_code == 200:
                    return dict(last)
            except httpx.TransportError as exc:
                last = exc
            time.sleep(0.2)
        raise AssertionError(f"not ready in {timeout}s: {last}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        print(f"--- {self.log_path.name}\n{self.log_path.read_text(errors='replace')[-3000:]}")


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, str]:
    """One API key per tenant, written hashed to the keys file."""
    tokens, entries = {}, {}
    for tenant in ("acme", "globex"):
        token, entry = new_key(tenant, label="tests")
        tokens[tenant] = token
        entries[entry.key_id] = entry
    write_keys(tmp_path / "api-keys.json", entries)
    return tokens


@pytest.fixture
def start_api(tidings_env, create_topics, keys, tmp_path) -> Iterator[Callable[[], ApiProcess]]:
    create_topics()
    started: list[ApiProcess] = []

    def start() -> ApiProcess:
        n = len(started)
        env = {**tidings_env, "TIDINGS_API_PORT": str(kafka_local.free_port()),
               "TIDINGS_API_KEYS_FILE": str(tmp_path / "api-keys.json"),
               "TIDINGS_API_DATA_DIR": str(tmp_path / f"api-{n}")}
        replica = ApiProcess(env, tmp_path / f"api-{n}.log")
        started.append(replica)
        replica.wait_ready()
        return replica

    yield start
    for replica in started:
        replica.stop()


@pytest.fixture
def api(start_api) -> ApiProcess:
    return start_api()


@pytest.fixture
async def client(api, keys) -> AsyncIterator[Callable[[str], httpx.AsyncClient]]:
    clients: dict[str, httpx.AsyncClient] = {}

    def as_tenant(tenant: str, url: str | None = None) -> httpx.AsyncClient:
        base = url or api.url
        if (tenant, base) not in clients:
            headers = {"Authorization": f"Bearer {keys[tenant]}"} if tenant in keys else {}
            clients[(tenant, base)] = httpx.AsyncClient(base_url=base, headers=headers,
                                                        timeout=30)
        return clients[(tenant, base)]

    yield as_tenant
    for open_client in clients.values():
        await open_client.aclose()


def body(url: str = "https://example.com/hook", user: str = "u1", **extra: Any
         ) -> dict[str, Any]:
    return {"channels": ["webhook"], "category": "orders", "title": "Order shipped",
            "recipients": [{"user_id": user, "webhook_url": url}],
            "content": "Your order has shipped", "data": {"order_id": "1"}, **extra}


async def timeline_until(client: httpx.AsyncClient, notification_id: str,
                         done: Callable[[dict[str, Any]], bool], timeout: float = 60
                         ) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = await client.get(f"/v1/notifications/{notification_id}")
        assert response.status_code == 200, response.text
        last = response.json()
        if done(last):
            return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"timeline not complete in {timeout}s: {last}")


async def test_post_is_delivered_and_its_timeline_shows_it(tidings_env, worker, client):
    async with WebhookReceiver(tidings_env["TIDINGS_WEBHOOK_SECRET"]) as receiver:
        worker()
        acme = client("acme")
        response = await acme.post("/v1/notifications", json=body(f"{receiver.url}/hook"),
                                   headers={"Idempotency-Key": "order-1"})
        assert response.status_code == 202, response.text
        notification_id = response.json()["notification_id"]
        assert response.headers["Location"] == f"/v1/notifications/{notification_id}"

        await receiver.wait_for(1, timeout=90)
        (delivered,) = receiver.delivered
        assert delivered.payload["data"]["notification_id"] == notification_id
        assert delivered.verified

        timeline = await timeline_until(acme, notification_id,
                                        lambda t: t["state"] == "delivered")
        # The worker's probes (agents/health.py), through the image's healthcheck command.
        web = f"http://127.0.0.1:{tidings_env['TIDINGS_WEB_PORT']}"
        for path in ("/health", "/ready"):
            probe = subprocess.run([sys.executable, "-m", "streams.healthcheck", web + path],
                                   capture_output=True, text=True, timeout=30, check=False)
            assert probe.returncode == 0, probe.stderr
        ready = httpx.get(f"{web}/ready", timeout=10).json()
        assert ready["tables_recovered"] and ready["partitions_assigned"] > 0, ready
        down = subprocess.run([sys.executable, "-m", "streams.healthcheck",
                               f"http://127.0.0.1:{kafka_local.free_port()}/health"],
                              capture_output=True, text=True, timeout=30, check=False)
        assert down.returncode == 1
        statuses = [entry["status"] for entry in timeline["timeline"]]
        assert statuses[0] == "accepted" and statuses[-1] == "delivered", statuses
        last = timeline["timeline"][-1]
        assert last["channel"] == "webhook"
        assert last["delivery_id"] == delivery_id("acme", notification_id, "webhook", "u1")


async def test_idempotency_key_holds_across_replicas(start_api, client):
    first = start_api()
    acme = client("acme", first.url)
    original = await acme.post("/v1/notifications", json=body(),
                               headers={"Idempotency-Key": "k-1"})
    assert original.status_code == 202, original.text
    notification_id = original.json()["notification_id"]
    assert original.json()["replayed"] is False

    again = await acme.post("/v1/notifications", json=body(), headers={"Idempotency-Key": "k-1"})
    assert (again.status_code, again.json()["notification_id"]) == (202, notification_id)
    assert again.json()["replayed"] is True

    changed = await acme.post("/v1/notifications", json=body(title="Order cancelled"),
                              headers={"Idempotency-Key": "k-1"})
    assert changed.status_code == 409
    assert changed.headers["content-type"] == PROBLEM
    assert changed.json()["notification_id"] == notification_id

    # A second replica, started after, learns the key from the topic, not from the first.
    second = start_api()
    other = client("acme", second.url)
    replayed = await other.post("/v1/notifications", json=body(),
                                headers={"Idempotency-Key": "k-1"})
    assert (replayed.status_code, replayed.json()["notification_id"]) == (202, notification_id)
    assert replayed.json()["replayed"] is True
    conflict = await other.post("/v1/notifications", json=body(title="Order cancelled"),
                                headers={"Idempotency-Key": "k-1"})
    assert conflict.status_code == 409


async def test_a_tenant_never_reads_or_affects_another_tenants_notifications(
        tidings_env, client):
    acme, globex = client("acme"), client("globex")
    posted = await acme.post("/v1/notifications", json=body(), headers={"Idempotency-Key": "k"})
    notification_id = posted.json()["notification_id"]

    # Reading: another tenant's id answers exactly like an id that does not exist.
    theirs = await globex.get(f"/v1/notifications/{notification_id}")
    unknown = await globex.get("/v1/notifications/ntf_unknown")
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.json()["detail"] == f"no notification {notification_id}"
    assert (await acme.get(f"/v1/notifications/{notification_id}")).status_code == 200

    # Affecting: the same Idempotency-Key is another tenant's own key — no 409, no replay of
    # acme's id; and acme's key still answers with acme's id.
    same_key = await globex.post("/v1/notifications", json=body(title="Other"),
                                 headers={"Idempotency-Key": "k"})
    assert same_key.status_code == 202 and same_key.json()["replayed"] is False
    assert same_key.json()["notification_id"] != notification_id
    mine = await acme.post("/v1/notifications", json=body(), headers={"Idempotency-Key": "k"})
    assert mine.json()["notification_id"] == notification_id

    # A status some producer wrote for globex under acme's id never shows in acme's timeline.
    producer = Producer({"bootstrap.servers": tidings_env["TIDINGS_KAFKA_BOOTSTRAP"]})
    foreign = status_record({"tenant_id": "globex", "notification_id": notification_id},
                            "delivered", details={"marker": "foreign"})
    ours = status_record({"tenant_id": "acme", "notification_id": notification_id},
                         "accepted")
    for record in (foreign, ours):
        producer.produce(tidings_env.topic("status"), key=notification_id.encode(),
                         value=serde("DeliveryStatus").encode(record))
    producer.flush(10)
    timeline = await timeline_until(acme, notification_id, lambda t: bool(t["timeline"]))
    assert [s["status"] for s in timeline["timeline"]] == ["accepted"]
    assert all(s["details"] == {} for s in timeline["timeline"])

    # Without a key, or with a wrong one, nothing is read or written.
    anonymous = client("nobody")
    assert (await anonymous.get(f"/v1/notifications/{notification_id}")).status_code == 401
    forged = await anonymous.post("/v1/notifications", json=body(), headers={
        "Authorization": "Bearer " + "tdk_000000000000." + "A" * 43})
    assert forged.status_code == 401
    assert forged.headers["www-authenticate"] == "Bearer"


BAD_REQUESTS = [
    ({**body(), "tenant_id": "globex"}, "tenant_id"),  # the key decides the tenant
    (body(channels=["email"]), "recipients[0].email"),  # a rule of validate_request
    (body(recipients=[]), "recipients"),
    (body(url="ftp://example.com/x"), "recipients[0].webhook_url"),
    (body(send_at=2**63), "send_at"),  # past Avro's long
    (body(send_at=False), "send_at"),  # JSON false is not a number
]


async def test_bad_requests_get_problem_details_naming_the_field(client):
    # One API process for every case (each start costs seconds).
    acme = client("acme")
    for payload, field in BAD_REQUESTS:
        response = await acme.post("/v1/notifications", json=payload)
        assert response.status_code == 422, (field, response.text)
        assert response.headers["content-type"] == PROBLEM
        problem = response.json()
        assert problem["status"] == 422 and problem["field"] == field, problem


async def test_unparseable_body_and_bad_idempotency_key(client):
    acme = client("acme")
    garbled = await acme.post("/v1/notifications", content=b"{not json",
                              headers={"Content-Type": "application/json"})
    assert garbled.status_code in (400, 422)
    assert garbled.headers["content-type"] == PROBLEM
    too_long = await acme.post("/v1/notifications", json=body(),
                               headers={"Idempotency-Key": "x" * 256})
    assert too_long.status_code == 422


async def test_health_and_ready(api):
    async with httpx.AsyncClient(base_url=api.url) as http:
        assert (await http.get("/health")).json() == {"status": "ok"}
        ready = (await http.get("/ready")).json()
    assert ready["ready"] and ready["broker_reachable"] and ready["store_caught_up"]
    # status and api-idempotency, 4 partitions each (tidings_env)
    assert ready["partitions_assigned"] == ready["partitions_expected"] == 8


def test_openapi_document_holds_under_schemathesis(api, keys, tmp_path):
    """Every operation, fuzzed from the document against the running app: no 5xx, every
    status, header, media type and body as documented, auth enforced, bad input refused.
    `positive_data_acceptance` is left out: cross-field rules (a webhook recipient needs a
    webhook_url) cannot be said in JSON Schema, so schema-valid bodies may get a 422."""
    result = subprocess.run(
        [str(Path(sys.executable).parent / "schemathesis"), "run", f"{api.url}/openapi.json",
         "--header", f"Authorization: Bearer {keys['acme']}", "--checks", "all",
         "--exclude-checks", "positive_data_acceptance", "--max-examples", "40",
         "--workers", "1", "--seed", "1", "--no-color"],
        capture_output=True, text=True, timeout=240, check=False, cwd=tmp_path,
    )
    print(result.stdout[-4000:])
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "passed" in result.stdout and "API Operations" in result.stdout


async def test_without_a_broker_it_is_alive_not_ready_and_posts_get_503(tidings_env, keys,
                                                                        tmp_path):
    env = {**tidings_env, "TIDINGS_KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka_local.free_port()}",
           "TIDINGS_API_PORT": str(kafka_local.free_port()),
           "TIDINGS_API_KEYS_FILE": str(tmp_path / "api-keys.json"),
           "TIDINGS_API_DATA_DIR": str(tmp_path / "api-down"),
           "TIDINGS_API_PUBLISH_TIMEOUT_S": "1"}
    replica = ApiProcess(env, tmp_path / "api-down.log")
    try:
        async with httpx.AsyncClient(base_url=replica.url, timeout=30, headers={
                "Authorization": f"Bearer {keys['acme']}"}) as http:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    if (await http.get("/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.2)
            ready = await http.get("/ready")
            assert ready.status_code == 503
            assert ready.json()["ready"] is False and ready.json()["broker_reachable"] is False
            posted = await http.post("/v1/notifications", json=body())
            assert posted.status_code == 503, posted.text
            assert posted.headers["content-type"] == PROBLEM
            assert posted.headers["retry-after"] == "1"
    finally:
        replica.stop()


async def test_one_click_unsubscribe_is_served_when_its_secret_is_set(start_api, tidings_env):
    async with httpx.AsyncClient(base_url=start_api().url) as http:
        without = (await http.get("/openapi.json")).json()["paths"]
    tidings_env["TIDINGS_UNSUBSCRIBE_SECRET"] = "unsubscribe-test-secret-0123456789"
    async with httpx.AsyncClient(base_url=start_api().url) as http:
        paths = (await http.get("/openapi.json")).json()["paths"]
        refused = await http.post("/v1/unsubscribe?token=not-a-token",
                                  content="List-Unsubscribe=One-Click")
    assert "/v1/unsubscribe" not in without
    assert "/v1/unsubscribe" in paths
    assert refused.status_code == 400
