"""Rendering a template version into a channel message's parts (pure; no Kafka).

Two steps, so that the dangerous one can run in a child process:

* `plan(...)` (in the worker): pick the locale (agents/l10n.py) and the A/B variant
  (agents/ab.py), collect the sources of the parts each channel needs and the context.
* `run(job)` (in the render process, agents/render_process.py, or inline): render every
  part in the sandbox (agents/sandbox.py) with the recipient's locale and time zone.

Then `apply(message, parts)` puts the rendered parts on a ChannelMessage. Any failure is a
`RenderError` naming the template, version and locale: a message is rendered whole or
not at all.

Which parts a channel uses, most specific first (a template may give only `title` and
`text` and still serve every channel):

    email    title ← email.subject | title   body ← email.text | text   html ← email.html
    sms      body ← sms.text | text
    push     title ← push.title | title      body ← push.body | text    data ← push.data
    slack    title ← title                   body ← slack.text | text   blocks ← slack.blocks
    webhook  title ← title                   body ← text                payload ← webhook.payload

HTML and JSON parts see the channel's rendered `parts.title` and `parts.text`, so one
shared layout (`{{ parts.text | markdown }}`) serves every locale.
"""

from __future__ import annotations

import contextvars
import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson
from jinja2 import Template

from agents import ab, sandbox
from agents.l10n import Formatter, LocaleChoice, LocaleError, choose_locale, truncate
from agents.route import with_rendered
from streams.errors import TidingsError

# field → (kind, the parts to look for, most specific first)
CHANNEL_FIELDS: dict[str, tuple[tuple[str, str, tuple[str, ...]], ...]] = {
    "email": (("title", "text", ("email.subject", "title")),
              ("body", "text", ("email.text", "text")),
              ("html", "html", ("email.html",))),
    "sms": (("body", "text", ("sms.text", "text")),),
    "push": (("title", "text", ("push.title", "title")),
             ("body", "text", ("push.body", "text")),
             ("data", "data", ("push.data",))),
    "slack": (("title", "text", ("title",)),
              ("body", "text", ("slack.text", "text")),
              ("blocks", "json", ("slack.blocks",))),
    "webhook": (("title", "text", ("title",)),
                ("body", "text", ("text",)),
                ("payload", "json", ("webhook.payload",))),
}
# Context names a template sees; `extra` (enrichment) may not shadow them.
RESERVED = frozenset({"recipient", "data", "notification", "locale", "variant", "now",
                      "parts", "template"})


class RenderError(TidingsError):
    """A template could not be rendered; names the template, version, locale and cause."""

    def __init__(self, message: str, *, template_id: str = "", version: int = 0,
                 locale: str | None = None, cause: str = "") -> None:
        where = f"template {template_id!r} v{version}" + (f" ({locale})" if locale else "")
        super().__init__(f"{where}: {message}")
        self.template_id, self.version, self.locale, self.cause = (template_id, version,
                                                                   locale, cause)


@dataclass(frozen=True, slots=True)
class Selection:
    template_id: str
    version: int
    locale: LocaleChoice
    experiment_id: str | None
    variant: str | None

    def details(self) -> dict[str, str]:
        """What tidings.status records about a rendering (DeliveryStatus.details)."""
        out = {"template_id": self.template_id, "template_version": str(self.version),
               "locale": self.locale.tag}
        if self.variant is not None and self.experiment_id is not None:
            out["experiment_id"] = self.experiment_id
            out["variant"] = self.variant
        return out


@dataclass(frozen=True, slots=True)
class RenderJob:
    """Everything the render process needs: plain data, so it pickles cheaply."""

    fields: dict[str, dict[str, tuple[str, str]]]  # channel → field → (kind, source)
    context: dict[str, Any]
    format_tag: str
    timezone: str | None
    max_chars: int


def select(record: Mapping[str, Any], recipient: Mapping[str, Any],
           candidates: Sequence[str | None]) -> tuple[Selection, Callable[[str], str | None]]:
    """The locale and variant for one recipient, and a lookup of a part's source by name:
    variant's locale part, variant's shared part, locale part, shared part."""
    template_id, version = record["template_id"], record["version"]
    variants = record.get("variants") or []
    variant: Mapping[str, Any] | None = None
    if variants and record.get("experiment_id"):
        arms = [ab.Variant(v["name"], v["weight"]) for v in variants]
        chosen = ab.assign(record["experiment_id"], record["tenant_id"], recipient["user_id"],
                           arms)
        variant = next(v for v in variants if v["name"] == chosen.name)
    locales = dict(record.get("locales") or {})
    available = set(locales) | set((variant or {}).get("locales") or {})
    choice = choose_locale(available, candidates, record.get("default_locale"))
    if choice is None:
        if not record.get("shared"):
            raise RenderError("no locale of the template matches and it has no shared parts",
                              template_id=template_id, version=version)
        fallback = record.get("default_locale") or "en"
        choice = choose_locale([fallback], [fallback], None) or LocaleChoice(
            tag=fallback, format_tag=fallback, direction="ltr")
    layers = []
    if variant is not None:
        layers += [(variant.get("locales") or {}).get(choice.tag) or {},
                   variant.get("shared") or {}]
    layers += [locales.get(choice.tag) or {}, record.get("shared") or {}]

    def source(part: str) -> str | None:
        for layer in layers:
            if part in layer:
                return str(layer[part])
        return None

    selection = Selection(template_id, version, choice, record.get("experiment_id"),
                          variant["name"] if variant is not None else None)
    return selection, source


def plan(record: Mapping[str, Any], request: Mapping[str, Any], channels: Sequence[str], *,
         preferred_locale: str | None = None, detected_language: str | None = None,
         extra: Mapping[str, Any] | None = None, max_chars: int = 256 * 1024,
         ) -> tuple[Selection, RenderJob]:
    """Select locale and variant for the request's (single) recipient and gather the parts
    its channels need. Candidates for the locale: `preferred_locale` (preferences), the
    recipient's `locale`, `detected_language` (enrichment), then the template's default."""
    (recipient,) = request["recipients"]
    candidates = [preferred_locale, recipient.get("locale"), detected_language]
    selection, source = select(record, recipient, candidates)
    fields: dict[str, dict[str, tuple[str, str]]] = {}
    for channel in channels:
        found = {}
        for name, kind, parts in CHANNEL_FIELDS[channel]:
            text = next((s for s in map(source, parts) if s is not None), None)
            if text is not None:
                found[name] = (kind, text)
        if "title" not in found and "body" not in found:
            raise RenderError(f"has no part for the {channel} channel",
                              template_id=selection.template_id, version=selection.version,
                              locale=selection.locale.tag)
        fields[channel] = found
    context = {key: value for key, value in (extra or {}).items()
               if isinstance(key, str) and key not in RESERVED}
    context.update({
        "recipient": dict(recipient),
        "data": dict(request.get("data") or {}),
        "notification": {
            "notification_id": request["notification_id"], "tenant_id": request["tenant_id"],
            "category": request["category"], "priority": request["priority"],
            "created_at": request["created_at"],
        },
        "locale": {"tag": selection.locale.tag, "language": selection.locale.language,
                   "direction": selection.locale.direction},
        "variant": selection.variant,
        "template": {"id": selection.template_id, "version": selection.version},
    })
    job = RenderJob(fields, context, selection.locale.format_tag, recipient.get("timezone"),
                    max_chars)
    return selection, job


# --- the render process's side -------------------------------------------------------------

_TEXT = sandbox.environment(autoescape=False)
_HTML = sandbox.environment(autoescape=True)
_FORMATTER: contextvars.ContextVar[Formatter] = contextvars.ContextVar("tidings_formatter")


def _formatting(name: str) -> Callable[..., str]:
    def filter_(value: Any, *args: Any) -> str:
        method: Callable[..., str] = getattr(_FORMATTER.get(), name)
        return method(value, *args)

    filter_.__name__ = name
    return filter_


for _env in (_TEXT, _HTML):
    for _name in ("format_datetime", "format_date", "format_time", "format_number",
                  "format_currency"):
        _env.filters[_name] = _formatting(_name)
    _env.filters["truncate"] = truncate


@lru_cache(maxsize=4096)
def _compiled(html: bool, source: str) -> Template:
    return sandbox.compile_part(_HTML if html else _TEXT, source)


def _render_json(source: str, context: Mapping[str, Any], budget: list[int]) -> Any:
    def walk(value: Any) -> Any:
        if isinstance(value, str):
            text = sandbox.render_bounded(_compiled(False, value), context, budget[0])
            budget[0] -= len(text)
            return text
        if isinstance(value, list):
            return [walk(item) for item in value]
        if isinstance(value, dict):
            return {key: walk(item) for key, item in value.items()}
        return value

    return walk(orjson.loads(source))


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


ERRORS: tuple[type[Exception], ...] = (*sandbox.TEMPLATE_ERRORS, LocaleError, MemoryError,
                                       orjson.JSONDecodeError)


def run(job: RenderJob) -> dict[str, dict[str, Any]]:
    """Render every field of every channel; raises one of `ERRORS` on the first failure."""
    token = _FORMATTER.set(Formatter(job.format_tag, job.timezone))
    try:
        context = {**job.context, "now": _now}
        out: dict[str, dict[str, Any]] = {}
        for channel, fields in job.fields.items():
            rendered: dict[str, Any] = {}
            for name in ("title", "body"):
                if name in fields:
                    rendered[name] = sandbox.render_bounded(
                        _compiled(False, fields[name][1]), context, job.max_chars).strip()
            later = {**context, "parts": {"title": rendered.get("title") or "",
                                          "text": rendered.get("body") or ""}}
            for name, (kind, source) in fields.items():
                if kind == "html":
                    rendered[name] = sandbox.render_bounded(_compiled(True, source), later,
                                                            job.max_chars)
                elif kind in ("json", "data"):
                    value = _render_json(source, later, [job.max_chars])
                    rendered[name] = value if kind == "data" else orjson.dumps(value).decode()
            out[channel] = rendered
        return out
    finally:
        _FORMATTER.reset(token)


def apply(message: dict[str, Any], rendered: Mapping[str, Mapping[str, Any]],
          selection: Selection) -> None:
    """Put its channel's rendered parts on a ChannelMessage, and keep the parts of each of
    its fallback channels for a failover (agents/route.py `failover_message`)."""
    with_rendered(message, rendered[message["channel"]], selection.locale.tag)
    message["rendered_fallbacks"] = {
        channel: orjson.dumps(rendered[channel]).decode()
        for channel in message.get("fallback_channels") or () if channel in rendered
    }
