"""OpenTelemetry tracing: one notification is one trace, from publish to delivery.

The W3C trace context (`traceparent`, `tracestate`; https://www.w3.org/TR/trace-context/)
travels in Kafka record headers from stage to stage:

    publish ─▶ intake ─▶ dispatch ─▶ deliver (attempt 1) ─▶ retry tier ─▶ delay_line
                                        │                                      │
                                        └─ status, dead letter     deliver (attempt 2) ◀┘

- The publisher (confluent-kafka) starts the trace: a `publish` span, injected into the
  request's headers with the global propagator.
- Each stage opens a span for each event, its parent taken from the event's headers
  (`stage_span`, entered by `Pipeline.guard`), and each delivery attempt is a child span.
- Everything the worker sends goes through aiokafka, which `opentelemetry-instrumentation-
  aiokafka` wraps: every send becomes a `<topic> send` span and carries the current context
  in its headers — to the next stage, to a retry tier, to the status and dead-letter topics.
- The delay line re-publishes a parked message inside a `delay_line` span whose parent is
  the parked record's context, dropping the old `traceparent` so the new one is the only one.

Off by default: without `TIDINGS_OTLP_ENDPOINT` there is no SDK, no exporter and no
instrumentation, and `stage_span` is a context manager that only clears the log ids.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import Attributes
from structlog.contextvars import bound_contextvars

from streams.logs import ID_FIELDS, bind_ids, clear_ids
from streams.redact import redact_text
from streams.settings import Settings

# Headers that belong to the trace context (W3C Trace Context and Baggage).
TRACE_HEADERS = frozenset({"traceparent", "tracestate", "baggage"})
STAGE = "tidings.stage"
_SPAN_NAMES = {"validate": "intake", "rate_limit": "dispatch"}
_ID_ATTRIBUTES = ("tenant_id", "notification_id", "delivery_id", "channel")

Headers = Mapping[str, bytes] | Sequence[tuple[str, bytes | None]]
T = TypeVar("T")

_status_log = logging.getLogger("tidings.status")
_tracer: trace.Tracer = trace.NoOpTracer()
_enabled = False


class _HeaderGetter(Getter[Headers]):
    """Reads Kafka headers as Faust (a dict) or aiokafka (a list of pairs) hands them over."""

    def get(self, carrier: Headers, key: str) -> list[str] | None:
        pairs = carrier.items() if isinstance(carrier, Mapping) else carrier
        for name, value in pairs:
            if name == key and value is not None:
                return [value.decode("latin-1")]
        return None

    def keys(self, carrier: Headers) -> list[str]:
        return [name for name, _ in (carrier.items() if isinstance(carrier, Mapping) else carrier)]


class _HeaderSetter(Setter[list[tuple[str, bytes]]]):
    def set(self, carrier: list[tuple[str, bytes]], key: str, value: str) -> None:
        carrier[:] = [(k, v) for k, v in carrier if k != key]
        carrier.append((key, value.encode("latin-1")))


_getter, _setter = _HeaderGetter(), _HeaderSetter()


class StageRootSampler(Sampler):
    """Parent-based ratio sampling, where only a Tidings stage may begin a trace.

    With aiokafka instrumented, every send is a span — also the ones no notification is
    behind (Faust's changelog writes from its producer buffer task, the delay line's batch
    polls). Those have no parent; as roots they would be one useless trace per record. A
    span is a root here only if it says which stage it is (the `tidings.stage` attribute):
    a request published without trace context starts its trace at intake.
    """

    def __init__(self, ratio: float = 1.0) -> None:
        self._ratio = ratio
        self._delegate = ParentBased(TraceIdRatioBased(ratio))

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[trace.Link] | None = None,
        trace_state: trace.TraceState | None = None,
    ) -> SamplingResult:
        parent = trace.get_current_span(parent_context).get_span_context()
        if not parent.is_valid and not (attributes and STAGE in attributes):
            return SamplingResult(Decision.DROP)
        return self._delegate.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"StageRootSampler{{ParentBased{{TraceIdRatioBased{{{self._ratio}}}}}}}"


def otlp_exporter(settings: Settings) -> SpanExporter:
    """The OTLP span exporter the settings name (OTLP/HTTP protobuf or gRPC)."""
    endpoint = (settings.otlp_endpoint or "").rstrip("/")
    if settings.otlp_protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        return GrpcExporter(endpoint=endpoint, insecure=endpoint.startswith("http://"))
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpExporter,
    )

    # Like OTEL_EXPORTER_OTLP_ENDPOINT, the setting is the collector's base URL; the traces
    # path is appended (OTLP spec, "OTLP/HTTP Request": /v1/traces).
    if not endpoint.endswith("/v1/traces"):
        endpoint += "/v1/traces"
    return HttpExporter(endpoint=endpoint)


def configure_tracing(settings: Settings, service_name: str,
                      exporter: SpanExporter | None = None) -> TracerProvider | None:
    """Install the SDK, the exporter and the aiokafka instrumentation, if tracing is on.

    Tracing is on when `settings.otlp_endpoint` is set, or an `exporter` is given (tests).
    Returns the provider (shut down at exit, which flushes the last spans), or None.
    """
    if exporter is None:
        if not settings.otlp_endpoint:
            return None
        exporter = otlp_exporter(settings)
    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name,
                                  "service.namespace": "tidings",
                                  "tidings.app_id": settings.app_id}),
        sampler=StageRootSampler(settings.trace_sample_ratio),
    )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    enable(provider)
    return provider


def enable(provider: trace.TracerProvider) -> None:
    """Start tracing stages with `provider` and instrument aiokafka's sends."""
    import aiokafka
    from opentelemetry.instrumentation.aiokafka import AIOKafkaInstrumentor
    from opentelemetry.instrumentation.utils import unwrap

    global _tracer, _enabled
    _tracer = provider.get_tracer("tidings")
    instrumentor = AIOKafkaInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=provider)
        # Sends only. Consumption is traced by the stages' own spans, which know what a
        # record is for (Faust's consumer does not call getmany/getone anyway); the
        # instrumented getmany would add a `receive` span to a parked message's trace each
        # time the delay line re-reads a tier partition it held.
        unwrap(aiokafka.AIOKafkaConsumer, "getone")
        unwrap(aiokafka.AIOKafkaConsumer, "getmany")
    _enabled = True


def disable() -> None:
    """Undo `enable` (tests that trace in-process)."""
    from opentelemetry.instrumentation.aiokafka import AIOKafkaInstrumentor

    global _tracer, _enabled
    instrumentor = AIOKafkaInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
    _tracer, _enabled = trace.NoOpTracer(), False


def extract(headers: Headers | None) -> Context:
    """The trace context carried by Kafka headers (empty if there is none)."""
    return propagate.extract(headers or [], getter=_getter)


def inject(headers: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """Write the current trace context into `headers` (replacing any there) and return it."""
    propagate.inject(headers, setter=_setter)
    return headers


class _ConsumedEvent(Protocol):
    """The part of a Faust event a stage span reads."""

    @property
    def message(self) -> Any: ...


@contextmanager
def stage_span(stage: str, event: _ConsumedEvent) -> Iterator[None]:
    """A span for one event in one stage, continuing the trace in the event's headers.

    Also clears the log ids of the previous event, so a record is never logged with another
    record's ids.
    """
    clear_ids()
    if not _enabled:
        yield
        return
    message = event.message
    attributes = {
        STAGE: stage,
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.destination.name": message.topic,
        "messaging.destination.partition.id": str(message.partition),
        "messaging.kafka.offset": message.offset,
    }
    with _tracer.start_as_current_span(
        _SPAN_NAMES.get(stage, stage), context=extract(message.headers),
        kind=SpanKind.CONSUMER, attributes=attributes,
    ):
        yield


@contextmanager
def child_span(stage: str) -> Iterator[None]:
    """A stage run in place inside another one's span (intake dispatching directly)."""
    if not _enabled:
        yield
        return
    with _tracer.start_as_current_span(_SPAN_NAMES.get(stage, stage),
                                       attributes={STAGE: stage}):
        yield


def is_enabled() -> bool:
    return _enabled


def traced_headers(topic: str, headers: Sequence[tuple[str, bytes]] | None
                   ) -> list[tuple[str, bytes]]:
    """The headers of a record the worker's producer sends, carrying a `<topic> send`
    producer span (named and attributed as the aiokafka instrumentation names its own)."""
    attributes = {"messaging.system": "kafka", "messaging.destination.name": topic,
                  "messaging.operation": "publish"}
    with _tracer.start_as_current_span(f"{topic} send", kind=SpanKind.PRODUCER,
                                       attributes=attributes):
        return inject(list(headers or []))


def annotate(message: Mapping[str, Any]) -> None:
    """Name the notification the current stage works on: log ids and span attributes."""
    bind_ids(message)
    if not _enabled:
        return
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes({f"tidings.{name}": message[name]
                             for name in _ID_ATTRIBUTES if message.get(name)})


def record_error(error: BaseException, stage: str) -> None:
    """Mark the current span failed (the event is being dead-lettered)."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_status(Status(StatusCode.ERROR, f"{stage}: {type(error).__name__}"))
        span.add_event("dead_lettered", {"tidings.error_class": type(error).__name__,
                                         "tidings.error": redact_text(str(error))})


def record_status(message: Mapping[str, Any], status: str, reason: str | None) -> None:
    """A status the current stage emits for `message`: an info log line and a span event."""
    if _status_log.isEnabledFor(logging.INFO):
        with bound_contextvars(**{n: message[n] for n in ID_FIELDS if message.get(n)}):
            _status_log.info("%s (attempt %s)%s", status, message.get("attempt", 0),
                             f": {reason}" if reason else "")
    span = trace.get_current_span()
    if span.is_recording():
        span.add_event(f"status {status}", {"tidings.reason": redact_text(reason or "")})


class _Verdict(Protocol):
    @property
    def outcome(self) -> Any: ...
    @property
    def status_code(self) -> int | None: ...
    @property
    def reason(self) -> str: ...


V = TypeVar("V", bound=_Verdict)


async def delivery_attempt(message: Mapping[str, Any], send: Callable[[Any], Awaitable[V]]
                           ) -> V:
    """One delivery attempt (`send(message)`) as a client span with its verdict."""
    if not _enabled:
        return await send(message)
    with _tracer.start_as_current_span(
        f"send {message['channel']}", kind=SpanKind.CLIENT,
        attributes={"tidings.attempt": message["attempt"],
                    "tidings.channel": message["channel"],
                    "tidings.delivery_id": message["delivery_id"]},
    ) as span:
        verdict = await send(message)
        outcome = getattr(verdict.outcome, "value", str(verdict.outcome))
        span.set_attribute("tidings.outcome", outcome)
        if verdict.status_code is not None:
            span.set_attribute("http.response.status_code", verdict.status_code)
        if outcome != "delivered":
            span.set_status(Status(StatusCode.ERROR, redact_text(verdict.reason)[:200]))
        return verdict


@contextmanager
def publish_span(record: Mapping[str, Any]) -> Iterator[list[tuple[str, bytes]]]:
    """The root of a notification's trace: yields the headers to send the request with.

    Uses the global tracer provider, which is the publishing service's own: a service that
    traces gets the notification's trace under its current span; one that does not sends
    no trace context, and the trace starts at intake.
    """
    tracer = trace.get_tracer("tidings.publisher")
    with tracer.start_as_current_span(
        "publish", kind=SpanKind.PRODUCER,
        attributes={STAGE: "publish",
                    **{f"tidings.{n}": record[n] for n in _ID_ATTRIBUTES if record.get(n)}},
    ):
        yield inject([])


@contextmanager
def forward_span(headers: Sequence[tuple[str, bytes]] | None, drop: Sequence[str] = ()
                 ) -> Iterator[list[tuple[str, bytes]]]:
    """The delay line hands a parked record back: yields the headers to re-publish it with.

    Traced, the send happens in a `delay_line` span under the parked record's context, and
    the record's old trace headers are dropped (the instrumented send writes the new ones).
    Untraced, the trace headers pass through unchanged.
    """
    kept = [(k, v) for k, v in headers or () if k not in drop]
    if not _enabled:
        yield kept
        return
    with _tracer.start_as_current_span(
        "delay_line", context=extract(kept), kind=SpanKind.CONSUMER,
        attributes={STAGE: "delay_line"},
    ):
        yield [(k, v) for k, v in kept if k not in TRACE_HEADERS]
