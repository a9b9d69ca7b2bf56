"""deploy/compose.yaml: the Compose Specification, then what our stack needs of it."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "compose.yaml"


def load_validate() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tidings_deploy_validate_compose",
                                                  DEPLOY / "validate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


validate = load_validate()


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def test_the_file_follows_the_compose_specification() -> None:
    model = validate.compose_model(COMPOSE)
    assert set(model.services) == {"kafka", "topics", "worker", "api", "prometheus", "grafana"}


@pytest.mark.parametrize(("mutate", "expected"), [
    (lambda c: c["services"]["api"].update(helthcheck={}), "helthcheck"),
    (lambda c: c["services"]["worker"]["depends_on"]["topics"].update(condition="done"),
     "unknown variant `done`"),
    (lambda c: c["services"]["kafka"].update(ports="9092"), "expected a set"),
])
def test_a_broken_file_is_refused(tmp_path: Path, mutate: Any, expected: str) -> None:
    broken = compose()
    mutate(broken)
    path = tmp_path / "compose.yaml"
    path.write_text(json.dumps(broken))
    with pytest.raises(ValueError, match=expected):
        validate.compose_model(path)


def test_kafka_runs_in_kraft_mode_at_the_version_we_test() -> None:
    sys.path.insert(0, str(DEPLOY / "local"))
    import kafka_local

    kafka = compose()["services"]["kafka"]
    assert kafka["image"] == f"apache/kafka:{kafka_local.KAFKA_VERSION}"
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://kafka:9092"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


def test_workers_and_api_start_after_the_topics_exist_and_use_the_image() -> None:
    services = compose()["services"]
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name in ("worker", "api"):
        service = services[name]
        assert service["depends_on"]["topics"]["condition"] == "service_completed_successfully"
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        assert (DEPLOY / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
        assert service["environment"]["TIDINGS_KAFKA_BOOTSTRAP"] == "kafka:9092"
        assert service["environment"]["TIDINGS_HEALTHCHECK_URL"].endswith("/ready")
    assert services["api"]["command"] == ["api"] and services["worker"]["command"] == ["worker"]


def test_every_setting_named_is_a_real_one() -> None:
    from streams.settings import Settings

    fields = {f"TIDINGS_{name.upper()}" for name in Settings.model_fields}
    fields.add("TIDINGS_HEALTHCHECK_URL")  # streams/healthcheck.py, not a setting
    for name, service in compose()["services"].items():
        named = {k for k in service.get("environment", {}) if k.startswith("TIDINGS_")}
        assert named <= fields, (name, named - fields)


def test_volumes_are_declared_and_bind_mounts_exist() -> None:
    document = compose()
    declared = set(document["volumes"])
    for name, service in document["services"].items():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), (name, source)
            else:
                assert source in declared, (name, source)
