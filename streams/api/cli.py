"""`tidings api` and `tidings api-keys` (registered in streams/cli.py)."""

from __future__ import annotations

from pathlib import Path

import click

from streams.cli_common import cli_settings as _settings
from streams.errors import TidingsError


@click.command()
def api() -> None:
    """Serve the HTTP API (uvicorn) on TIDINGS_API_HOST:TIDINGS_API_PORT until SIGINT/SIGTERM.

    One process per replica: each replica keeps its own RocksDB store
    (TIDINGS_API_DATA_DIR), which two processes cannot share.
    """
    import uvicorn

    from streams.api.app import create_api
    from streams.unsubscribe import unsubscribe_router

    settings = _settings()
    level = {"crit": "critical", "warn": "warning"}.get(settings.log_level, settings.log_level)
    # One-click unsubscribe (RFC 8058) needs the key its tokens are signed with.
    routers = [unsubscribe_router(settings)] if settings.unsubscribe_secret is not None else []
    app = create_api(settings, extra_routers=routers)
    uvicorn.run(app, host=settings.api_host, port=settings.api_port,
                log_level=level, proxy_headers=True, server_header=False)


@click.group("api-keys")
def api_keys() -> None:
    """Tenants' API keys (stored hashed in TIDINGS_API_KEYS_FILE)."""


def _file(path: str | None) -> Path:
    return Path(path) if path else _settings().api_keys_file


_FILE = click.option("--file", "path", help="The keys file (default TIDINGS_API_KEYS_FILE).")


@api_keys.command("create")
@click.option("--tenant", required=True, help="The tenant the key acts for.")
@click.option("--label", default="", help="A note for operators (who holds the key).")
@_FILE
def create(tenant: str, label: str, path: str | None) -> None:
    """Make a key: prints it once (only its SHA-256 is stored)."""
    from streams.api.keys import new_key, read_keys, write_keys

    file = _file(path)
    try:
        token, entry = new_key(tenant, label)
        keys = read_keys(file)
        keys[entry.key_id] = entry
        write_keys(file, keys)
    except TidingsError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(token)
    click.echo(f"stored the hash of key {entry.key_id} for tenant {tenant} in {file}; "
               "the key is not shown again", err=True)


@api_keys.command("list")
@_FILE
def list_keys(path: str | None) -> None:
    """Key ids, tenants and labels (never a key)."""
    from streams.api.keys import read_keys

    for entry in read_keys(_file(path)).values():
        click.echo(f"{entry.key_id}\t{entry.tenant_id}\t{entry.created_at}\t{entry.label}")


@api_keys.command("revoke")
@click.argument("key_id")
@_FILE
def revoke(key_id: str, path: str | None) -> None:
    """Remove a key by its id (a running API notices within one request)."""
    from streams.api.keys import read_keys, write_keys

    file = _file(path)
    keys = read_keys(file)
    if keys.pop(key_id, None) is None:
        raise click.ClickException(f"no key {key_id} in {file}")
    write_keys(file, keys)
    click.echo(f"revoked {key_id}")
