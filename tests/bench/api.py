"""POSTs per second and their latency through one `tidings api` replica (no worker).

    TIDINGS_KAFKA_BOOTSTRAP=127.0.0.1:9092 .venv/bin/python tests/bench/api.py \\
        [--requests 2000] [--concurrency 32]

Starts the API as a child process on a fresh topic prefix, creates a key, then sends
`--requests` POSTs (each with its own Idempotency-Key) with `--concurrency` in flight and
prints the rate and the p50/p99 latency; then replays the same keys (answered from the
store, no publish). Bounded in count; it stops the API when done.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from unittest import mock

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "deploy" / "local"))
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import kafka_local  # noqa: E402

from streams.api.keys import new_key, write_keys  # noqa: E402
from streams.settings import load_settings  # noqa: E402
from streams.topics import create_topics  # noqa: E402


def body(i: int) -> dict[str, object]:
    return {"channels": ["webhook"], "title": "Order shipped", "content": f"order {i}",
            "recipients": [{"user_id": f"u{i}", "webhook_url": "https://example.com/hook"}]}


async def drive(url: str, token: str, count: int, concurrency: int, tag: str
                ) -> tuple[float, list[float]]:
    latencies: list[float] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30,
                                 headers={"Authorization": f"Bearer {token}"}) as client:
        async def worker() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                started = time.perf_counter()
                response = await client.post("/v1/notifications", json=body(i),
                                             headers={"Idempotency-Key": f"{tag}-{i}"})
                latencies.append(time.perf_counter() - started)
                assert response.status_code == 202, response.text

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started, latencies


def report(label: str, count: int, elapsed: float, latencies: list[float]) -> None:
    cuts = statistics.quantiles(latencies, n=100)
    print(f"{label}: {count} POSTs in {elapsed:.2f}s = {count / elapsed:.0f}/s; "
          f"p50 {cuts[49] * 1000:.1f} ms, p99 {cuts[98] * 1000:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        env = {"TIDINGS_KAFKA_BOOTSTRAP": os.environ.get("TIDINGS_KAFKA_BOOTSTRAP",
                                                         "127.0.0.1:9092"),
               "TIDINGS_TOPIC_PREFIX": prefix, "TIDINGS_APP_ID": prefix,
               "TIDINGS_PARTITIONS": "4", "TIDINGS_API_PORT": str(kafka_local.free_port()),
               "TIDINGS_API_KEYS_FILE": f"{tmp}/keys.json",
               "TIDINGS_API_DATA_DIR": f"{tmp}/api"}
        with mock.patch.dict(os.environ, env):
            create_topics(load_settings())
        token, entry = new_key("bench")
        write_keys(Path(env["TIDINGS_API_KEYS_FILE"]), {entry.key_id: entry})
        api = subprocess.Popen([sys.executable, "-m", "streams.cli", "api"], cwd=REPO,
                               env={**os.environ, **env})
        url = f"http://127.0.0.1:{env['TIDINGS_API_PORT']}"
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
            print(f"one API replica, {args.concurrency} in flight, broker "
                  f"{env['TIDINGS_KAFKA_BOOTSTRAP']}")
            elapsed, latencies = asyncio.run(
                drive(url, token, args.requests, args.concurrency, "k"))
            report("new (published, acks=all)", args.requests, elapsed, latencies)
            elapsed, latencies = asyncio.run(
                drive(url, token, args.requests, args.concurrency, "k"))
            report("replayed (same key and body)", args.requests, elapsed, latencies)
        finally:
            api.terminate()
            api.wait(20)


if __name__ == "__main__":
    main()
