"""Tests for streams/ops_cli.py: input refused at the edge, before anything connects.

The settings point at a port nothing listens on, so a command that got as far as Kafka
would fail differently (and slowly); each of these fails on its input first.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from streams.cli import main

ENV = {"TIDINGS_KAFKA_BOOTSTRAP": "127.0.0.1:9", "TIDINGS_TOPIC_PREFIX": "t"}


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env=ENV)
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--from", "yesterday", "--to", "now"], "--from: 'yesterday' is not a time",
                     id="bad time"),
        pytest.param(["--from", "2026-12-01T10:00", "--to", "now"], "has no time zone",
                     id="no zone"),
        pytest.param(["--from", "9", "--to", "3"], "--from (9) is after --to (3)",
                     id="offsets backwards"),
        pytest.param(["--from", "-1h", "--to", "-2h"], "--from (-1h) is after --to (-2h)",
                     id="times backwards"),
        pytest.param(["--from", "0", "--to", "5", "--rate", "0"], "--rate must be more than 0",
                     id="zero rate"),
        pytest.param(["--from", "0", "--to", "5", "--topic", "status"],
                     "t.status cannot be replayed", id="status topic"),
    ],
)
def test_replay_refuses_bad_input(args: list[str], message: str) -> None:
    if "--topic" not in args:
        args = [*args, "--topic", "requests"]
    code, output = run("replay", *args)
    assert code == 2
    assert message in output


def test_replay_needs_a_range() -> None:
    code, output = run("replay", "--topic", "requests", "--from", "0")
    assert code == 2
    assert "--to" in output


def test_redrive_without_ids_or_filters_asks_for_all() -> None:
    code, output = run("dlq", "redrive")
    assert code == 2
    assert "--all" in output


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--since", "42"], "--since: '42' is not a time"),
     (["--until", "latest"], "--until: 'latest' is not a time"),
     (["--since", "-1h", "--until", "-2h"], "--since (-1h) is after --until (-2h)"),
     (["--since", "soon"], "--since: 'soon' is not a time or an offset")],
)
def test_dlq_time_filters_are_times(args: list[str], message: str) -> None:
    code, output = run("dlq", "list", *args)
    assert code == 2
    assert message in output


def test_lag_group_options_exclude_each_other() -> None:
    code, output = run("lag", "--group", "g", "--all-groups")
    assert code == 2
    assert "exclude each other" in output
