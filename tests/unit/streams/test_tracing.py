"""Trace context in Kafka headers, stage spans, the sampler and the exporter choice.

The Kafka side runs for real in tests/integration/test_tracing.py; here the events are
stand-ins carrying what a Faust event carries (topic, partition, offset, headers).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.trace import SpanKind, StatusCode

from streams import tracing
from streams.settings import load_settings

PARENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{PARENT_TRACE}-00f067aa0ba902b7-01"


@dataclass
class Event:
    headers: Any
    topic: str = "t.requests"
    partition: int = 3
    offset: int = 42
    message: Any = field(init=False)

    def __post_init__(self) -> None:
        self.message = SimpleNamespace(topic=self.topic, partition=self.partition,
                                       offset=self.offset, headers=self.headers)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=tracing.StageRootSampler())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.enable(provider)
    try:
        yield exporter
    finally:
        tracing.disable()


@pytest.mark.parametrize("headers", [
    [("tidings-due-ms", b"1"), ("traceparent", PARENT.encode())],  # aiokafka: pairs
    {"traceparent": PARENT.encode()},  # Faust's Event.headers: a dict
])
def test_context_is_read_from_either_header_form(headers: Any) -> None:
    context = trace.get_current_span(tracing.extract(headers)).get_span_context()
    assert format(context.trace_id, "032x") == PARENT_TRACE
    assert context.is_remote


def test_inject_replaces_a_stale_traceparent(spans: InMemorySpanExporter) -> None:
    headers = [("traceparent", PARENT.encode()), ("tidings-due-ms", b"5")]
    with tracing.child_span("rate_limit"):  # a new trace: a stage span without a parent
        tracing.inject(headers)
    assert [k for k, _ in headers].count("traceparent") == 1
    assert PARENT_TRACE.encode() not in dict(headers)["traceparent"]


def test_stage_span_continues_the_trace_in_the_headers(spans: InMemorySpanExporter) -> None:
    with tracing.stage_span("validate", Event([("traceparent", PARENT.encode())])):
        tracing.annotate({"tenant_id": "acme", "notification_id": "ntf_1", "channel": None})
    (span,) = spans.get_finished_spans()
    assert span.name == "intake"
    assert span.kind is SpanKind.CONSUMER
    assert format(span.context.trace_id, "032x") == PARENT_TRACE
    assert format(span.parent.span_id, "016x") == "00f067aa0ba902b7"
    assert span.attributes["tidings.stage"] == "validate"
    assert span.attributes["tidings.notification_id"] == "ntf_1"
    assert "tidings.channel" not in span.attributes
    assert span.attributes["messaging.kafka.offset"] == 42


def test_without_context_intake_starts_the_trace(spans: InMemorySpanExporter) -> None:
    with tracing.stage_span("validate", Event([])):
        with tracing.child_span("rate_limit"):
            pass
    dispatch, intake = spans.get_finished_spans()
    assert intake.parent is None
    assert (dispatch.name, dispatch.parent.span_id) == ("dispatch", intake.context.span_id)


def test_sampler_drops_roots_that_are_not_stages() -> None:
    sampler = tracing.StageRootSampler()
    trace_id = int(PARENT_TRACE, 16)
    assert sampler.should_sample(None, trace_id, "t.changelog send", SpanKind.PRODUCER
                                 ).decision is Decision.DROP
    assert sampler.should_sample(None, trace_id, "intake", SpanKind.CONSUMER,
                                 {tracing.STAGE: "validate"}).decision.is_sampled()
    parent = tracing.extract([("traceparent", PARENT.encode())])
    assert sampler.should_sample(parent, trace_id, "t.status send", SpanKind.PRODUCER
                                 ).decision.is_sampled()
    unsampled = tracing.extract([("traceparent", PARENT[:-2].encode() + b"00")])
    assert sampler.should_sample(unsampled, trace_id, "deliver", SpanKind.CONSUMER,
                                 {tracing.STAGE: "deliver"}).decision is Decision.DROP


def test_forward_span_swaps_the_parked_context_for_its_own(spans: InMemorySpanExporter
                                                           ) -> None:
    parked = [("tidings-due-ms", b"17"), ("traceparent", PARENT.encode())]
    with tracing.forward_span(parked, drop=("tidings-due-ms",)) as headers:
        assert headers == []  # the instrumented send writes the delay_line span's context
    (span,) = spans.get_finished_spans()
    assert span.name == "delay_line"
    assert format(span.context.trace_id, "032x") == PARENT_TRACE


def test_untraced_forward_passes_the_context_through() -> None:
    parked = [("tidings-due-ms", b"17"), ("traceparent", PARENT.encode())]
    with tracing.forward_span(parked, drop=("tidings-due-ms",)) as headers:
        assert headers == [("traceparent", PARENT.encode())]


async def test_delivery_attempt_is_a_client_span_with_its_verdict(spans: InMemorySpanExporter
                                                                  ) -> None:
    message = {"channel": "sms", "attempt": 2, "delivery_id": "dlv_1"}
    verdict = SimpleNamespace(outcome=SimpleNamespace(value="retry"), status_code=429,
                              reason="429 for +14155550123")

    async def send(sent: Any) -> Any:
        assert sent is message
        return verdict

    with tracing.stage_span("deliver", Event([])):
        assert await tracing.delivery_attempt(message, send) is verdict
    attempt, _deliver = spans.get_finished_spans()
    assert (attempt.name, attempt.kind) == ("send sms", SpanKind.CLIENT)
    assert attempt.attributes["tidings.attempt"] == 2
    assert attempt.attributes["tidings.outcome"] == "retry"
    assert attempt.status.status_code is StatusCode.ERROR
    assert "4155550123" not in attempt.status.description


def test_publish_span_starts_the_trace_in_the_request_headers(span_exporter: Any) -> None:
    span_exporter.clear()
    with tracing.publish_span({"tenant_id": "acme", "notification_id": "ntf_9"}) as headers:
        pass
    (span,) = span_exporter.get_finished_spans()
    assert (span.name, span.kind) == ("publish", SpanKind.PRODUCER)
    assert span.attributes["tidings.notification_id"] == "ntf_9"
    (name, value), = headers
    assert name == "traceparent"
    assert value.decode().split("-")[1] == format(span.context.trace_id, "032x")


def test_tracing_is_off_without_an_endpoint() -> None:
    assert tracing.configure_tracing(load_settings(), "tidings-test") is None
    with tracing.stage_span("validate", Event([("traceparent", PARENT.encode())])):
        assert not trace.get_current_span().get_span_context().is_valid


@pytest.mark.parametrize(("protocol", "endpoint", "kind", "expected"), [
    ("http/protobuf", "http://127.0.0.1:4318", "http", "http://127.0.0.1:4318/v1/traces"),
    ("http/protobuf", "http://c:4318/v1/traces", "http", "http://c:4318/v1/traces"),
    ("grpc", "http://127.0.0.1:4317", "grpc", None),
])
def test_exporter_follows_the_settings(protocol: str, endpoint: str, kind: str,
                                       expected: str | None) -> None:
    settings = load_settings(otlp_endpoint=endpoint, otlp_protocol=protocol)
    exporter = tracing.otlp_exporter(settings)
    try:
        assert f".{kind}." in type(exporter).__module__
        if expected is not None:
            assert exporter._endpoint == expected  # type: ignore[attr-defined]
    finally:
        exporter.shutdown()


def test_grpc_exporter_delivers_spans_to_a_grpc_collector() -> None:
    """The `grpc` protocol against a real gRPC TraceService on loopback."""
    from concurrent import futures

    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    received: list[str] = []

    class Collector(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
        def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC's name
            received.extend(span.name for rs in request.resource_spans
                            for ss in rs.scope_spans for span in ss.spans)
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Collector(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        settings = load_settings(otlp_endpoint=f"http://127.0.0.1:{port}", otlp_protocol="grpc")
        provider = TracerProvider(sampler=tracing.StageRootSampler())
        provider.add_span_processor(SimpleSpanProcessor(tracing.otlp_exporter(settings)))
        with provider.get_tracer("t").start_as_current_span(
                "intake", attributes={tracing.STAGE: "validate"}):
            pass
        provider.shutdown()
    finally:
        server.stop(None)
    assert received == ["intake"]


def test_log_lines_inside_a_stage_name_its_trace(spans: InMemorySpanExporter) -> None:
    import io
    import json
    import logging

    from streams.logs import json_formatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(json_formatter())
    log = logging.getLogger("tidings.test-trace-ids")
    log.addHandler(handler)
    try:
        with tracing.stage_span("deliver", Event([("traceparent", PARENT.encode())])):
            tracing.annotate({"tenant_id": "acme", "delivery_id": "dlv_7"})
            log.warning("retrying")
    finally:
        log.removeHandler(handler)
    record = json.loads(stream.getvalue())
    (span,) = spans.get_finished_spans()
    assert record["trace_id"] == PARENT_TRACE
    assert record["span_id"] == format(span.context.span_id, "016x")
    assert record["delivery_id"] == "dlv_7"
