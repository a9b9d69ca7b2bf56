"""Render: a request that names a template becomes rendered channel messages.

Called by the dispatch stage after rate limiting and before routing (one call in
`Dispatcher.handle`). Requests without a template pass through as before. A template that
is missing, refuses to render, runs too long or too large sends the request to the
dead-letter topic with stage `render` and the template, version and error — no message
of it is routed, so nothing half-rendered is ever sent. Each rendered message gets a
`rendered` status whose details name the template, version, locale and A/B variant.

The decisions are in agents/templating.py; the sandbox in agents/sandbox.py; the child
process that can be cut off in agents/render_process.py; the templates in
agents/template_catalog.py.
"""

from __future__ import annotations

import atexit
import logging
from collections.abc import Mapping
from typing import Any

import faust

from agents.context import Pipeline
from agents.render_process import RenderFailed, RenderProcess, RenderTimeout, run_inline
from agents.route import channel_messages
from agents.template_catalog import TemplateFollower
from agents.templating import RenderError, apply, plan
from streams.templates import TemplateNotFound

STAGE = "render"
log = logging.getLogger("tidings.render")


class Renderer:
    def __init__(self, app: faust.App, pipeline: Pipeline) -> None:
        settings = pipeline.settings
        self.pipeline = pipeline
        self.settings = settings
        self.templates = TemplateFollower(settings.kafka_bootstrap, settings.topic("templates"))
        self.process = (RenderProcess(timeout_s=settings.render_timeout_s,
                                      max_memory_mb=settings.render_max_memory_mb)
                        if settings.render_isolation == "process" else None)
        app.task(self.templates.run)
        if self.process is not None:
            # Started by the first render (like the follower, by the first lookup), so a
            # worker without templated requests pays nothing for them. The child also exits
            # on its own when the worker's end of the socket closes.
            atexit.register(self.process.close)

    async def channel_messages(
        self, request: Mapping[str, Any], *, preferred_locale: str | None = None,
        detected_language: str | None = None, extra: Mapping[str, Any] | None = None,
    ) -> list[dict[str, Any]] | None:
        """The request's channel messages, rendered when it names a template; None when the
        request was dead-lettered instead.

        `preferred_locale` (the recipient's preferences) and `detected_language`
        (enrichment) join the recipient's locale as candidates; `extra` (enrichment:
        `detected_language`, `sentiment`, `entities`) is merged into the context.
        """
        messages = list(channel_messages(request))
        ref = request.get("template")
        if not ref or not messages:
            return messages
        template_id, version = ref["template_id"], ref.get("version")
        try:
            record = await self.templates.resolve(request["tenant_id"], template_id, version)
            # Fallback channels too: a failover sends what the template says for them.
            channels = {m["channel"] for m in messages} | set(
                request.get("fallback_channels") or ())
            selection, job = plan(
                record, request, sorted(channels),
                preferred_locale=preferred_locale, detected_language=detected_language,
                extra=extra, max_chars=self.settings.render_max_output_chars,
            )
            rendered = (await self.process.render(job) if self.process is not None
                        else run_inline(job))
        except RenderError as exc:
            await self._dead_letter(request, exc)
            return None
        except TemplateNotFound as exc:
            await self._dead_letter(request, RenderError(str(exc), template_id=template_id,
                                                         version=version or 0,
                                                         cause="TemplateNotFound"))
            return None
        except (RenderFailed, RenderTimeout) as exc:
            cause = getattr(exc, "error_class", type(exc).__name__)
            await self._dead_letter(request, RenderError(
                f"{cause}: {exc}", template_id=selection.template_id,
                version=selection.version, locale=selection.locale.tag, cause=cause))
            return None
        details = selection.details()
        for message in messages:
            apply(message, rendered, selection)
            await self.pipeline.emit_status(message, "rendered", details=details)
        return messages

    async def _dead_letter(self, request: Mapping[str, Any], error: RenderError) -> None:
        event = faust.current_event()
        if event is None:  # not inside an agent (a direct call): nothing to dead-letter
            raise error
        await self.pipeline.dead_letter(STAGE, error, event, decoded=request)
