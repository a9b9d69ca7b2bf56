"""`/metrics` on the worker's own web server, and the consumer-lag refresh task.

Faust already runs an aiohttp server on `TIDINGS_WEB_PORT` for every worker; the page goes
there rather than on a second port from prometheus-client's `start_http_server`, so a
worker has one port to expose, probe and scrape, and the page is served by the event loop
the metrics are updated on (no thread reads them half-written).
"""

from __future__ import annotations

import faust
from faust.web import Request, Response, View
from prometheus_client import REGISTRY
from prometheus_client.exposition import choose_encoder

from streams.metrics.lag import LagReader, consumed_topics, refresh_forever
from streams.settings import Settings

METRICS_PATH = "/metrics"


def install_metrics(app: faust.App, settings: Settings) -> None:
    @app.page(METRICS_PATH)
    async def metrics(web: View, request: Request) -> Response:
        # Prometheus asks for OpenMetrics in its Accept header; curl and promtool get the
        # classic text format.
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.bytes(encode(REGISTRY), headers={"Content-Type": content_type})

    if settings.metrics_lag_interval_s > 0:
        reader = LagReader(settings.kafka_bootstrap, consumed_topics(settings))

        @app.task  # type: ignore[untyped-decorator]
        async def consumer_lag() -> None:
            await refresh_forever(reader, settings.metrics_lag_interval_s)
