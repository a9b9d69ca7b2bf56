"""What every module of the `tidings` command line shares."""

from __future__ import annotations

import click

from streams.errors import TidingsError
from streams.settings import Settings, load_settings


def cli_settings() -> Settings:
    """The settings, or a clear one-line error at the command line (exit status 1)."""
    try:
        return load_settings()
    except TidingsError as exc:
        raise click.ClickException(str(exc)) from exc
