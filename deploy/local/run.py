"""`make run`: Tidings on this machine, end to end, with no credentials.

Starts a local Kafka broker (unless TIDINGS_KAFKA_BOOTSTRAP names one, or `make kafka` is
already running), creates the topics, starts one provider emulator per channel (webhook
receiver, SMTP, Twilio, FCM, APNs over HTTP/2, Slack) and the worker wired to them,
publishes the sample notifications in samples.jsonl and prints every delivery status as it
happens. Ctrl-C stops everything this script started, the broker included.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
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
# The other emulators take the ports after it.
FCM_PORT, TWILIO_PORT, SLACK_PORT, APNS_PORT, SMTP_PORT = (RECEIVER_PORT + i for i in range(1, 6))
TWILIO_SID, TWILIO_TOKEN = "AC" + "0" * 32, "local-twilio-auth-token"
SLACK_TOKEN = "xoxb-local-tidings"  # noqa: S105 - the local emulator's own credential
SLACK_HOOK = "/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"


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
    # A fresh broker each run, so the worker's table state starts fresh with it.
    base_dir = kafka_local.cache_dir() / "run-kafka"
    shutil.rmtree(base_dir, ignore_errors=True)
    shutil.rmtree(kafka_local.cache_dir() / "worker", ignore_errors=True)
    cluster = kafka_local.Cluster(size=1, base_dir=base_dir, ports=[port])
    print(f"starting Kafka {kafka_local.KAFKA_VERSION} (KRaft) on 127.0.0.1:{port} ...",
          flush=True)
    started = time.monotonic()
    bootstrap = cluster.start()
    print(f"Kafka ready in {time.monotonic() - started:.1f}s", flush=True)
    return bootstrap, cluster


def _worker_dir(bootstrap: str) -> Path:
    """The worker's table state, one folder per Kafka cluster: state kept from a broker that
    has since been wiped (`make kafka-stop`, `make kafka`) would name changelog offsets the
    new broker never had, and Faust refuses to start on it."""
    from confluent_kafka.admin import AdminClient

    cluster_id = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=30).cluster_id
    return kafka_local.cache_dir() / "worker" / (cluster_id or "unknown")


def _samples() -> str:
    text = (HERE / "samples.jsonl").read_text()
    return (text.replace("http://127.0.0.1:8089", f"http://127.0.0.1:{RECEIVER_PORT}")
            .replace("http://127.0.0.1:8092", f"http://127.0.0.1:{SLACK_PORT}"))


def _wait_for_file(path: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} did not appear in {timeout}s")
        time.sleep(0.1)


def _emulators(env: dict[str, str], state: Path) -> tuple[list[list[str]], dict[str, str]]:
    """The emulator commands, and the worker settings that point each channel at its own."""
    from connectors.emulators.apns import make_signing_key

    py = [sys.executable, "-m"]
    key = make_signing_key()
    key_file = state / "apns-key.p8"
    key_file.write_text(key.private_key)
    (state / "apns").mkdir(exist_ok=True)
    fcm_account = state / "fcm-service-account.json"
    fcm_account.unlink(missing_ok=True)
    commands = [
        [*py, "connectors.emulators.webhook_receiver", "--port", str(RECEIVER_PORT)],
        [*py, "connectors.emulators.smtp_server", "--port", str(SMTP_PORT)],
        [*py, "connectors.emulators.twilio", "--port", str(TWILIO_PORT),
         "--account-sid", TWILIO_SID, "--auth-token", TWILIO_TOKEN, "--no-status-callbacks"],
        [*py, "connectors.emulators.fcm", "--port", str(FCM_PORT),
         "--write-service-account", str(fcm_account)],
        [*py, "connectors.emulators.apns", "--port", str(APNS_PORT), "--team-id", key.team_id,
         "--key-id", key.key_id, "--key-file", str(key_file), "--cert-dir", str(state / "apns")],
        [*py, "connectors.emulators.slack", "--port", str(SLACK_PORT), "--token", SLACK_TOKEN,
         "--webhook", f"{SLACK_HOOK}=C0123456789"],
    ]
    settings = {
        "TIDINGS_ENABLED_CHANNELS": '["email", "sms", "push", "slack", "webhook"]',
        "TIDINGS_WEBHOOK_ALLOWED_NETWORKS": '["127.0.0.0/8"]',
        "TIDINGS_SMTP_HOST": "127.0.0.1",
        "TIDINGS_SMTP_PORT": str(SMTP_PORT),
        "TIDINGS_SMTP_TLS_MODE": "none",
        "TIDINGS_SMTP_FROM": "Tidings <notifications@tidings.local>",
        "TIDINGS_TWILIO_ACCOUNT_SID": TWILIO_SID,
        "TIDINGS_TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
        "TIDINGS_TWILIO_FROM_NUMBER": "+14155550199",
        "TIDINGS_TWILIO_BASE_URL": f"http://127.0.0.1:{TWILIO_PORT}",
        "TIDINGS_FCM_SERVICE_ACCOUNT": str(fcm_account),
        "TIDINGS_FCM_BASE_URL": f"http://127.0.0.1:{FCM_PORT}",
        "TIDINGS_APNS_TEAM_ID": key.team_id,
        "TIDINGS_APNS_KEY_ID": key.key_id,
        "TIDINGS_APNS_PRIVATE_KEY": key.private_key,
        "TIDINGS_APNS_TOPIC": "com.example.tidings",
        "TIDINGS_APNS_BASE_URL": f"https://127.0.0.1:{APNS_PORT}",
        "TIDINGS_APNS_CA_FILE": str(state / "apns" / "ca.pem"),
        "TIDINGS_SLACK_BOT_TOKEN": SLACK_TOKEN,
        "TIDINGS_SLACK_BASE_URL": f"http://127.0.0.1:{SLACK_PORT}",
        "TIDINGS_SLACK_WEBHOOK_URL_PREFIXES": f'["http://127.0.0.1:{SLACK_PORT}/services/"]',
        # One-click unsubscribe links carry a signed token (streams/unsubscribe.py).
        "TIDINGS_UNSUBSCRIBE_SECRET": secrets.token_urlsafe(32),
        "TIDINGS_EMAIL_UNSUBSCRIBE_URL": "http://127.0.0.1:6066/v1/unsubscribe?token={token}",
    }
    return commands, {**env, **{k: v for k, v in settings.items() if k not in os.environ}}


def _rules_and_preferences(tidings: list[str], env: dict[str, str]) -> None:
    """The sample rules (domain events → notifications) and one user's preferences: u7 takes
    no SMS, so the shipped-order rule emails u7 and records the SMS as suppressed."""
    for command in (["rules", "put", str(HERE / "rules.yaml")],
                    ["preferences", "set", "acme", "u7", "--opt-out-channel", "sms",
                     "--locale", "fr-FR", "--timezone", "Europe/Paris"]):
        subprocess.run([*tidings, *command], env=env, cwd=REPO, check=True,
                       stdout=subprocess.DEVNULL)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    # `kill` stops the run the way Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    taken = [p for p in (RECEIVER_PORT, FCM_PORT, TWILIO_PORT, SLACK_PORT, APNS_PORT, SMTP_PORT)
             if not _port_free(p)]
    if taken:
        print(f"ports {taken} are taken; set TIDINGS_DEMO_RECEIVER_PORT to move the emulators "
              f"(they use it and the five ports after it)", file=sys.stderr)
        return 1
    bootstrap, cluster = _broker()
    env = {
        **os.environ,
        "TIDINGS_KAFKA_BOOTSTRAP": bootstrap,
        "TIDINGS_WEBHOOK_SECRET": _webhook_secret(),
        "TIDINGS_DATA_DIR": os.environ.get("TIDINGS_DATA_DIR", str(_worker_dir(bootstrap))),
        "PYTHONUNBUFFERED": "1",
    }
    tidings = [sys.executable, "-m", "streams.cli"]
    children: list[subprocess.Popen[bytes]] = []
    try:
        state = kafka_local.cache_dir() / "run"
        state.mkdir(parents=True, exist_ok=True)
        commands, env = _emulators(env, state)
        subprocess.run([*tidings, "topics", "create"], env=env, cwd=REPO, check=True,
                       stdout=subprocess.DEVNULL)
        # The sample templates (15 locales each) that the templated samples name.
        templates = sorted(str(path) for path in (HERE / "templates").glob("*.yaml"))
        published = subprocess.run(
            [*tidings, "templates", "publish", "--tenant", "acme", "--activate", *templates],
            env=env, cwd=REPO, check=True, capture_output=True,
        ).stdout.decode().split("\n")
        print(f"published templates: {', '.join(p.split()[0] for p in published if p)}",
              flush=True)
        _rules_and_preferences(tidings, env)
        for command in commands:
            children.append(subprocess.Popen(command, env=env, cwd=REPO))
        _wait_for_file(Path(env["TIDINGS_FCM_SERVICE_ACCOUNT"]))
        _wait_for_file(Path(env["TIDINGS_APNS_CA_FILE"]))
        log_path = kafka_local.cache_dir() / "worker.log"
        log = open(log_path, "ab")  # noqa: SIM115 - lives as long as the worker
        children.append(subprocess.Popen([*tidings, "worker"], env=env, cwd=REPO,
                                         stdout=log, stderr=subprocess.STDOUT))
        print(f"worker started (log: {log_path})", flush=True)
        ids = subprocess.run(
            [*tidings, "publish", "-"], input=_samples().encode(), env=env,
            cwd=REPO, check=True, capture_output=True,
        ).stdout.decode().split()
        events = subprocess.run(
            [*tidings, "events", "publish", str(HERE / "events.jsonl")], env=env, cwd=REPO,
            check=True, capture_output=True).stdout.decode().split()
        print(f"published {len(ids)} sample notifications and {len(events)} domain events; "
              f"statuses follow (Ctrl-C stops)", flush=True)
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
        # A second Ctrl-C (or a SIGTERM) must not cut the clean-up short and leave a broker
        # or an emulator running.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
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
