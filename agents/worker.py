"""The worker: every stage's agent on one Faust app (`tidings worker`)."""

from __future__ import annotations

import logging

import faust

from agents import analytics, deliver, dispatch, health, intake, rules
from agents.context import Pipeline
from agents.retry import DelayLine
from streams.app import create_app
from streams.metrics import install_metrics
from streams.settings import Settings, load_settings
from streams.topics import channel_topic, retry_topic

log = logging.getLogger("tidings.worker")


def build_app(settings: Settings | None = None) -> faust.App:
    settings = settings or load_settings()
    app = create_app(settings)
    health.register(app)  # /health and /ready for probes
    pipeline = Pipeline(app, settings)
    install_metrics(app, settings)
    dispatcher = dispatch.register(app, pipeline) if "dispatch" in settings.stages else None
    if "intake" in settings.stages:
        intake.register(app, pipeline, dispatcher)
    if "deliver" in settings.stages:
        deliver.register(app, pipeline)
    if "rules" in settings.stages:
        rules.register(app, pipeline)
    if "delay_line" in settings.stages:
        _register_delay_line(app, settings)
    if "analytics" in settings.stages:
        analytics.register(app, pipeline)
    return app


def _register_delay_line(app: faust.App, settings: Settings) -> None:
    tiers = {
        retry_topic(settings, channel, delay): (channel_topic(settings, channel), delay)
        for channel in settings.enabled_channels
        for delay in settings.retry_tiers_s
    }

    @app.task  # type: ignore[untyped-decorator]
    async def delay_line() -> None:
        line = DelayLine(settings.kafka_bootstrap, f"{settings.app_id}.delay-line", tiers)
        await line.run()
