"""deploy/prometheus: the real promtool checks the config and rules and runs the rule tests."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.metric_names import (
    DEPLOY,
    RULE_FILES,
    SCRAPE_SERIES,
    metric_names,
    registered_names,
)

PROMETHEUS = DEPLOY / "prometheus"
RULE_TESTS = sorted((PROMETHEUS / "tests").glob("*.test.yml"))


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120)


def _rules() -> list[dict[str, Any]]:
    return [
        rule
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    ]


def test_rule_files_pass_promtool_check(promtool: str) -> None:
    assert RULE_FILES
    result = _run(promtool, "check", "rules", *RULE_FILES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_scrape_config_passes_promtool_check(promtool: str) -> None:
    result = _run(promtool, "check", "config", PROMETHEUS / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("test_file", RULE_TESTS, ids=lambda p: p.name)
def test_rule_unit_tests_pass(promtool: str, test_file: Path) -> None:
    result = _run(promtool, "test", "rules", test_file)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test() -> None:
    alerts = {rule["alert"] for rule in _rules() if "alert" in rule}
    tested = {
        case["alertname"]
        for path in RULE_TESTS
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert alerts - tested == set(), "alerts never shown firing in a rule test"


def test_the_requested_alerts_exist() -> None:
    alerts = {rule["alert"] for rule in _rules() if "alert" in rule}
    assert {
        "ConsentPipelineConsumerLagGrowing",
        "ConsentPipelineDLQRateHigh",
        "ConsentPipelineProcessingErrors",
        "ConsentPipelineRevocationLatencySLO",
        "ConsentPipelineNoInput",
        "ConsentPipelineWorkerDown",
        "ConsentPipelinePIICanary",
    } <= alerts


def _github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown file."""
    anchors = set()
    for line in markdown.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


def test_alerts_have_severity_summary_and_runbook() -> None:
    anchors = _github_anchors((DEPLOY / "README.md").read_text())
    for rule in _rules():
        if "alert" not in rule:
            continue
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        page, anchor = rule["annotations"]["runbook"].split("#", 1)
        assert page == "deploy/README.md", rule["alert"]
        assert anchor in anchors, f"{rule['alert']}: no section #{anchor} in deploy/README.md"


def test_rules_read_only_metrics_the_pipeline_registers() -> None:
    known = registered_names() | SCRAPE_SERIES
    recorded = {rule["record"] for rule in _rules() if "record" in rule}
    unknown = {
        (rule.get("alert") or rule.get("record"), name)
        for rule in _rules()
        for name in metric_names(rule["expr"])
        if name not in known | recorded
    }
    assert unknown == set(), "rules read metrics neither the worker nor the collector registers"


def test_prometheusrule_manifest_matches_the_rule_files() -> None:
    result = _run(sys.executable, DEPLOY / "tools" / "prometheusrule.py", "--check")
    assert result.returncode == 0, result.stderr
