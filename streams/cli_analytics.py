"""`tidings insights` and `tidings hold`: what the analytics stage and the runaway guard saw.

    tidings insights [--tenant X] [--since 1h] [--json]
    tidings hold list [--tenant X] [--json]
    tidings hold release --tenant X
"""

from __future__ import annotations

import re

import click
import orjson

from streams.cli_common import cli_settings as _settings
from streams.errors import TidingsError

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """`90`, `90s`, `15m`, `1h`, `7d` → seconds."""
    match = _DURATION.match(text.strip())
    if not match or float(match.group(1)) <= 0:
        raise click.BadParameter(f"{text!r} is not a duration like 90s, 15m, 1h or 7d")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


@click.command()
@click.option("--tenant", help="Only this tenant.")
@click.option("--since", default="1h", show_default=True,
              help="How far back to look: 90s, 15m, 1h, 7d.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object, by tenant.")
def insights(tenant: str | None, since: str, as_json: bool) -> None:
    """Delivery rate, latency percentiles, top failure causes and recent anomalies."""
    from streams.insights import insights as build
    from streams.insights import render

    since_s = parse_duration(since)
    try:
        report = build(_settings(), tenant, since_s)
    except TidingsError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(orjson.dumps(report).decode() if as_json else render(report))


@click.group("hold")
def hold_group() -> None:
    """Requests the runaway guard held."""


@hold_group.command("list")
@click.option("--tenant", help="Only this tenant.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per held request.")
def hold_list(tenant: str | None, as_json: bool) -> None:
    """The held requests that were not released yet."""
    from streams import hold
    from streams.serde import serde

    decode = serde("NotificationRequest").decode
    try:
        found = hold.held(_settings(), tenant)
    except TidingsError as exc:
        raise click.ClickException(str(exc)) from exc
    for held in found:
        try:
            request = decode(held.value)
        except TidingsError as exc:  # the guard held it after validation, but be plain about it
            click.echo(f"{held.tenant_id}\t{held.partition}:{held.offset}\tundecodable: {exc}")
            continue
        row = {"tenant_id": held.tenant_id, "notification_id": request["notification_id"],
               "held_at": held.held_at_ms, "partition": held.partition, "offset": held.offset,
               "recipients": len(request["recipients"]), "title": request["title"]}
        if as_json:
            click.echo(orjson.dumps(row).decode())
        else:
            click.echo(f"{row['tenant_id']}\t{row['notification_id']}\t{row['recipients']} "
                       f"recipient(s)\t{row['title']!r}")
    if not as_json:
        click.echo(f"{len(found)} held", err=True)


@hold_group.command("release")
@click.option("--tenant", required=True, help="The tenant whose held requests to release.")
def hold_release(tenant: str) -> None:
    """Release a tenant's held requests: they go through the pipeline again and are sent.

    The guard then takes the tenant's current rate as normal.
    """
    from streams import hold

    try:
        released = hold.release(_settings(), tenant, by="operator")
    except TidingsError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"released {len(released)} held request(s) of {tenant}")
