"""The operator's levers: `tidings replay`, `tidings dlq list|show|redrive`, `tidings lag`.

Registered on the main command group in streams/cli.py. Input is checked here, before
anything connects to Kafka: a bad time, a range that ends before it starts or a bad rate
is one line on stderr and exit status 1 (2 for click's usage errors).
"""

from __future__ import annotations

import collections
import dataclasses
import sys
from collections.abc import Callable
from typing import Any

import click
import orjson

from streams.bounds import Bound, BoundError, check_order, parse_bound
from streams.cli_common import cli_settings as _settings
from streams.errors import TidingsError
from streams.requests import now_ms
from streams.settings import Settings


def _bound(text: str, option: str) -> Bound:
    try:
        return parse_bound(text, now_ms=now_ms(), option=option)
    except BoundError as exc:
        raise click.UsageError(str(exc)) from exc


def _time(text: str | None, option: str) -> int | None:
    if text is None:
        return None
    bound = _bound(text, option)
    if bound.kind != "time":
        raise click.UsageError(f"{option}: {text!r} is not a time (an offset or "
                               "earliest/latest means nothing for dead letters)")
    return bound.value


def _json(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()


# -- replay ------------------------------------------------------------------------------


@click.command()
@click.option("--topic", required=True,
              help="requests, dispatch or channel.<name> (the prefix is added), or a full name.")
@click.option("--from", "start", required=True, metavar="TIME|OFFSET",
              help="First record (included): ISO 8601 time with zone, @epoch-ms, -15m, now, "
                   "an offset, earliest.")
@click.option("--to", "end", required=True, metavar="TIME|OFFSET",
              help="End of the range (not included): the same forms, or latest.")
@click.option("--tenant", help="Only this tenant's records.")
@click.option("--partition", "partitions", type=click.IntRange(min=0), multiple=True,
              help="Only these partitions (repeat the option); all by default.")
@click.option("--dry-run", is_flag=True, help="Print what would be sent; send nothing.")
@click.option("--rate", type=float, metavar="N", help="At most N records per second.")
@click.option("--resend", is_flag=True,
              help="Send again what was already delivered, under new delivery ids.")
def replay(topic: str, start: str, end: str, tenant: str | None, partitions: tuple[int, ...],
           dry_run: bool, rate: float | None, resend: bool) -> None:
    """Re-publish a range of a topic for reprocessing.

    Each record goes back to the partition it was read from. Deliveries already in the
    delivered ledger are not sent again (they are reported `duplicate`) unless --resend is
    given: then every delivery gets a new delivery id, and receivers see it as new.
    """
    from streams.replay import ReplayError, check_rate, kind_of_topic, topic_name
    from streams.replayer import ReplayRequest
    from streams.replayer import replay as run_replay

    first, last = _bound(start, "--from"), _bound(end, "--to")
    settings = _settings()
    full_topic = topic_name(topic, settings.topic_prefix)
    try:
        check_order(first, last)
        check_rate(rate)
        kind_of_topic(full_topic, settings.topic_prefix)
    except (BoundError, ReplayError) as exc:
        raise click.UsageError(str(exc)) from exc
    ask = ReplayRequest(full_topic, first, last, tenant=tenant, partitions=partitions,
                        resend=resend, dry_run=dry_run, rate=rate)

    def show(message: Any, planned: Any) -> None:
        if not dry_run:
            return
        verb = f"skip ({planned.skipped})" if planned.value is None else "send"
        key = (message.key or b"").decode(errors="replace")
        delivery = f" delivery={planned.delivery_id}" if planned.delivery_id else ""
        click.echo(f"  {verb:22} {message.partition}@{message.offset} key={key} "
                   f"tenant={planned.tenant_id or '-'} "
                   f"notification={planned.notification_id or '-'}{delivery}")

    click.echo(f"replay {ask.replay_id} of {full_topic}: from {first.describe()} "
               f"to {last.describe()} (not included)"
               + (f", tenant {tenant}" if tenant else "") + (", dry run" if dry_run else ""))
    try:
        report = run_replay(settings, ask, on_record=show)
    except TidingsError as exc:
        raise click.ClickException(str(exc)) from exc

    click.echo(f"  {'PARTITION':>9} {'FROM':>10} {'TO':>10} {'READ':>8} "
               f"{'WOULD-SEND' if dry_run else 'SENT':>10}")
    for r in report.ranges:
        click.echo(f"  {r.partition:>9} {r.start:>10} {r.end:>10} {report.read[r.partition]:>8} "
                   f"{report.sent[r.partition]:>10}")
    sent, read = sum(report.sent.values()), sum(report.read.values())
    skipped = ", ".join(f"{n} {why}" for why, n in sorted(report.skipped.items()))
    click.echo(f"  {'total':>9} {'':>10} {'':>10} {read:>8} {sent:>10}"
               + (f"   skipped: {skipped}" if skipped else ""))
    if dry_run:
        click.echo(f"dry run: {sent} record(s) would be sent; nothing was sent")
    else:
        click.echo(f"sent {sent} record(s) to {full_topic}, header tidings-replay="
                   f"{report.replay_id}")
    if resend:
        click.echo(f"--resend: every delivery gets a NEW delivery id (generation "
                   f"{report.replay_id}); receivers get them again as new messages")
    else:
        click.echo("deliveries already delivered are not sent again (status `duplicate`, "
                   "already delivered); --resend sends them under new delivery ids")


# -- dead letters ------------------------------------------------------------------------


def _filters(command: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--stage", help="validate, rate_limit, deliver, ..."),
        click.option("--error-class", help="e.g. RetriesExhausted, SerializationError."),
        click.option("--tenant", help="Only this tenant's letters."),
        click.option("--since", metavar="TIME", help="Failed at or after (ISO 8601, -1h, ...)."),
        click.option("--until", metavar="TIME", help="Failed before."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _letter_filter(stage: str | None, error_class: str | None, tenant: str | None,
                   since: str | None, until: str | None) -> Any:
    from streams.dlq import LetterFilter

    since_ms, until_ms = _time(since, "--since"), _time(until, "--until")
    if since_ms is not None and until_ms is not None and since_ms > until_ms:
        raise click.UsageError(f"--since ({since}) is after --until ({until})")
    return LetterFilter(stage, error_class, tenant, since_ms, until_ms)


def _read(settings: Settings, letter_filter: Any, ids: tuple[str, ...] = ()) -> list[Any]:
    from streams.dlq import read_letters

    try:
        return read_letters(settings, letter_filter, ids)
    except TidingsError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group()
def dlq() -> None:
    """Dead letters: list, show (with the original decoded), redrive."""


@dlq.command("list")
@_filters
@click.option("--json", "as_json", is_flag=True, help="One JSON object per letter.")
def dlq_list(as_json: bool, **filters: Any) -> None:
    """List dead letters (oldest first within each partition)."""
    from streams.dlq import iso, printable

    settings = _settings()
    letters = _read(settings, _letter_filter(**filters))
    if as_json:
        for letter in letters:
            click.echo(_json(printable(letter, settings.topic_prefix, with_original=False)))
        return
    click.echo(f"{'ID':10} {'FAILED-AT':24} {'STAGE':10} {'ERROR-CLASS':20} {'TENANT':12} "
               f"{'NOTIFICATION':38} {'ORIGIN':36} MESSAGE")
    for letter in letters:
        r = letter.record
        origin = f"{r['original_topic']}[{r['original_partition']}]@{r['original_offset']}"
        click.echo(f"{letter.id:10} {iso(r['failed_at']):24} {r['stage']:10} "
                   f"{r['error_class']:20} {r['tenant_id'] or '-':12} "
                   f"{r['notification_id'] or '-':38} {origin:36} {r['message'][:120]}")
    by_class = collections.Counter(letter.record["error_class"] for letter in letters)
    summary = ", ".join(f"{n} {name}" for name, n in by_class.most_common())
    click.echo(f"{len(letters)} dead letter(s)" + (f": {summary}" if summary else ""))


@dlq.command("show")
@click.argument("ids", nargs=-1, required=True)
def dlq_show(ids: tuple[str, ...]) -> None:
    """Show dead letters by id (partition:offset), the original bytes decoded where possible."""
    from streams.dlq import LetterFilter, printable

    settings = _settings()
    for letter in _read(settings, LetterFilter(), ids):
        data = printable(letter, settings.topic_prefix, with_original=True)
        click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2, default=str).decode())


@dlq.command("redrive")
@click.argument("ids", nargs=-1)
@_filters
@click.option("--all", "everything", is_flag=True,
              help="Redrive every letter (needed when no id or filter is given).")
@click.option("--reset-attempts", is_flag=True,
              help="Start a delivery's attempt count again, so it gets every retry tier.")
@click.option("--dry-run", is_flag=True, help="Print what would be sent; send nothing.")
def dlq_redrive(ids: tuple[str, ...], everything: bool, reset_attempts: bool, dry_run: bool,
                **filters: Any) -> None:
    """Send dead letters' original bytes back to the topic of the stage that failed."""
    from streams.dlq import redrive

    letter_filter = _letter_filter(**filters)
    if not ids and not any(filters.values()) and not everything:
        raise click.UsageError("name letters by id, filter them (--stage, --error-class, "
                               "--tenant, --since, --until), or give --all")
    settings = _settings()
    letters = _read(settings, letter_filter, ids)
    try:
        report = redrive(settings, letters, dry_run=dry_run, reset_attempts=reset_attempts)
    except TidingsError as exc:
        raise click.ClickException(str(exc)) from exc
    verb = "would redrive" if dry_run else "redrove"
    for letter in letters:
        if letter.id not in report.skipped:
            r = letter.record
            click.echo(f"  {verb} {letter.id} → {r['original_topic']}[{r['original_partition']}]"
                       f" ({r['stage']}: {r['error_class']}, {r['notification_id'] or '-'})")
    for letter_id, why in report.skipped.items():
        click.echo(f"  skipped {letter_id}: {why}")
    total = sum(report.sent.values())
    click.echo(f"{verb} {total} dead letter(s)"
               + (f" ({len(report.skipped)} skipped)" if report.skipped else "")
               + ("; nothing was sent" if dry_run else ""))


# -- lag ---------------------------------------------------------------------------------


@click.command()
@click.option("--group", "groups", multiple=True,
              help="A consumer group (repeat the option); default: this app's groups.")
@click.option("--all-groups", is_flag=True, help="Every consumer group on the cluster.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per row.")
def lag(groups: tuple[str, ...], all_groups: bool, as_json: bool) -> None:
    """Lag per group, topic and partition, like `kafka-consumer-groups --describe`."""
    from streams.lag import LagError, fetch_lag, table, total_lag

    if groups and all_groups:
        raise click.UsageError("--group and --all-groups exclude each other")
    settings = _settings()
    try:
        rows = fetch_lag(settings.kafka_bootstrap, groups,
                         app_id=None if all_groups else settings.app_id)
    except LagError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        for row in rows:
            click.echo(_json(dataclasses.asdict(row)))
        return
    if not rows:
        click.echo("no consumer group has offsets or members"
                   + ("" if all_groups or groups else f" (groups of app {settings.app_id!r})"))
        return
    for line in table(rows):
        click.echo(line)
    click.echo("")
    for group in sorted({row.group for row in rows}):
        mine = [row for row in rows if row.group == group]
        without = sum(1 for row in mine if row.lag is None)
        click.echo(f"TOTAL {group}: lag {total_lag(mine)}"
                   + (f" ({without} partition(s) without a committed offset)" if without else ""))
    if len({row.group for row in rows}) > 1:
        click.echo(f"TOTAL: lag {total_lag(rows)}")
    sys.stdout.flush()
