"""Shared fixtures: the real Kafka broker (deploy/local), worker processes, topic readers.

The broker is started once per session by the launcher in deploy/local, unless
`TIDINGS_KAFKA_BOOTSTRAP` names one. Every test that needs topics gets its own prefix and
consumer group ids, so tests never see each other's records.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "deploy" / "local"))

import kafka_local  # noqa: E402

SECRET = "whsec_" + base64.b64encode(b"tidings-test-signing-key-0123456789").decode()


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    existing = os.environ.get("TIDINGS_KAFKA_BOOTSTRAP")
    if existing:
        yield existing
        return
    cluster = kafka_local.Cluster(size=1)
    started = time.monotonic()
    bootstrap = cluster.start()
    print(f"\nlocal Kafka {kafka_local.KAFKA_VERSION} at {bootstrap} "
          f"ready in {time.monotonic() - started:.1f}s")
    try:
        yield bootstrap
    finally:
        cluster.stop()


class Env(dict[str, str]):
    """The TIDINGS_ environment of one test's worker and clients."""

    @property
    def prefix(self) -> str:
        return self["TIDINGS_TOPIC_PREFIX"]

    def topic(self, name: str) -> str:
        return f"{self.prefix}.{name}"

    def settings(self) -> Any:
        from unittest import mock

        from streams.settings import load_settings

        with mock.patch.dict(os.environ, self):
            return load_settings()


@pytest.fixture
def tidings_env(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Env]:
    run = f"t{uuid.uuid4().hex[:10]}"
    env = Env(
        TIDINGS_KAFKA_BOOTSTRAP=kafka_bootstrap,
        TIDINGS_TOPIC_PREFIX=run,
        TIDINGS_APP_ID=run,
        TIDINGS_PARTITIONS="4",
        TIDINGS_DATA_DIR=str(tmp_path / "worker"),
        TIDINGS_WEB_PORT=str(kafka_local.free_port()),
        TIDINGS_WEBHOOK_SECRET=SECRET,
        # The receivers and emulators of the tests listen on loopback, which the webhook
        # channel's SSRF guard refuses unless it is allowed.
        TIDINGS_WEBHOOK_ALLOWED_NETWORKS='["127.0.0.0/8"]',
        TIDINGS_RETRY_TIERS_S="[1, 2, 4]",
        # Limits out of the way unless a test is about them.
        TIDINGS_RATE_TENANT_PER_MIN="10000000",
        TIDINGS_RATE_USER_PER_MIN="1000000",
        TIDINGS_RATE_CHANNEL_PER_MIN="10000000",
        # And bursts: a tenant's burst is split over the partitions (agents/rate_limit.py),
        # so with the default of 10 a fast worker routing 4 of a tenant's requests to one
        # partition in the same millisecond would defer the 4th.
        TIDINGS_RATE_BURST="1000",
        # The runaway guard would (rightly) hold a test's burst after its warm-up.
        TIDINGS_GUARD_ENABLED="false",
        TIDINGS_LOG_LEVEL="warn",
    )
    yield env
    _delete_topics(kafka_bootstrap, run)


def _delete_topics(bootstrap: str, prefix: str) -> None:
    """Delete a test's topics (and its app's changelogs), all named from its run id.

    Hundreds of tests share one broker; kept, their partitions' open files would reach the
    process limit and the broker would refuse connections.
    """
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    names = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix)]
    if names:
        for future in admin.delete_topics(names, operation_timeout=30).values():
            future.result()


@pytest.fixture
def create_topics(tidings_env: Env) -> Callable[[], None]:
    from streams.topics import create_topics as create

    return lambda: create(tidings_env.settings()) and None


class WorkerProcess:
    """`tidings worker` as a child process with a test's environment."""

    def __init__(self, env: Env, log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        environment = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker"], cwd=REPO, env=environment,
            stdout=log, stderr=subprocess.STDOUT,
        )
        return self

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def worker(tidings_env: Env, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start workers on demand (same app id and data dir each time); all stopped at the end.

    Topics are created for the environment the worker starts with (a test may enable more
    channels before starting it).
    """
    from streams.topics import create_topics as create

    started: list[WorkerProcess] = []

    def start(**overrides: str) -> WorkerProcess:
        env = Env({**tidings_env, **overrides})
        create(env.settings())
        process = WorkerProcess(env, tmp_path / f"worker-{len(started)}.log").start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()
        # Shown by pytest when the test failed: what the worker said.
        print(f"--- {process.log_path.name} (last 60 lines)")
        print("\n".join(process.log().splitlines()[-60:]))


class TopicReader:
    """Reads a topic from the beginning in a background thread and decodes each record."""

    def __init__(self, bootstrap: str, topic: str, decode: Callable[[bytes], Any]) -> None:
        from confluent_kafka import Consumer

        self.records: list[Any] = []
        self.raw: list[Any] = []
        self._decode = decode
        self._consumer = Consumer({
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        })
        self._consumer.subscribe([topic])
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self._consumer.poll(0.2)
            if message is None or message.error():
                continue
            with self._lock:
                self.raw.append(message)
                self.records.append(self._decode(message.value()))
        self._consumer.close()

    def snapshot(self) -> list[Any]:
        with self._lock:
            return list(self.records)

    async def wait_until(self, predicate: Callable[[list[Any]], Any], timeout: float
                         ) -> list[Any]:
        """Wait (without blocking the event loop the receivers run on) for `predicate`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            records = self.snapshot()
            if predicate(records):
                return records
            await asyncio.sleep(0.1)
        raise AssertionError(f"condition not met in {timeout}s; have {len(self.snapshot())} "
                             f"records: {self.snapshot()[-5:]}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.fixture
def read_topic(kafka_bootstrap: str) -> Iterator[Callable[..., TopicReader]]:
    readers: list[TopicReader] = []

    def open_reader(topic: str, record: str) -> TopicReader:
        from streams.serde import serde

        reader = TopicReader(kafka_bootstrap, topic, serde(record).decode)
        readers.append(reader)
        return reader

    yield open_reader
    for reader in readers:
        reader.close()


@pytest.fixture(scope="session")
def span_exporter() -> Any:
    """The test process's global tracer provider, exporting to memory (set once per process;
    clear the exporter in each test that reads it)."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    exporter.provider = provider
    return exporter
