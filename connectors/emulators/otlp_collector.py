"""A local OpenTelemetry collector: receives OTLP/HTTP trace exports and keeps the spans.

Speaks the OTLP/HTTP binary protobuf encoding (OTLP spec, "OTLP/HTTP": POST /v1/traces
with an `ExportTraceServiceRequest`, answered 200 with an `ExportTraceServiceResponse`), the
protocol `TIDINGS_OTLP_ENDPOINT` points a worker at. Tests use it to read a worker's spans;
`python -m connectors.emulators.otlp_collector` prints spans as they arrive.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from connectors.emulators._server import HttpEmulator, serve_until_signalled, wait_until

_PROTOBUF = "application/x-protobuf"


@dataclass(frozen=True)
class CollectedSpan:
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: int
    service: str
    attributes: dict[str, Any] = field(default_factory=dict)
    events: tuple[str, ...] = ()
    status_code: int = 0


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


def _spans(request: Any) -> list[CollectedSpan]:
    spans = []
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(CollectedSpan(
                    trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(),
                    parent_span_id=span.parent_span_id.hex(),
                    name=span.name,
                    kind=span.kind,
                    service=str(resource.get("service.name", "")),
                    attributes={a.key: _value(a.value) for a in span.attributes},
                    events=tuple(e.name for e in span.events),
                    status_code=span.status.code,
                ))
    return spans


class OtlpCollector(HttpEmulator):
    """Collects every span exported to it; `wait_for` waits for the ones a test needs."""

    _role = "OTLP collector"

    def __init__(self, on_span: Callable[[CollectedSpan], None] | None = None) -> None:
        self.spans: list[CollectedSpan] = []
        self._on_span = on_span
        self._arrived = asyncio.Event()

    def _application(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/traces", self._export)
        return app

    async def _export(self, request: web.Request) -> web.Response:
        if request.content_type != _PROTOBUF:
            return web.Response(status=415, text=f"expected {_PROTOBUF}")
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        message = ExportTraceServiceRequest()
        try:
            message.ParseFromString(body)
        except Exception:  # noqa: BLE001 - protobuf's DecodeError; answered 400 as OTLP says
            return web.Response(status=400, text="not an ExportTraceServiceRequest")
        for span in _spans(message):
            self.spans.append(span)
            if self._on_span is not None:
                self._on_span(span)
        self._arrived.set()
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                            content_type=_PROTOBUF)

    def trace(self, trace_id: str) -> list[CollectedSpan]:
        return [s for s in self.spans if s.trace_id == trace_id]

    async def wait_for(
        self, done: Callable[[list[CollectedSpan]], bool],
        timeout: float,  # noqa: ASYNC109 - named in the error, like the other emulators'
        what: str = "spans",
    ) -> list[CollectedSpan]:
        """Wait until `done(spans)`; raise TimeoutError after `timeout` seconds."""
        await wait_until(self._arrived, lambda: done(self.spans), timeout,
                         lambda: f"{len(self.spans)} spans, not yet {what},")
        return self.spans


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=4318)
    port = parser.parse_args().port

    def show(span: CollectedSpan) -> None:
        print(f"{span.trace_id} {span.span_id} <- {span.parent_span_id or '-':16} "
              f"{span.service:16} {span.name}", flush=True)

    collector = OtlpCollector(on_span=show)
    asyncio.run(serve_until_signalled(
        collector, lambda: collector.start(port=port),
        lambda: f"OTLP collector on {collector.url}/v1/traces", "OTLP collector stopped",
    ))


if __name__ == "__main__":
    main()
