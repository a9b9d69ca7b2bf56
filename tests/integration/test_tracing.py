"""One notification is one trace: a worker process exporting OTLP to a collector in the test.

The test process publishes (its publisher spans go to the in-memory exporter of the
`span_exporter` fixture); the worker runs as `tidings worker` with `TIDINGS_OTLP_ENDPOINT`
pointing at an `OtlpCollector`, exactly as it would at a real collector.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from connectors.emulators.otlp_collector import CollectedSpan, OtlpCollector
from connectors.emulators.webhook_receiver import WebhookReceiver
from streams.publisher import Publisher

pytestmark = pytest.mark.integration


@pytest.fixture
async def receiver(tidings_env: Any) -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver(tidings_env["TIDINGS_WEBHOOK_SECRET"]) as running:
        yield running


@pytest.fixture
async def collector() -> AsyncIterator[OtlpCollector]:
    async with OtlpCollector() as running:
        yield running


def request(receiver: WebhookReceiver, *paths: str) -> dict[str, Any]:
    return {
        "tenant_id": "acme",
        "idempotency_key": f"k-{time.monotonic_ns()}",
        "category": "orders",
        "channels": ["webhook"],
        "recipients": [{"user_id": f"u{i}-{time.monotonic_ns()}",
                        "webhook_url": f"{receiver.url}{path}"} for i, path in enumerate(paths)],
        "title": "Order shipped",
        "content": "Your order has shipped",
    }


def trace_of(publish_spans: list[Any], notification_id: str) -> str:
    (span,) = [s for s in publish_spans
               if s.attributes.get("tidings.notification_id") == notification_id]
    return format(span.context.trace_id, "032x")


def names(spans: list[CollectedSpan]) -> list[str]:
    return sorted(s.name for s in spans)


def trace_id_in(headers: list[tuple[str, bytes]] | None) -> str | None:
    for name, value in headers or ():
        if name == "traceparent":
            return value.decode().split("-")[1]
    return None


def assert_one_tree(spans: list[CollectedSpan], root_span_id: str) -> None:
    """Every worker span hangs, through its parents, off the publisher's span."""
    by_id = {s.span_id: s for s in spans}
    for span in spans:
        parent, hops = span.parent_span_id, 0
        while parent != root_span_id:
            assert parent in by_id, f"{span.name} has a parent outside the trace"
            parent, hops = by_id[parent].parent_span_id, hops + 1
            assert hops < 50


async def test_one_trace_per_notification_through_retry_fan_out_and_dead_letter(
    tidings_env, collector, receiver, worker, read_topic, span_exporter
):
    # (The collector and receiver are set up before the worker, so they outlive it: the
    # worker exports its last spans as it stops.)
    span_exporter.clear()
    receiver.fail_next("/flaky", [503])
    receiver.always("/broken", 400)
    # The batch processor exports every 200 ms instead of every 5 s.
    worker(TIDINGS_OTLP_ENDPOINT=collector.url, OTEL_BSP_SCHEDULE_DELAY="200")

    def send() -> list[str]:
        with Publisher(tidings_env.settings()) as publisher:
            return publisher.publish_many([
                request(receiver, "/flaky"),  # one recipient, a retry through a tier
                request(receiver, "/hook", "/hook"),  # two recipients: via the dispatch topic
                request(receiver, "/broken"),  # a dead letter
            ])

    flaky, fanned, broken = await asyncio.to_thread(send)
    published = list(span_exporter.get_finished_spans())
    traces = {nid: trace_of(published, nid) for nid in (flaky, fanned, broken)}
    assert len(set(traces.values())) == 3

    def attempts(spans: list[CollectedSpan]) -> list[tuple[int, str]]:
        return sorted((s.attributes["tidings.attempt"], s.attributes["tidings.outcome"])
                      for s in spans if s.name == "send webhook")

    await collector.wait_for(
        lambda _: attempts(collector.trace(traces[flaky])) == [(1, "retry"), (2, "delivered")]
        and len(attempts(collector.trace(traces[fanned]))) == 2
        and attempts(collector.trace(traces[broken])) == [(1, "rejected")],
        timeout=90, what="every delivery attempt",
    )
    await asyncio.sleep(1.0)  # the status sends after the last attempt are exported next

    # The retried notification: publish → intake → dispatch (in place) → deliver → retry
    # tier → delay_line → deliver, each stage a span of the one trace.
    spans = collector.trace(traces[flaky])
    root = next(s for s in published if s.attributes["tidings.notification_id"] == flaky)
    assert_one_tree(spans, format(root.context.span_id, "016x"))
    stages = [s.name for s in spans if "tidings.stage" in s.attributes]
    for stage in ("intake", "dispatch", "deliver", "delay_line"):
        assert stage in stages, names(spans)
    assert stages.count("deliver") == 2
    assert stages.count("delay_line") == 1
    assert not [s for s in spans if s.name.endswith(" receive")]  # stage spans say it
    prefix = tidings_env.prefix
    sends = {s.attributes.get("messaging.destination.name") for s in spans
             if s.name.endswith(" send")}
    assert f"{prefix}.channel.webhook" in sends
    assert any(topic.startswith(f"{prefix}.retry.webhook.") for topic in sends)
    assert f"{prefix}.status" in sends
    # (The delay line forwards bytes it never decodes, so its span names no notification.)
    assert {s.attributes.get("tidings.notification_id") for s in spans
            if "tidings.stage" in s.attributes and s.name != "delay_line"} == {flaky}

    # The fanned-out notification went through the dispatch topic: one dispatch span and one
    # deliver span per recipient, all in its trace.
    fanned_spans = collector.trace(traces[fanned])
    dispatches = [s for s in fanned_spans if s.name == "dispatch"]
    assert len(dispatches) == 2
    assert {s.attributes["messaging.destination.name"] for s in dispatches} == {
        f"{prefix}.dispatch"}
    assert [s.name for s in fanned_spans].count("deliver") == 2
    root = next(s for s in published if s.attributes["tidings.notification_id"] == fanned)
    assert_one_tree(fanned_spans, format(root.context.span_id, "016x"))

    # The dead letter: its deliver span failed, and the record carries the trace onwards.
    (failed,) = [s for s in collector.trace(traces[broken]) if s.name == "deliver"]
    assert "dead_lettered" in failed.events
    assert failed.status_code == 2  # STATUS_CODE_ERROR
    dead = read_topic(tidings_env.topic("deadletter"), "DeadLetter")
    await dead.wait_until(lambda r: len(r) == 1, 30)
    assert trace_id_in(dead.raw[0].headers()) == traces[broken]

    # Every status record continues its notification's trace.
    statuses = read_topic(tidings_env.topic("status"), "DeliveryStatus")
    records = await statuses.wait_until(
        lambda r: len([s for s in r if s["status"] == "delivered"]) == 3, 30)
    for raw, record in zip(statuses.raw, records, strict=True):
        assert trace_id_in(raw.headers()) == traces[record["notification_id"]], record

    # Only stages start traces: Faust's changelog writes and the delay line's polls, which
    # no notification is behind, were not exported as traces of their own.
    assert all(s.parent_span_id for s in collector.spans), [
        s.name for s in collector.spans if not s.parent_span_id]
    assert {s.service for s in collector.spans} == {"tidings-worker"}


async def test_a_domain_event_and_the_notification_a_rule_makes_of_it_are_one_trace(
    tidings_env, collector, receiver, worker, span_exporter
):
    from streams.events import EventPublisher
    from streams.rules import RulesClient

    settings = tidings_env.settings()
    span_exporter.clear()
    worker(TIDINGS_OTLP_ENDPOINT=collector.url, OTEL_BSP_SCHEDULE_DELAY="200")

    def put_rule_and_publish() -> str:
        with RulesClient(settings) as rules:
            rules.put({
                "tenant_id": "acme", "rule_id": "shipped", "event_type": "order.shipped",
                "condition": "true", "channels": ["webhook"], "category": "orders",
                "recipients": [{"user_id": "subject_id", "webhook_url": "payload.hook"}],
                "title": "Order ${order_id} shipped",
            })
        with EventPublisher(settings) as events:
            return events.publish({
                "event_id": "evt-trace-1", "tenant_id": "acme", "event_type": "order.shipped",
                "subject_id": "u-trace", "payload": {"order_id": "17",
                                                     "hook": f"{receiver.url}/hook"},
            })

    await asyncio.to_thread(put_rule_and_publish)
    (root,) = [s for s in span_exporter.get_finished_spans() if s.name == "publish"]
    trace_id = format(root.context.trace_id, "032x")
    await receiver.wait_for(1, timeout=90)
    await collector.wait_for(
        lambda _: any(s.name == "send webhook" for s in collector.trace(trace_id)),
        timeout=60, what="the delivery attempt in the event's trace",
    )
    spans = collector.trace(trace_id)
    assert_one_tree(spans, format(root.context.span_id, "016x"))
    stages = {s.name for s in spans if "tidings.stage" in s.attributes}
    assert {"rules", "intake", "deliver"} <= stages, names(spans)
