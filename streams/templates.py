"""Templates as events: the document a tenant publishes, the events on `tidings.templates`,
and the catalog those events build (pure; the Kafka side is streams/template_store.py).

A template version is immutable. Its key on the compacted topic is
`tenant/template/version/<digest>`: two publishers racing for the same version number both
survive compaction, and every reader keeps the first one in the log (the topic has one
partition, so "first" is the same for everyone). Activation is its own key,
`tenant/template/active`, whose latest value wins.

Tenants are kept apart by construction: a template is looked up by the request's own
`tenant_id` plus an id that is a plain token (no `/`, no `..`), never by a path, and the
worker's sandbox has no template loader, so a template cannot include another.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from jinja2 import Environment, TemplateSyntaxError

from streams.errors import TidingsError, ValidationError

TEXT_PARTS = ("title", "text", "email.subject", "email.text", "email.html", "sms.text",
              "push.title", "push.body", "slack.text")
JSON_PARTS = ("push.data", "slack.blocks", "webhook.payload")
PARTS = TEXT_PARTS + JSON_PARTS
TEMPLATE_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_TENANT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@\-]{0,127}$")
_VARIANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
_TAG = re.compile(r"^[A-Za-z]{2,8}(?:[-_][A-Za-z0-9]{1,8}){0,4}$")
MAX_PART_CHARS = 64 * 1024
MAX_VERSION_CHARS = 900 * 1024  # under the broker default max.message.bytes (1 MiB)
MAX_VARIANTS = 10
_DOCUMENT_FIELDS = {"template_id", "description", "default_locale", "shared", "locales",
                    "experiment", "author", "version"}
# Parsing (not rendering) checks syntax at the edge; rendering happens in the worker's
# sandbox (agents/sandbox.py).
_SYNTAX = Environment(autoescape=False)  # noqa: S701 - only parses, never renders


class TemplateNotFound(TidingsError):
    """No such template or version for this tenant (or the version was never published)."""


def normalize_tag(tag: str | None) -> str | None:
    """`fr_ca` → `fr-CA`, `zh-hant-tw` → `zh-Hant-TW` (RFC 5646 §2.1.1 casing); None for
    anything that is not tag-shaped."""
    if not isinstance(tag, str) or not _TAG.match(tag.strip()):
        return None
    parts = re.split(r"[-_]", tag.strip())
    out = [parts[0].lower()]
    for part in parts[1:]:
        if len(part) == 4 and part.isalpha():
            out.append(part.title())  # script
        elif len(part) in (2, 3):
            out.append(part.upper())  # region
        else:
            out.append(part.lower())
    return "-".join(out)


def check_ids(tenant_id: Any, template_id: Any) -> None:
    if not isinstance(tenant_id, str) or not _TENANT_ID.match(tenant_id):
        raise ValidationError(f"tenant_id {tenant_id!r:.40} is not an identifier",
                              field="tenant_id")
    if not isinstance(template_id, str) or not TEMPLATE_ID.match(template_id):
        raise ValidationError(
            f"template_id {template_id!r:.40} must be 1-64 of a-z 0-9 . _ - "
            "(an id, not a path)", field="template_id")


def version_key(tenant_id: str, template_id: str, version: int, record: Mapping[str, Any]
                ) -> bytes:
    return f"{tenant_id}/{template_id}/{version}/{content_digest(record)}".encode()


def active_key(tenant_id: str, template_id: str) -> bytes:
    return f"{tenant_id}/{template_id}/active".encode()


def content_digest(record: Mapping[str, Any]) -> str:
    content = {k: record.get(k) for k in ("default_locale", "shared", "locales",
                                          "experiment_id", "variants")}
    return hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def _part(name: Any, source: Any, where: str) -> str:
    if name not in PARTS:
        raise ValidationError(f"{where}: unknown part {name!r}; parts are {list(PARTS)}",
                              field=where)
    if name in JSON_PARTS:
        if isinstance(source, str):
            try:
                value = orjson.loads(source)
            except orjson.JSONDecodeError as exc:
                raise ValidationError(f"{where}.{name} is not JSON: {exc}", field=where) from exc
        else:
            value = source
        if name == "push.data" and not (
            isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
        ):
            raise ValidationError(f"{where}.push.data must be an object of strings", field=where)
        if name == "slack.blocks" and not isinstance(value, list):
            raise ValidationError(f"{where}.slack.blocks must be an array of blocks",
                                  field=where)
        if name == "webhook.payload" and not isinstance(value, dict):
            raise ValidationError(f"{where}.webhook.payload must be a JSON object", field=where)
        for text in _strings(value):
            _check_syntax(text, f"{where}.{name}")
        source = orjson.dumps(value).decode()
    elif not isinstance(source, str):
        raise ValidationError(f"{where}.{name} must be template text", field=where)
    else:
        _check_syntax(source, f"{where}.{name}")
    if len(source) > MAX_PART_CHARS:
        raise ValidationError(f"{where}.{name} is longer than {MAX_PART_CHARS} characters",
                              field=where)
    return str(source)


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)


def _check_syntax(source: str, where: str) -> None:
    try:
        _SYNTAX.parse(source)
    except TemplateSyntaxError as exc:
        raise ValidationError(f"{where}: template syntax error on line {exc.lineno}: "
                              f"{exc.message}", field=where) from exc


def _parts(raw: Any, where: str) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ValidationError(f"{where} must be an object of parts", field=where)
    return {name: _part(name, source, where) for name, source in raw.items()}


def _locales(raw: Any, where: str) -> dict[str, dict[str, str]]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ValidationError(f"{where} must map locale tags to parts", field=where)
    out = {}
    for tag, parts in raw.items():
        normal = normalize_tag(tag)
        if normal is None:
            raise ValidationError(f"{where}: {tag!r:.20} is not a BCP 47 tag", field=where)
        if normal in out:
            raise ValidationError(f"{where}: locale {normal} is given twice", field=where)
        out[normal] = _parts(parts, f"{where}.{normal}")
    return out


def version_record(tenant_id: str, document: Mapping[str, Any], *, version: int,
                   occurred_at: int, author: str | None = None) -> dict[str, Any]:
    """The `publish` TemplateEvent for a template document (a parsed JSON/YAML file).

    Raises `ValidationError` naming the field for anything that cannot be published: an id
    that is not a token, an unknown part, a syntax error, a variant without weight.
    """
    if not isinstance(document, Mapping):
        raise ValidationError("a template is a JSON/YAML object")
    unknown = sorted(set(document) - _DOCUMENT_FIELDS)
    if unknown:
        raise ValidationError(f"unknown template fields {unknown}", field=unknown[0])
    template_id = document.get("template_id")
    check_ids(tenant_id, template_id)
    default_locale = document.get("default_locale")
    if default_locale is not None and normalize_tag(default_locale) is None:
        raise ValidationError("default_locale is not a BCP 47 tag", field="default_locale")
    shared = _parts(document.get("shared"), "shared")
    locales = _locales(document.get("locales"), "locales")
    if not shared and not locales:
        raise ValidationError("a template needs parts in `shared` or `locales`",
                              field="locales")
    experiment_id, variants = None, []
    experiment = document.get("experiment")
    if experiment is not None:
        if not isinstance(experiment, Mapping) or not isinstance(experiment.get("id"), str) \
                or not _VARIANT.match(experiment["id"][:32]):
            raise ValidationError("experiment must be {id, variants: [...]}",
                                  field="experiment")
        experiment_id = experiment["id"]
        raw_variants = experiment.get("variants")
        if not isinstance(raw_variants, list) or not 2 <= len(raw_variants) <= MAX_VARIANTS:
            raise ValidationError(f"an experiment has 2-{MAX_VARIANTS} variants",
                                  field="experiment.variants")
        for index, raw in enumerate(raw_variants):
            where = f"experiment.variants[{index}]"
            if not isinstance(raw, Mapping) or not _VARIANT.match(str(raw.get("name"))):
                raise ValidationError(f"{where} needs a name (a short token)", field=where)
            weight = raw.get("weight")
            if isinstance(weight, bool) or not isinstance(weight, int | float) or weight < 0:
                raise ValidationError(f"{where}.weight must be a number >= 0", field=where)
            variants.append({"name": raw["name"], "weight": float(weight),
                             "shared": _parts(raw.get("shared"), f"{where}.shared"),
                             "locales": _locales(raw.get("locales"), f"{where}.locales")})
        names = [v["name"] for v in variants]
        if len(set(names)) != len(names) or not any(v["weight"] > 0 for v in variants):
            raise ValidationError("variant names must differ and one weight be positive",
                                  field="experiment.variants")
    record = {
        "action": "publish", "tenant_id": tenant_id, "template_id": template_id,
        "version": version, "occurred_at": occurred_at, "author": author,
        "description": document.get("description"),
        "default_locale": normalize_tag(default_locale),
        "shared": shared, "locales": locales, "experiment_id": experiment_id,
        "variants": variants,
    }
    if len(orjson.dumps(record)) > MAX_VERSION_CHARS:
        raise ValidationError(f"a template version is at most {MAX_VERSION_CHARS} bytes")
    return record


def activate_record(tenant_id: str, template_id: str, version: int, *, occurred_at: int,
                    author: str | None = None) -> dict[str, Any]:
    check_ids(tenant_id, template_id)
    return {"action": "activate", "tenant_id": tenant_id, "template_id": template_id,
            "version": version, "occurred_at": occurred_at, "author": author,
            "description": None, "default_locale": None, "shared": {}, "locales": {},
            "experiment_id": None, "variants": []}


@dataclass
class _Template:
    versions: dict[int, dict[str, Any]] = field(default_factory=dict)
    active: int | None = None
    activated_at: int | None = None


class TemplateCatalog:
    """Every tenant's templates, built by applying TemplateEvents in log order."""

    def __init__(self) -> None:
        self._templates: dict[tuple[str, str], _Template] = {}
        self.conflicts = 0  # versions published twice with different content, ignored

    def apply(self, record: Mapping[str, Any]) -> None:
        entry = self._templates.setdefault((record["tenant_id"], record["template_id"]),
                                           _Template())
        if record["action"] == "activate":
            entry.active, entry.activated_at = record["version"], record["occurred_at"]
        elif record["action"] == "publish":
            existing = entry.versions.get(record["version"])
            if existing is None:
                entry.versions[record["version"]] = dict(record)
            elif content_digest(existing) != content_digest(record):
                self.conflicts += 1  # the first in the log stays: versions are immutable

    def resolve(self, tenant_id: str, template_id: str, version: int | None = None
                ) -> dict[str, Any]:
        """The version to render: the pinned one, else the active one, else the latest."""
        entry = self._templates.get((tenant_id, template_id))
        if entry is None or not entry.versions:
            raise TemplateNotFound(f"tenant {tenant_id!r} has no template {template_id!r}")
        wanted = version if version is not None else entry.active
        if wanted is None:
            wanted = max(entry.versions)
        found = entry.versions.get(wanted)
        if found is None:
            raise TemplateNotFound(f"template {template_id!r} has no version {wanted}")
        return found

    def has(self, tenant_id: str, template_id: str, version: int | None = None) -> bool:
        entry = self._templates.get((tenant_id, template_id))
        if entry is None:
            return False
        return bool(entry.versions) if version is None else version in entry.versions

    def latest(self, tenant_id: str, template_id: str) -> int:
        entry = self._templates.get((tenant_id, template_id))
        return max(entry.versions) if entry and entry.versions else 0

    def listing(self, tenant_id: str) -> list[dict[str, Any]]:
        """One row per template of the tenant: id, versions, active, latest description."""
        rows = []
        for (tenant, template_id), entry in sorted(self._templates.items()):
            if tenant != tenant_id or not entry.versions:
                continue
            latest = entry.versions[max(entry.versions)]
            rows.append({
                "template_id": template_id, "versions": sorted(entry.versions),
                "active": entry.active, "description": latest.get("description"),
                "locales": sorted(latest["locales"]),
                "experiment_id": latest.get("experiment_id"),
            })
        return rows
