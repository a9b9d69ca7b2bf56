"""`tidings rules|preferences|events` — the command line of rules and preferences.

    tidings events publish [FILE|-]          JSON lines → DomainEvents; prints the event ids
    tidings rules put FILE                   a rule (or a list of rules) as JSON or YAML
    tidings rules list [--tenant T]
    tidings rules show TENANT RULE_ID
    tidings rules delete TENANT RULE_ID
    tidings preferences set TENANT USER [--opt-out-channel sms] [--quiet-hours 22:00-07:00] ...
    tidings preferences show TENANT USER
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

import click
import orjson
import yaml

from streams.errors import TidingsError
from streams.settings import Settings, load_settings


@contextmanager
def _edge() -> Iterator[None]:
    """Our errors as one clear line, and exit status 1."""
    try:
        yield
    except TidingsError as exc:
        raise click.ClickException(str(exc)) from exc


def _settings() -> Settings:
    with _edge():
        return load_settings()


def _echo_json(value: Any) -> None:
    click.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))


@click.group("events")
def events() -> None:
    """Domain events that rules turn into notifications."""


@events.command("publish")
@click.argument("source", type=click.File("r"), default="-")
def events_publish(source: IO[str]) -> None:
    """Publish JSON-lines domain events; every line is checked before any is sent."""
    from streams.events import EventPublisher, normalize_event

    records = []
    for number, line in enumerate(source, start=1):
        if not line.strip():
            continue
        try:
            records.append(normalize_event(orjson.loads(line)))
        except orjson.JSONDecodeError as exc:
            raise click.ClickException(f"line {number}: not JSON: {exc}") from exc
        except TidingsError as exc:
            raise click.ClickException(f"line {number}: {exc}") from exc
    with _edge(), EventPublisher(_settings()) as publisher:
        ids = publisher.publish_many(records)
    for event_id in ids:
        click.echo(event_id)


@click.group("rules")
def rules() -> None:
    """Rules: for events of a type, when a CEL condition holds, notify recipients."""


@rules.command("put")
@click.argument("source", type=click.File("r"))
def rules_put(source: IO[str]) -> None:
    """Publish the rule(s) in SOURCE (JSON or YAML: one rule or a list). All are checked
    (condition compiled) before any is published."""
    from streams.rules import RulesClient, normalize_rule

    try:
        loaded = yaml.safe_load(source)  # YAML is a superset of JSON
    except yaml.YAMLError as exc:
        raise click.ClickException(f"{source.name}: not JSON or YAML: {exc}") from exc
    items = loaded if isinstance(loaded, list) else [loaded]
    checked = []
    for index, item in enumerate(items):
        try:
            checked.append(normalize_rule(item))
        except TidingsError as exc:
            raise click.ClickException(f"rule {index + 1}: {exc}") from exc
    with _edge(), RulesClient(_settings()) as client:
        for rule in checked:
            client.put(rule)
            click.echo(f"{rule['tenant_id']}/{rule['rule_id']}")


@rules.command("list")
@click.option("--tenant", help="Only this tenant's rules.")
def rules_list(tenant: str | None) -> None:
    """One line per rule: tenant/rule, event type, channels, condition."""
    from streams.rules import RulesClient

    with _edge():
        found = RulesClient(_settings()).list(tenant)
    for rule in found:
        state = "" if rule["enabled"] else "  (disabled)"
        click.echo(f"{rule['tenant_id']}/{rule['rule_id']}\t{rule['event_type']}\t"
                   f"{','.join(rule['channels'])}\t{rule['condition']}{state}")


@rules.command("show")
@click.argument("tenant")
@click.argument("rule_id")
def rules_show(tenant: str, rule_id: str) -> None:
    """The rule as stored, as JSON."""
    from streams.rules import RulesClient

    with _edge():
        rule = RulesClient(_settings()).get(tenant, rule_id)
    if rule is None:
        raise click.ClickException(f"no rule {tenant}/{rule_id}")
    _echo_json(rule)


@rules.command("delete")
@click.argument("tenant")
@click.argument("rule_id")
def rules_delete(tenant: str, rule_id: str) -> None:
    """Delete a rule (a tombstone on the compacted topic)."""
    from streams.rules import RulesClient

    with _edge():
        RulesClient(_settings()).delete(tenant, rule_id)
    click.echo(f"deleted {tenant}/{rule_id}")


def _clearable(value: str | None) -> str | None:
    return None if value in (None, "none", "") else value


@click.group("preferences")
def preferences() -> None:
    """Users' notification preferences."""


@preferences.command("set")
@click.argument("tenant")
@click.argument("user")
@click.option("--opt-out-channel", multiple=True, help="No notifications on this channel.")
@click.option("--opt-in-channel", multiple=True)
@click.option("--opt-out-category", multiple=True, help="No notifications of this category.")
@click.option("--opt-in-category", multiple=True)
@click.option("--quiet-hours", help="START-END local times, e.g. 22:00-07:00; 'none' clears.")
@click.option("--timezone", "timezone_", help="IANA zone, e.g. Europe/Paris; 'none' clears.")
@click.option("--locale", help="BCP 47 locale, e.g. fr-CA; 'none' clears.")
@click.option("--preferred-channels", help="Comma-separated, e.g. email,push; 'none' clears.")
def preferences_set(tenant: str, user: str, opt_out_channel: tuple[str, ...],
                    opt_in_channel: tuple[str, ...], opt_out_category: tuple[str, ...],
                    opt_in_category: tuple[str, ...], quiet_hours: str | None,
                    timezone_: str | None, locale: str | None,
                    preferred_channels: str | None) -> None:
    """Change a user's preferences (only what is given changes)."""
    from streams.preferences import PreferencesClient

    ops: list[tuple[str, str | None]] = []
    for op, values in (("opt_out_channel", opt_out_channel), ("opt_in_channel", opt_in_channel),
                       ("opt_out_category", opt_out_category),
                       ("opt_in_category", opt_in_category)):
        ops += [(op, value) for value in values]
    for op, value in (("set_quiet_hours", quiet_hours), ("set_timezone", timezone_),
                      ("set_locale", locale), ("set_preferred_channels", preferred_channels)):
        if value is not None:
            ops.append((op, _clearable(value)))
    with _edge(), PreferencesClient(_settings()) as client:
        client.change(tenant, user, ops, source="cli")
    click.echo(f"changed {tenant}/{user}: " + ", ".join(f"{op}={value}" for op, value in ops))


@preferences.command("show")
@click.argument("tenant")
@click.argument("user")
def preferences_show(tenant: str, user: str) -> None:
    """The user's preferences as the pipeline applies them, as JSON."""
    from streams.preferences import PreferencesClient

    with _edge():
        state = PreferencesClient(_settings()).show(tenant, user)
    if state is None:
        raise click.ClickException(f"no preferences for {tenant}/{user}")
    state.pop("ops", None)
    state.pop("kind", None)
    _echo_json(state)


COMMANDS: tuple[click.Group, ...] = (events, rules, preferences)
