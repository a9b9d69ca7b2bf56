"""deploy/prometheus: the config and rules pass promtool, the alerts pass their
`promtool test rules` unit tests, and every dashboard query is valid PromQL (each is wrapped
as a recording rule and checked by `promtool check rules`)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "tidings.json"


def dashboard_exprs() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in board["panels"] for target in panel.get("targets", [])]


def promtool(*args: str, cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess[str]:
    assert shutil.which("promtool"), "promtool is missing: apt-get install prometheus (.ci/run)"
    return subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60)


RULE_FILES = ("tidings.rules.yml", "analytics.rules.yml")


def test_config_and_rules_are_valid() -> None:
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert set(yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())["rule_files"]) == \
        set(RULE_FILES)
    result = promtool("check", "rules", *RULE_FILES)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("rule_file", RULE_FILES)
def test_alert_rules_pass_their_unit_tests(rule_file: str) -> None:
    test_file = f"tests/{rule_file.removesuffix('.yml')}.test.yml"
    result = promtool("test", "rules", test_file)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def alerts_of(rule_file: str) -> set[str]:
    rules = yaml.safe_load((PROMETHEUS / rule_file).read_text())
    return {rule["alert"] for group in rules["groups"] for rule in group["rules"]
            if "alert" in rule}


@pytest.mark.parametrize("rule_file", RULE_FILES)
def test_every_alert_fires_in_its_unit_tests(rule_file: str) -> None:
    tests = yaml.safe_load(
        (PROMETHEUS / f"tests/{rule_file.removesuffix('.yml')}.test.yml").read_text()
    )
    fired = {case["alertname"] for test in tests["tests"]
             for case in test.get("alert_rule_test", []) if case["exp_alerts"]}
    assert fired == alerts_of(rule_file)


def test_every_alert_named_in_the_issues_is_there() -> None:
    assert {"TidingsConsumerLagGrowing", "TidingsDeadLetters", "TidingsCircuitBreakerOpen",
            "TidingsWorkerDown"} <= alerts_of("tidings.rules.yml")
    # The runaway guard's hold comes "with an alert" (issue 7).
    assert "TidingsRunawayTenantHeld" in alerts_of("analytics.rules.yml")


def wrap_as_rules(exprs: list[str]) -> str:
    """A rule file recording each query; Grafana's `$__rate_interval` becomes 5m."""
    rules = [{"record": f"tidings_dashboard:query_{n}",
              "expr": expr.replace("$__rate_interval", "5m")}
             for n, expr in enumerate(exprs)]
    return yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]})


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    exprs = dashboard_exprs()
    assert len(exprs) >= 15
    (tmp_path / "dashboard.rules.yml").write_text(wrap_as_rules(exprs))
    result = promtool("check", "rules", "dashboard.rules.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout


@pytest.mark.parametrize("expr", [
    "sum by (stage (rate(notification_deadletters_total[$__rate_interval]))",
    # rate() of an instant vector: a type error the parser catches.
    "sum(rate(notification_requests_total))",
])
def test_the_query_check_rejects_bad_promql(tmp_path: Path, expr: str) -> None:
    (tmp_path / "bad.rules.yml").write_text(wrap_as_rules([expr]))
    assert promtool("check", "rules", "bad.rules.yml", cwd=tmp_path).returncode != 0
