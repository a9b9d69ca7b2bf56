"""`tidings` — the command line.

    tidings worker                 run every stage (the app is TIDINGS_WORKER_APP)
    tidings publish [FILE|-]       JSON lines → NotificationRequests; prints the ids
    tidings topics create|list     the topics declared in streams/topics.py
    tidings watch                  print delivery statuses as they happen
    tidings secret                 a new Standard Webhooks signing secret
    tidings replay                 re-publish a range of a topic (streams/ops_cli.py)
    tidings dlq list|show|redrive  dead letters
    tidings lag                    consumer lag per group/topic/partition
    tidings enrich [FILE|-]        language, sentiment, entities, spam score per line
    tidings quarantine list|release  notifications held back as spam
    tidings api                    serve the HTTP API
    tidings api-keys create|list|revoke   tenants' API keys (hashed at rest)
    tidings insights               delivery rates, latency, failures and anomalies per tenant
    tidings hold list|release      requests the runaway guard held
    tidings templates ...          publish, list, show, activate a tenant's templates
    tidings rules|preferences|events ...   rules, users' preferences, domain events
"""

from __future__ import annotations

import base64
import importlib
import os
import secrets
import sys
import time
from collections.abc import Callable
from typing import IO, Any

import click
import orjson

from streams import templates_cli
from streams.cli_common import cli_settings as _settings
from streams.errors import TidingsError, ValidationError
from streams.settings import Settings
from streams.topics import create_topics, topic_specs

DEFAULT_WORKER_APP = "agents.worker:build_app"


@click.group(help="Tidings: multi-tenant notifications on Apache Kafka. "
                   "`tidings COMMAND --help` explains one command.")
def main() -> None:
    pass


@main.command()
def worker() -> None:
    """Run the worker: every stage's agent, until SIGINT/SIGTERM."""
    from streams.logs import configure_logging, logging_config
    from streams.tracing import configure_tracing

    settings = _settings()
    configure_logging(settings.log_level)
    configure_tracing(settings, "tidings-worker")
    target = os.environ.get("TIDINGS_WORKER_APP", DEFAULT_WORKER_APP)
    module_name, _, attr = target.partition(":")
    factory: Callable[[Settings], Any] = getattr(importlib.import_module(module_name), attr)
    try:
        app = factory(settings)
    except TidingsError as exc:
        raise click.ClickException(str(exc)) from exc
    # Faust's worker installs the signal handlers and stops every service in order.
    # Faust's worker configures logging once more at start: with our dict, so its records, and
    # every library's, are JSON too.
    _quiet_worker_class()(
        app, loglevel=settings.log_level, quiet=True,
        logging_config=logging_config(settings.log_level),
    ).execute_from_commandline()


def _quiet_worker_class() -> type:
    import faust

    class QuietWorker(faust.Worker):
        """Faust's worker without its terminal spinner.

        To animate the spinner on every log line, Faust lowers the root logger to DEBUG at
        the `warn` level; then every message sent builds a debug log record that no handler
        prints. Profiling the pipeline put logging at ~15 % of the worker's CPU.
        """

        def on_setup_root_logger(self, logger: Any, level: int) -> None:
            self.spinner = None
            super().on_setup_root_logger(logger, level)

    return QuietWorker


def _read_requests(stream: IO[str]) -> list[dict[str, Any]]:
    requests = []
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise click.ClickException(f"line {number}: not JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise click.ClickException(f"line {number}: expected a JSON object")
        requests.append(value)
    return requests


@main.command()
@click.argument("source", type=click.File("r"), default="-")
def publish(source: IO[str]) -> None:
    """Publish JSON-lines notification requests; print one notification id per line.

    Every line is validated first: if any is invalid nothing is sent.
    """
    from streams.publisher import Publisher
    from streams.requests import normalize_request
    from streams.tracing import configure_tracing

    raw = _read_requests(source)
    records = []
    for number, request in enumerate(raw, start=1):
        try:
            records.append(normalize_request(request))
        except ValidationError as exc:
            raise click.ClickException(f"request {number}: {exc}") from exc
    settings = _settings()
    configure_tracing(settings, "tidings-cli")  # with an endpoint, each request's trace starts here
    try:
        with Publisher(settings) as publisher:
            ids = publisher.publish_many(records)
    except TidingsError as exc:
        raise click.ClickException(str(exc)) from exc
    for notification_id in ids:
        click.echo(notification_id)


@main.group()
def topics() -> None:
    """Kafka topics."""


@topics.command("create")
def topics_create() -> None:
    """Create every declared topic that is missing (safe to run again)."""
    settings = _settings()
    try:
        created = create_topics(settings)
    except TidingsError as exc:
        raise click.ClickException(str(exc)) from exc
    for spec in topic_specs(settings):
        state = "created" if spec.name in created else "exists"
        click.echo(f"{spec.name}\t{spec.partitions} partitions\trf={spec.replication_factor}"
                   f"\t{state}")


@topics.command("list")
def topics_list() -> None:
    """Print the declared topics and their settings."""
    for spec in topic_specs(_settings()):
        click.echo(f"{spec.name}\t{spec.partitions}\t{spec.config()}")


@main.command()
@click.option("--from-beginning", is_flag=True, help="Start at the oldest status, not now.")
@click.option("--count", type=int, default=0, help="Stop after this many final statuses.")
@click.option("--timeout", type=float, default=0, help="Stop after this many seconds.")
def watch(from_beginning: bool, count: int, timeout: float) -> None:
    """Print delivery statuses (and dead letters) as they happen."""
    from confluent_kafka import Consumer

    from streams.serde import serde

    settings = _settings()
    status_topic, dead_topic = settings.topic("status"), settings.topic("deadletter")
    consumer = Consumer({
        "bootstrap.servers": settings.kafka_bootstrap,
        "group.id": f"tidings-watch-{secrets.token_hex(4)}",
        "auto.offset.reset": "earliest" if from_beginning else "latest",
        "enable.auto.commit": False,
    })
    consumer.subscribe([status_topic, dead_topic])
    statuses, dead_letters = serde("DeliveryStatus"), serde("DeadLetter")
    final = {"delivered", "duplicate", "rate_limited", "dead_lettered", "endpoint_disabled"}
    seen = 0
    deadline = time.monotonic() + timeout if timeout else None
    try:
        while deadline is None or time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            value = message.value() or b""
            if message.topic() == dead_topic:
                d = dead_letters.decode(value)
                click.echo(f"DEAD-LETTER  {d['notification_id'] or '-':40} stage={d['stage']} "
                           f"{d['error_class']}: {d['message']}")
                continue
            s = statuses.decode(value)
            extra = f" ({s['reason']})" if s["reason"] else ""
            if s["details"]:  # e.g. the template, locale and A/B variant of `rendered`
                extra += " " + " ".join(f"{k}={v}" for k, v in sorted(s["details"].items()))
            latency = f" {s['latency_ms']} ms" if s["latency_ms"] is not None else ""
            click.echo(f"{s['status'].upper():17} {s['notification_id']:40} "
                       f"{s['channel'] or '':8} attempt={s['attempt']}{latency}{extra}")
            sys.stdout.flush()
            if s["status"] in final:
                seen += 1
                if count and seen >= count:
                    break
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()


@main.command()
def secret() -> None:
    """Print a new Standard Webhooks secret (`whsec_` + base64 of 32 random bytes)."""
    click.echo("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode())


# The operator's levers (replay, dead letters, lag) live in their own module.
from streams import ops_cli  # noqa: E402

main.add_command(ops_cli.replay)
main.add_command(ops_cli.dlq)
main.add_command(ops_cli.lag)

from agents.enrichment.cli import enrich, quarantine  # noqa: E402 - registered below

main.add_command(enrich)
main.add_command(quarantine)

from streams.api.cli import api, api_keys  # noqa: E402 - HTTP API commands

main.add_command(api)
main.add_command(api_keys)

from streams.cli_analytics import hold_group, insights  # noqa: E402

main.add_command(insights)
main.add_command(hold_group)

from streams import cli_rules  # noqa: E402 - rules, preferences, events (issue 4)

for _command in cli_rules.COMMANDS:
    main.add_command(_command)
main.add_command(templates_cli.templates)

if __name__ == "__main__":
    main()
