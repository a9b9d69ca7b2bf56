"""`tidings enrich` and `tidings quarantine list|release` (registered in streams/cli.py).

    tidings enrich [FILE|-]                      one JSON object per input line
    tidings quarantine list [--tenant T] [--json]
    tidings quarantine release ID... | --all [--tenant T]
"""

from __future__ import annotations

from typing import IO

import click
import orjson

from streams.cli_common import cli_settings as _settings
from streams.errors import TidingsError

_BATCH = 64


@click.command()
@click.argument("source", type=click.File("r", encoding="utf-8"), default="-")
@click.option("--no-entities", is_flag=True, help="Skip spaCy's entity recogniser.")
def enrich(source: IO[str], no_entities: bool) -> None:
    """Print the enrichment of each input line of text as one JSON object: language,
    sentiment, entities, spam_score, spam_reasons."""
    from agents.enrich import enrich_batch

    batch: list[str] = []

    def flush() -> None:
        for result in enrich_batch(batch, entities=not no_entities):
            click.echo(orjson.dumps(result.as_json()).decode())
        batch.clear()

    for line in source:
        batch.append(line.rstrip("\n"))
        if len(batch) >= _BATCH:
            flush()
    flush()


@click.group()
def quarantine() -> None:
    """Notifications held back for their spam score."""


@quarantine.command("list")
@click.option("--tenant", help="Only this tenant's notifications.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def quarantine_list(tenant: str | None, as_json: bool) -> None:
    """Print the quarantined notifications, oldest first."""
    from agents.enrichment.quarantine import list_held

    try:
        held = list_held(_settings())
    except TidingsError as exc:
        raise click.ClickException(str(exc)) from exc
    for item in held:
        summary = item.summary()
        if tenant and summary["tenant_id"] != tenant:
            continue
        if as_json:
            click.echo(orjson.dumps(summary).decode())
        else:
            click.echo(f"{summary['notification_id']}\t{summary['tenant_id']}\t"
                       f"{summary['user_id']}\t{summary['spam_score']:.3f}\t"
                       f"{'; '.join(summary['reasons'])}")


@quarantine.command("release")
@click.argument("notification_ids", nargs=-1)
@click.option("--all", "release_all", is_flag=True, help="Release every one listed.")
@click.option("--tenant", help="With --all: only this tenant's notifications.")
def quarantine_release(notification_ids: tuple[str, ...], release_all: bool,
                       tenant: str | None) -> None:
    """Send quarantined notifications on, past the spam check."""
    from agents.enrichment.quarantine import list_held, release

    if not notification_ids and not release_all:
        raise click.UsageError("name the notification ids to release, or pass --all")
    settings = _settings()
    try:
        held = list_held(settings)
        if release_all:
            chosen = [h for h in held if not tenant or h.request["tenant_id"] == tenant]
        else:
            chosen = [h for h in held if h.notification_id in notification_ids]
            missing = sorted(set(notification_ids) - {h.notification_id for h in chosen})
            if missing:
                raise click.ClickException(f"not in the quarantine: {', '.join(missing)}")
        count = release(settings, chosen)
    except TidingsError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"released {count}")
