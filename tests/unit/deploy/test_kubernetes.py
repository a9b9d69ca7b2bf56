"""deploy/k8s: kubeconform against offline schemas, then the rules a schema cannot say."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
K8S = REPO / "deploy" / "k8s"
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def load_validate() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tidings_deploy_validate",
                                                  REPO / "deploy" / "validate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


validate = load_validate()


@pytest.fixture(scope="module")
def schema_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("kubernetes-schemas")


def documents() -> list[dict[str, Any]]:
    return validate.manifest_documents(MANIFESTS)


def find(kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def workloads() -> list[dict[str, Any]]:
    return [d for d in documents() if d["kind"] in ("Deployment", "StatefulSet", "Job")]


def test_kubeconform_accepts_every_manifest(schema_cache: Path) -> None:
    result = validate.kubeconform(MANIFESTS, schema_cache)
    assert result.returncode == 0, result.stdout + result.stderr
    kinds = {d["kind"] for d in documents()}
    assert "Valid: 10, Invalid: 0, Errors: 0" in result.stdout, result.stdout
    assert kinds == {"ConfigMap", "Secret", "Job", "Service", "StatefulSet", "Deployment",
                     "PodDisruptionBudget"}


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        # a misspelt field: only a strict schema catches it
        (lambda d: d["spec"].update(replicaz=3), "replicaz"),
        (lambda d: d["spec"].update(replicas="three"), "replicas"),
        (lambda d: d["spec"]["template"]["spec"]["containers"][0].pop("name"), "name"),
        (lambda d: d["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]
         .update(port=[6066]), "livenessProbe"),
    ],
)
def test_kubeconform_refuses_a_broken_manifest(schema_cache: Path, tmp_path: Path, mutate: Any,
                                               expected: str) -> None:
    """The schemas are really read: the same check fails on a manifest with one fault."""
    broken = find("StatefulSet", "tidings-worker")
    mutate(broken)
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(broken))
    result = validate.kubeconform([path], schema_cache)
    assert result.returncode != 0
    assert "Invalid: 1" in result.stdout and expected in result.stdout, result.stdout


def test_workers_are_a_statefulset_with_a_volume_for_rocksdb() -> None:
    worker = find("StatefulSet", "tidings-worker")
    pod = worker["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    data_dir = {e["name"]: e["value"] for e in container["env"]}["TIDINGS_DATA_DIR"]
    (claim,) = worker["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == data_dir
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    # stable pod names through a headless Service
    service = find("Service", worker["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None"


def test_the_api_is_a_deployment() -> None:
    api = find("Deployment", "tidings-api")
    assert api["spec"]["template"]["spec"]["containers"][0]["args"] == ["api"]
    assert api["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


@pytest.mark.parametrize("workload", workloads(), ids=lambda d: d["metadata"]["name"])
def test_every_pod_runs_unprivileged_within_limits(workload: dict[str, Any]) -> None:
    pod = workload["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's USER (deploy/Dockerfile)
    for container in pod["containers"]:
        for kind in ("requests", "limits"):
            assert set(container["resources"][kind]) >= {"cpu", "memory"}, container["name"]
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["readOnlyRootFilesystem"] is True
        assert security["capabilities"]["drop"] == ["ALL"]
        # Python writes temporary files; a read-only root needs a writable /tmp.
        if security["readOnlyRootFilesystem"] and workload["kind"] != "Job":
            assert "/tmp" in {m["mountPath"] for m in container["volumeMounts"]}


def _api_paths() -> set[str]:
    from streams.api.app import create_api
    from streams.settings import Settings

    return set(create_api(Settings()).openapi()["paths"])


def _worker_paths() -> set[str]:
    """The pages agents/health.py registers on a worker's Faust app."""
    import faust

    from agents import health

    app = faust.App("tidings-probe-paths")
    health.register(app)
    return {str(path) for path in app.web.views}


@pytest.mark.parametrize(("kind", "name", "port_setting"), [
    ("StatefulSet", "tidings-worker", "TIDINGS_WEB_PORT"),
    ("Deployment", "tidings-api", "TIDINGS_API_PORT"),
])
def test_probes_hit_real_routes_on_the_configured_port(kind: str, name: str,
                                                       port_setting: str) -> None:
    (container,) = find(kind, name)["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    config = find("ConfigMap", "tidings-config")["data"]
    routes = _api_paths() if kind == "Deployment" else _worker_paths()
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] in routes, (probe, get)
        assert ports[get["port"]] == int(config[port_setting])
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"


@pytest.mark.parametrize("kind", ["PodDisruptionBudget", "Service"])
def test_selectors_match_exactly_one_workload(kind: str) -> None:
    for doc in (d for d in documents() if d["kind"] == kind):
        selector = (doc["spec"]["selector"]["matchLabels"] if kind == "PodDisruptionBudget"
                    else doc["spec"]["selector"])
        matched = [w["metadata"]["name"] for w in workloads() if w["kind"] != "Job"
                   and selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()]
        assert len(matched) == 1, (doc["metadata"]["name"], matched)


def test_every_referenced_configmap_and_secret_is_defined() -> None:
    defined = {(d["kind"], d["metadata"]["name"]) for d in documents()}
    for workload in workloads():
        pod = workload["spec"]["template"]["spec"]
        for container in pod["containers"]:
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert ("ConfigMap", source["configMapRef"]["name"]) in defined
                if "secretRef" in source:
                    assert ("Secret", source["secretRef"]["name"]) in defined
        for volume in pod.get("volumes", []):
            if "secret" in volume:
                assert ("Secret", volume["secret"]["secretName"]) in defined


def test_every_setting_named_is_a_real_one_and_the_configmap_loads() -> None:
    from streams.settings import Settings, load_settings

    fields = {f"TIDINGS_{name.upper()}" for name in Settings.model_fields}
    config = find("ConfigMap", "tidings-config")["data"]
    named = set(config)
    for doc in documents():
        if doc["kind"] == "Secret":
            named |= {k for k in doc["stringData"] if k.startswith("TIDINGS_")}
    for workload in workloads():
        for container in workload["spec"]["template"]["spec"]["containers"]:
            named |= {e["name"] for e in container.get("env", [])}
    assert named <= fields, named - fields
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    with mock.patch.dict(os.environ, {**env, **config}, clear=True):
        settings = load_settings()
    assert settings.replication_factor == 3 and settings.web_host == "0.0.0.0"


def test_kustomization_lists_every_manifest_and_the_image() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(p.name for p in MANIFESTS)
    images = {c["image"].split(":")[0] for w in workloads()
              for c in w["spec"]["template"]["spec"]["containers"]}
    assert images == {image["name"] for image in kustomization["images"]} == {"tidings"}
