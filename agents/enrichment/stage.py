"""The enrich step of the dispatch stage: one call, `EnrichStage.review(request)`, after
rate limiting and before routing and rendering.

It decides whether a notification is enriched (its tenant is in `enrich_tenants`, its
metadata says `enable_ml_analysis` = "true", or it goes to a channel its tenant marks
insecure), has the micro-batcher enrich it off the event loop, records the result as an
`enriched` status (or `quarantined`, with the notification on the quarantine topic, when
its spam score is over the tenant's threshold), fills in the recipient's locale from the
detected language when the recipient has none, and returns a `Review`: the template
context (`detected_language`, `sentiment`, `entities`) and the redaction for insecure
channels.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import faust
import orjson

from agents.enrich import Enrichment, enrich_batch, text_of
from agents.enrichment import models
from agents.enrichment.batcher import MicroBatcher
from agents.enrichment.quarantine import is_released, quarantine_key, quarantined
from agents.enrichment.redact import redact_parts
from streams.app import raw_topic
from streams.settings import Settings

if TYPE_CHECKING:
    from agents.context import Pipeline

log = logging.getLogger("tidings.enrich")

ENABLE_FLAG = "enable_ml_analysis"


@dataclass(frozen=True, slots=True)
class Review:
    """What the dispatch stage does with a notification after enrichment."""

    enrichment: Enrichment | None = None
    quarantined: bool = False
    insecure_channels: frozenset[str] = field(default_factory=frozenset)
    phone_region: str = "US"

    @property
    def context(self) -> Mapping[str, Any]:
        """The renderer's extra template context; empty when not enriched."""
        return self.enrichment.context() if self.enrichment else {}

    def redact(self, message: dict[str, Any]) -> dict[str, Any]:
        """The channel message with personal data removed if it goes to an insecure channel
        (or may fail over to one: the fallback copies this text)."""
        channels = {message["channel"], *(message.get("fallback_channels") or [])}
        if not channels & self.insecure_channels:
            return message
        people = self.enrichment.people() if self.enrichment else []
        region = self.phone_region
        # A rendered message carries more than title and body: the template's HTML, Slack
        # blocks, webhook payload, the data (push data is merged into it; a webhook sends it
        # whole) and the parts rendered for each fallback channel. All of them are redacted.
        message.update(redact_parts(message, people, region=region))
        fallbacks = message.get("rendered_fallbacks")
        if fallbacks:
            message["rendered_fallbacks"] = {
                channel: orjson.dumps(redact_parts(orjson.loads(parts), people, region=region)
                                      ).decode()
                for channel, parts in fallbacks.items()
            }
        return message


NOT_ENRICHED = Review()


def insecure_channels(settings: Settings, tenant: str) -> frozenset[str]:
    by_tenant = settings.enrich_insecure_channels
    return frozenset(by_tenant.get(tenant, by_tenant.get("*", ())))


def spam_threshold(settings: Settings, tenant: str) -> float:
    return settings.enrich_spam_thresholds.get(tenant, settings.enrich_spam_threshold)


def wants_enrichment(settings: Settings, request: Mapping[str, Any],
                     insecure: frozenset[str]) -> bool:
    tenants = settings.enrich_tenants
    if "*" in tenants or request["tenant_id"] in tenants:
        return True
    if (request.get("metadata") or {}).get(ENABLE_FLAG, "").lower() == "true":
        return True
    channels = {*request["channels"], *(request.get("fallback_channels") or [])}
    return bool(channels & insecure)


class EnrichStage:
    def __init__(self, app: faust.App, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.settings = settings = pipeline.settings
        self.quarantine = raw_topic(app, settings.topic("quarantine"))
        self._batcher: MicroBatcher[str, Enrichment] | None = None
        # Per-notification enrichment (the metadata flag) is possible whatever the settings,
        # so only a worker told to enrich checks for the models up front.
        if settings.enrich_tenants or settings.enrich_insecure_channels:
            models.require_packages(entities=settings.enrich_entities)
            # Load the models at start-up rather than on the first notification.
            @app.task  # type: ignore[untyped-decorator]
            async def warm_up_enrichment() -> None:
                await self.batcher.run_in_executor(["warm up the models, John, in London"])

    @property
    def batcher(self) -> MicroBatcher[str, Enrichment]:
        if self._batcher is None:
            entities = self.settings.enrich_entities

            def work(texts: Sequence[str]) -> list[Enrichment]:
                return enrich_batch(texts, entities=entities)

            self._batcher = MicroBatcher(
                work, max_batch=self.settings.enrich_batch_max,
                wait_s=self.settings.enrich_batch_wait_ms / 1000,
            )
        return self._batcher

    async def review(self, request: dict[str, Any]) -> Review:
        settings, tenant = self.settings, request["tenant_id"]
        insecure = insecure_channels(settings, tenant)
        if not wants_enrichment(settings, request, insecure):
            return NOT_ENRICHED
        enrichment = await self.batcher.submit(text_of(request))
        review = Review(enrichment, insecure_channels=insecure,
                        phone_region=settings.enrich_phone_region)
        threshold = spam_threshold(settings, tenant)
        if enrichment.spam_score > threshold and not is_released(request):
            await self.quarantine.send(
                key=quarantine_key(request),
                value=self.pipeline.request_serde.encode(
                    quarantined(request, enrichment.spam_score, enrichment.spam_reasons)),
            )
            await self.pipeline.emit_status(
                request, "quarantined",
                reason=f"spam score {enrichment.spam_score:.3f} over {threshold}: "
                       + "; ".join(enrichment.spam_reasons),
                details=enrichment.details(),
            )
            return Review(enrichment, quarantined=True, insecure_channels=insecure,
                          phone_region=settings.enrich_phone_region)
        (recipient,) = request["recipients"]
        details = enrichment.details()
        if not recipient.get("locale") and enrichment.language:
            recipient["locale"] = enrichment.language
            details["locale_from"] = "detected_language"
        await self.pipeline.emit_status(request, "enriched", details=details)
        return review
