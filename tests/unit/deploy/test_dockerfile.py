"""deploy/Dockerfile: hadolint, then our rules (multi-stage, non-root, healthcheck, inputs)."""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import re
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from dockerfile_parse import DockerfileParser

REPO = Path(__file__).resolve().parents[3]
DOCKERFILE = REPO / "deploy" / "Dockerfile"


def load_validate() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tidings_deploy_validate_df",
                                                  REPO / "deploy" / "validate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


validate = load_validate()


def instructions() -> list[dict[str, Any]]:
    return [i for i in DockerfileParser(str(DOCKERFILE)).structure
            if i["instruction"] != "COMMENT"]


def final_stage() -> list[dict[str, Any]]:
    steps = instructions()
    last_from = max(n for n, i in enumerate(steps) if i["instruction"] == "FROM")
    return steps[last_from:]


def test_hadolint_passes() -> None:
    result = validate.hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_runs_for_real(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /src && pip install flask\nUSER root\n")
    result = validate.hadolint(bad)
    assert result.returncode != 0
    for rule in ("DL3007", "DL3003", "DL3013", "DL3002"):  # latest, cd, unpinned, root
        assert rule in result.stdout, result.stdout


def test_multi_stage_from_a_pinned_python_311() -> None:
    steps = instructions()
    stages = [i["value"] for i in steps if i["instruction"] == "FROM"]
    assert len(stages) >= 2 and stages[-1].endswith("AS runtime")
    (arg,) = [i["value"] for i in steps if i["instruction"] == "ARG"]
    image = arg.split("=", 1)[1]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", image), image
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert ">=3.11" in requires and "<3.12" in requires
    # the runtime stage takes only the built virtualenv from the build stage
    copies = [i["value"] for i in final_stage() if i["instruction"] == "COPY"]
    assert copies == ["--from=build /opt/tidings /opt/tidings"]


def test_runs_as_the_unprivileged_user_kubernetes_expects() -> None:
    users = [i["value"] for i in final_stage() if i["instruction"] == "USER"]
    assert users == ["10001:10001"]  # runAsUser/runAsGroup in deploy/k8s


def test_healthcheck_and_entrypoint() -> None:
    stage = final_stage()
    (check,) = [i["value"] for i in stage if i["instruction"] == "HEALTHCHECK"]
    command = json.loads(check.split("CMD", 1)[1])
    assert command == ["python", "-m", "streams.healthcheck"]
    assert importlib.util.find_spec("streams.healthcheck") is not None
    (entrypoint,) = [i["value"] for i in stage if i["instruction"] == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["tidings"]
    exposed = {int(p) for i in stage if i["instruction"] == "EXPOSE" for p in i["value"].split()}
    from streams.settings import Settings

    defaults = Settings.model_fields
    assert exposed == {defaults["web_port"].default, defaults["api_port"].default}


def test_env_names_real_settings_and_the_default_healthcheck_url() -> None:
    from streams.settings import Settings

    parser = DockerfileParser(str(DOCKERFILE))
    env = parser.envs
    named = {k for k in env if k.startswith("TIDINGS_") and k != "TIDINGS_HEALTHCHECK_URL"}
    fields = {f"TIDINGS_{name.upper()}" for name in Settings.model_fields}
    assert named <= fields, named - fields
    assert env["TIDINGS_WEB_HOST"] == "0.0.0.0"  # reachable for Prometheus and probes
    assert env["TIDINGS_HEALTHCHECK_URL"].endswith(f":{env.get('TIDINGS_WEB_PORT', 6066)}/health")


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore: the last matching pattern wins; `!` re-includes."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        bare = pattern.lstrip("!").rstrip("/")
        if bare == "**" or fnmatch.fnmatch(path, bare) or path.startswith(bare + "/"):
            ignored = not negate
    return ignored


@pytest.mark.parametrize("source", [
    src for i in instructions() if i["instruction"] == "COPY" and "--from" not in i["value"]
    for src in i["value"].split()[:-1]
])
def test_every_copied_source_exists_and_is_in_the_build_context(source: str) -> None:
    assert (REPO / source).exists(), source
    ignore = (REPO / "deploy" / "Dockerfile.dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in ignore if line.strip() and not line.startswith("#")]
    assert not _ignored(source, patterns), source


def test_the_installed_packages_are_every_package_in_the_tree() -> None:
    """`pip install .` in the image installs what pyproject lists; a package missing there
    works in the editable dev install and breaks only in the image."""
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())
                 ["tool"]["setuptools"]["packages"])
    found = {str(p.parent.relative_to(REPO)).replace("/", ".")
             for top in ("streams", "agents", "connectors", "schemas")
             for p in (REPO / top).rglob("__init__.py")}
    assert found <= listed, found - listed
