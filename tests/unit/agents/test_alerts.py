"""An anomaly becomes an Avro event keyed by tenant and a count in the default registry."""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY

from agents.alerts import Alerts, anomaly_record
from streams.app import create_app
from streams.serde import serde
from streams.settings import load_settings


class RecordingTopic:
    """Stands in for the anomalies topic: keeps what is sent."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send(self, **kwargs: Any) -> None:
        self.sent.append(kwargs)


def record(**overrides: Any) -> dict[str, Any]:
    return anomaly_record(
        tenant_id="acme", kind="failure_surge", series="failures:webhook_503", observed=40,
        expected=1.5, score=25.0, threshold=4.0, window_start_ms=60_000, window_end_ms=120_000,
        **overrides,
    )


def test_a_record_fits_the_schema_and_ids_differ() -> None:
    first, second = record(), record(channel="webhook", action="hold", details={"p": "1"})
    assert serde("Anomaly").decode(serde("Anomaly").encode(first)) == first
    assert serde("Anomaly").decode(serde("Anomaly").encode(second)) == second
    assert first["anomaly_id"] != second["anomaly_id"]
    assert first["anomaly_id"].startswith("anm_")


async def test_emit_sends_the_event_and_counts_it(tmp_path) -> None:
    settings = load_settings(topic_prefix="unit", data_dir=tmp_path)
    alerts = Alerts(create_app(settings), settings)
    topic = alerts.topic = RecordingTopic()  # type: ignore[assignment]
    labels = {"tenant_id": "acme", "kind": "failure_surge"}
    before = REGISTRY.get_sample_value("notification_anomalies_total", labels) or 0.0

    event = record()
    await alerts.emit(event)

    (sent,) = topic.sent
    assert sent["key"] == b"acme"
    assert serde("Anomaly").decode(sent["value"]) == event
    assert REGISTRY.get_sample_value("notification_anomalies_total", labels) == before + 1
