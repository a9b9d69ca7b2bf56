"""deploy/grafana: the committed dashboard is what the generator makes, and shows what
operators need; its provisioning files are well-formed."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

GRAFANA = Path(__file__).resolve().parents[3] / "deploy" / "grafana"


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tidings_grafana", GRAFANA / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dashboard_exprs(board: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in board["panels"] for target in panel.get("targets", [])]


def test_committed_dashboard_is_the_generated_one() -> None:
    committed = (GRAFANA / "dashboards" / "tidings.json").read_text()
    assert load_generator().render() == committed, (
        "deploy/grafana/dashboards/tidings.json is stale: run deploy/grafana/generate.py"
    )


def test_dashboard_covers_every_operator_view() -> None:
    board = json.loads((GRAFANA / "dashboards" / "tidings.json").read_text())
    exprs = "\n".join(dashboard_exprs(board))
    for metric in (
        "notification_consumer_lag", "notification_requests_total",
        "notification_duration_seconds_bucket", "notification_retries_total",
        "notification_deadletters_total", "notification_circuit_breaker_state",
        "notification_rate_limit_hits_total", "notification_stage_duration_seconds_bucket",
    ):
        assert metric in exprs, metric
    assert "histogram_quantile(0.5," in exprs and "histogram_quantile(0.99," in exprs
    titles = {panel["title"] for panel in board["panels"]}
    assert {"Consumer lag per stage and channel", "End-to-end latency p50 / p99",
            "Circuit breakers", "Rate-limit hits by tenant (top 10)"} <= titles
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    # Every query goes through the dashboard's data-source variable.
    assert {panel["datasource"]["uid"] for panel in board["panels"] if "targets" in panel} == {
        "${datasource}"
    }


def test_provisioning_files() -> None:
    sources = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    (source,) = sources["datasources"]
    assert source["type"] == "prometheus" and source["isDefault"] is True
    providers = yaml.safe_load((GRAFANA / "provisioning/dashboards/tidings.yml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")
