"""`tidings templates` — publish, list, show and activate a tenant's templates.

    tidings templates publish --tenant acme welcome.yaml [--activate]
    tidings templates list --tenant acme
    tidings templates show --tenant acme welcome [--version 2]
    tidings templates activate --tenant acme welcome 2

A template file is JSON or YAML (see deploy/local/templates/ for the format). Everything is
checked before anything is sent: ids, part names, template syntax, JSON parts.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import orjson
import yaml

from streams.errors import TidingsError
from streams.settings import load_settings

if TYPE_CHECKING:
    from streams.template_store import TemplateStore

_TENANT = click.option("--tenant", "tenant_id", required=True, help="The tenant's id.")


def _store() -> TemplateStore:
    from streams.template_store import TemplateStore

    try:
        return TemplateStore(load_settings())
    except TidingsError as exc:
        raise click.ClickException(str(exc)) from exc


def load_document(path: Path) -> dict[str, Any]:
    """A template file: JSON, or YAML for anything not ending in .json."""
    try:
        text = path.read_text(encoding="utf-8")
        document = orjson.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, orjson.JSONDecodeError, yaml.YAMLError) as exc:
        raise click.ClickException(f"{path}: cannot read a template: {exc}") from exc
    if not isinstance(document, dict):
        raise click.ClickException(f"{path}: a template is a JSON/YAML object")
    return document


@click.group()
def templates() -> None:
    """A tenant's templates (the compacted templates topic)."""


@templates.command("publish")
@_TENANT
@click.argument("files", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--activate", is_flag=True, help="Also make each published version active.")
@click.option("--author", default=None, help="Recorded with the version.")
def publish(tenant_id: str, files: tuple[Path, ...], activate: bool, author: str | None
            ) -> None:
    """Publish each FILE as its template's next version; print `template_id version`."""
    documents = [(path, load_document(path)) for path in files]
    with _store() as store:
        for path, document in documents:
            try:
                version = store.publish(tenant_id, document, author=author,
                                        activate=activate)
            except TidingsError as exc:
                raise click.ClickException(f"{path}: {exc}") from exc
            template_id = document["template_id"]
            click.echo(f"{template_id}\t{version}" + ("\tactive" if activate else ""))


@templates.command("list")
@_TENANT
def list_(tenant_id: str) -> None:
    """The tenant's templates: id, versions, active version, locales."""
    with _store() as store:
        try:
            rows = store.list(tenant_id)
        except TidingsError as exc:
            raise click.ClickException(str(exc)) from exc
    for row in rows:
        versions = ",".join(str(v) for v in row["versions"])
        active = row["active"] if row["active"] is not None else "-"
        experiment = f"\texperiment={row['experiment_id']}" if row["experiment_id"] else ""
        click.echo(f"{row['template_id']}\tversions={versions}\tactive={active}"
                   f"\tlocales={','.join(row['locales'])}{experiment}")


@templates.command("show")
@_TENANT
@click.argument("template_id")
@click.option("--version", type=int, default=None, help="Default: the active version.")
def show(tenant_id: str, template_id: str, version: int | None) -> None:
    """Print one version as JSON (the active one, else the latest)."""
    with _store() as store:
        try:
            record = store.show(tenant_id, template_id, version)
        except TidingsError as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(orjson.dumps(record, option=orjson.OPT_INDENT_2).decode())


@templates.command("activate")
@_TENANT
@click.argument("template_id")
@click.argument("version", type=int)
@click.option("--author", default=None)
def activate(tenant_id: str, template_id: str, version: int, author: str | None) -> None:
    """Make VERSION the one requests without a pinned version get."""
    with _store() as store:
        try:
            store.activate(tenant_id, template_id, version, author=author)
        except TidingsError as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(f"{template_id}\t{version}\tactive")
