"""`make run`: Tidings on this machine, end to end, with no credentials.

Starts a local Kafka broker (unless TIDINGS_KAFKA_BOOTSTRAP names one, or `make kafka` is
already running), creates the topics, starts a local webhook receiver and the worker,
publishes the sample notifications in samples.jsonl and prints every delivery status as it
happens. Ctrl-C stops everything this script started, the broker included.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import kafka_local

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
RECEIVER_PORT = int(os.environ.get("TIDINGS_DEMO_RECEIVER_PORT", "8089"))


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _webhook_secret() -> str:
    if os.environ.get("TIDINGS_WEBHOOK_SECRET"):
        return os.environ["TIDINGS_WEBHOOK_SECRET"]
    path = kafka_local.cache_dir() / "webhook-secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        secret = subprocess.run(
            [sys.executable, "-m", "streams.cli", "secret"], capture_output=True, text=True,
            check=True, cwd=REPO,
        ).stdout.strip()
        path.write_text(secret)
        path.chmod(0o600)
    return path.read_text().strip()


def _broker() -> tuple[str, kafka_local.Cluster | None]:
    if os.environ.get("TIDINGS_KAFKA_BOOTSTRAP"):
        return os.environ["TIDINGS_KAFKA_BOOTSTRAP"], None
    state = kafka_local.state_file()
    if state.exists():
        return json.loads(state.read_text())["bootstrap"], None
    port = 9092 if _port_free(9092) and _port_free(9093) else kafka_local.free_port()
    cluster = kafka_local.Cluster(size=1, base_dir=kafka_local.cache_dir() / "run-kafka",
                                  ports=[port])
    print(f"starting Kafka {kafka_local.KAFKA_VERSION} (KRaft) on 127.0.0.1:{port} ...",
          flush=True)
    started = time.monotonic()
    bootstrap = cluster.start()
    print(f"Kafka ready in {time.monotonic() - started:.1f}s", flush=True)
    return bootstrap, cluster


def _samples(receiver_url: str) -> str:
    text = (HERE / "samples.jsonl").read_text()
    return text.replace("http://127.0.0.1:8089", receiver_url)


def main() -> int:
    if not _port_free(RECEIVER_PORT):
        print(f"port {RECEIVER_PORT} is taken; set TIDINGS_DEMO_RECEIVER_PORT", file=sys.stderr)
        return 1
    bootstrap, cluster = _broker()
    env = {
        **os.environ,
        "TIDINGS_KAFKA_BOOTSTRAP": bootstrap,
        "TIDINGS_WEBHOOK_SECRET": _webhook_secret(),
        "TIDINGS_DATA_DIR": os.environ.get("TIDINGS_DATA_DIR",
                                           str(kafka_local.cache_dir() / "worker")),
        "PYTHONUNBUFFERED": "1",
    }
    tidings = [sys.executable, "-m", "streams.cli"]
    children: list[subprocess.Popen[bytes]] = []
    try:
        subprocess.run([*tidings, "topics", "create"], env=env, cwd=REPO, check=True,
                       stdout=subprocess.DEVNULL)
        receiver_url = f"http://127.0.0.1:{RECEIVER_PORT}"
        children.append(subprocess.Popen(
            [sys.executable, "-m", "connectors.emulators.webhook_receiver",
             "--port", str(RECEIVER_PORT)], env=env, cwd=REPO,
        ))
        log_path = kafka_local.cache_dir() / "worker.log"
        log = open(log_path, "ab")  # noqa: SIM115 - lives as long as the worker
        children.append(subprocess.Popen([*tidings, "worker"], env=env, cwd=REPO,
                                         stdout=log, stderr=subprocess.STDOUT))
        print(f"worker started (log: {log_path})", flush=True)
        ids = subprocess.run(
            [*tidings, "publish", "-"], input=_samples(receiver_url).encode(), env=env,
            cwd=REPO, check=True, capture_output=True,
        ).stdout.decode().split()
        print(f"published {len(ids)} sample notifications; statuses follow (Ctrl-C stops)",
              flush=True)
        watcher = subprocess.Popen([*tidings, "watch", "--from-beginning"], env=env, cwd=REPO)
        children.append(watcher)
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        failed = [c.args for c in children if c.poll() not in (None, 0)]
        if failed:
            print(f"stopped: {failed[0]} exited; see {log_path}", file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
    finally:
        for child in reversed(children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in reversed(children):
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
        if cluster is not None:
            cluster.stop()
            print("Kafka stopped", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
