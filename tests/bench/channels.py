"""Deliveries per second of each channel's connector against its provider emulator.

    .venv/bin/python tests/bench/channels.py [--messages 2000] [--concurrency 16]

The emulators run as separate processes (the same commands and settings `make run` uses,
from deploy/local/run.py); the connectors are built from those settings exactly as the
worker builds them (agents/channels.py) and driven with `--concurrency` sends in flight.
No Kafka is involved: this is the connector + transport + emulator ceiling per channel.
Results go to tests/bench/results/channels.json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest import mock

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "deploy" / "local"))
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import run as local_run  # noqa: E402
from httpx_aiohttp import AiohttpTransport  # noqa: E402

from agents.channels import CHANNELS  # noqa: E402
from streams.settings import load_settings  # noqa: E402

RESULTS = REPO / "tests" / "bench" / "results"
APNS_TOKEN = "apns:" + "ab" * 32


def _message(channel: str, i: int) -> dict[str, Any]:
    slack_hook = f"http://127.0.0.1:{local_run.SLACK_PORT}{local_run.SLACK_HOOK}"
    recipient = {
        "user_id": f"u{i}", "email": f"user{i}@example.com", "phone": "+14155550100",
        "push_tokens": [APNS_TOKEN if i % 2 else f"fcm:device-{i}"],
        "slack": "C0123456789" if i % 2 else slack_hook,
        "webhook_url": f"http://127.0.0.1:{local_run.RECEIVER_PORT}/hook",
        "locale": None, "timezone": None, "metadata": {},
    }
    return {
        "delivery_id": f"dlv_{channel}{i:08d}", "notification_id": f"ntf_{i:08d}",
        "tenant_id": "acme", "channel": channel, "fallback_channels": [],
        "category": "orders", "priority": "normal", "recipient": recipient,
        "title": "Order shipped", "body": f"Your order {i} has shipped", "data": {},
        "metadata": {}, "attempt": 1, "created_at": int(time.time() * 1000),
        "not_before": 0, "last_error": None,
    }


async def _drive(channel: str, settings: Any, messages: int, concurrency: int
                 ) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=concurrency * 2)
    transport = AiohttpTransport(limits=limits, trust_env=False)
    async with httpx.AsyncClient(transport=transport, limits=limits) as client:
        sender = CHANNELS[channel].build(settings, client)
        try:
            await sender.send(_message(channel, -1))  # warm up: connections, tokens
            outcomes: dict[str, int] = {}
            semaphore = asyncio.Semaphore(concurrency)

            async def one(i: int) -> None:
                async with semaphore:
                    verdict = await sender.send(_message(channel, i))
                outcomes[verdict.outcome.value] = outcomes.get(verdict.outcome.value, 0) + 1

            started = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(messages)))
            elapsed = time.perf_counter() - started
        finally:
            await sender.aclose()
    return {"channel": channel, "messages": messages, "concurrency": concurrency,
            "seconds": round(elapsed, 2), "per_s": round(messages / elapsed, 1),
            "outcomes": outcomes}


def _wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--channels", default="webhook,email,sms,push,slack")
    args = parser.parse_args()

    state = Path(tempfile.mkdtemp(prefix="tidings-bench-channels-"))
    (state / "apns").mkdir()
    secret = "whsec_" + "MDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDA="
    env = {**os.environ, "TIDINGS_WEBHOOK_SECRET": secret}
    commands, env = local_run._emulators(env, state)
    emulators = [subprocess.Popen(c, env=env, cwd=REPO, stdout=subprocess.DEVNULL)
                 for c in commands]
    results = []
    try:
        for port in (local_run.RECEIVER_PORT, local_run.SMTP_PORT, local_run.TWILIO_PORT,
                     local_run.FCM_PORT, local_run.APNS_PORT, local_run.SLACK_PORT):
            _wait_port(port)
        local_run._wait_for_file(Path(env["TIDINGS_FCM_SERVICE_ACCOUNT"]))
        with mock.patch.dict(os.environ, env):
            settings = load_settings()
        for channel in args.channels.split(","):
            result = asyncio.run(_drive(channel, settings, args.messages, args.concurrency))
            results.append(result)
            print(f"{channel:8} {result['per_s']:8.1f}/s  {result['outcomes']}", flush=True)
    finally:
        for process in emulators:
            process.terminate()
        for process in emulators:
            process.wait(10)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "channels.json").write_text(json.dumps(results, indent=2))
    lines = ["| channel | deliveries/s | messages | in flight | outcomes |",
             "|---|---:|---:|---:|---|"]
    lines += [f"| {r['channel']} | {r['per_s']:,.0f} | {r['messages']} | {r['concurrency']} | "
              f"{r['outcomes']} |" for r in results]
    (RESULTS / "channels.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if all(set(r["outcomes"]) == {"delivered"} for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
