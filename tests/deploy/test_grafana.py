"""deploy/grafana: dashboards that load, query real metrics, and provisioning that finds them."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.metric_names import (
    DASHBOARDS,
    DEPLOY,
    dashboard,
    dashboard_exprs,
    grafana_to_promql,
    metric_names,
    panels,
    registered_names,
)

GRAFANA = DEPLOY / "grafana"
COMPOSE = DEPLOY / "compose" / "compose.yaml"


def _compose_volume(service: str, target_prefix: str) -> tuple[Path, str]:
    """The (host path, container path) of the compose volume of `service` under a prefix."""
    spec = yaml.safe_load(COMPOSE.read_text())["services"][service]
    for volume in spec["volumes"]:
        source, target = volume.split(":")[:2]
        if target.startswith(target_prefix):
            return (COMPOSE.parent / source).resolve(), target
    raise AssertionError(f"{service} mounts nothing under {target_prefix}")


def test_there_are_dashboards() -> None:
    assert len(DASHBOARDS) >= 2


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_is_well_formed(path: Path) -> None:
    board = dashboard(path)
    assert 0 < len(board["uid"]) <= 40
    assert board["title"].startswith("Consent pipeline / ")
    assert isinstance(board["schemaVersion"], int)
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"] for v in board["templating"]["list"]}
    assert {"datasource", "job", "instance"} <= variables
    for panel in panels(board):
        pos = panel["gridPos"]
        assert pos["x"] >= 0, panel["title"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel.get("description"), f"{panel['title']}: say what the panel shows"
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
            # Every query follows the dashboard's job and worker selection.
            assert '$job"' in target["expr"], panel["title"]
            assert '$instance"' in target["expr"], panel["title"]


def test_dashboards_have_distinct_uids() -> None:
    uids = [dashboard(p)["uid"] for p in DASHBOARDS]
    assert len(uids) == len(set(uids))


def test_dashboards_cover_what_operators_watch() -> None:
    queried = {name for _, expr in dashboard_exprs() for name in metric_names(expr)}
    assert {
        "pipeline_events_in_total",
        "pipeline_events_out_total",
        "pipeline_decisions_total",
        "pipeline_decision_reasons_total",
        "pipeline_dlq_total",
        "pipeline_processing_seconds_bucket",
        "pipeline_event_age_seconds_bucket",
        "pipeline_consumer_lag_messages",
        "pipeline_consent_table_entries",
        "pipeline_revocation_latency_seconds_bucket",
    } <= queried


def test_dashboards_query_only_metrics_the_pipeline_registers() -> None:
    known = registered_names()
    unknown = {
        (where, name)
        for where, expr in dashboard_exprs()
        for name in metric_names(expr)
        if name not in known
    }
    assert unknown == set(), "panels query metrics neither the worker nor the collector registers"


def test_dashboard_queries_parse_as_promql(promtool: str, tmp_path: Path) -> None:
    """promtool parses every panel query (Grafana's variables filled in)."""
    rules = {
        "groups": [
            {
                "name": "dashboards",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": grafana_to_promql(expr)}
                    for i, (_, expr) in enumerate(dashboard_exprs())
                ],
            }
        ]
    }
    path = tmp_path / "dashboards.rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _provisioning(kind: str) -> dict[str, Any]:
    files = sorted((GRAFANA / "provisioning" / kind).glob("*.yaml"))
    assert len(files) == 1
    loaded: dict[str, Any] = yaml.safe_load(files[0].read_text())
    return loaded


def test_provisioned_datasource_is_the_compose_prometheus() -> None:
    (source,) = _provisioning("datasources")["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    for path in DASHBOARDS:
        (variable,) = [
            v for v in dashboard(path)["templating"]["list"] if v["name"] == "datasource"
        ]
        assert variable["current"]["value"] == source["uid"]


def test_dashboard_provider_reads_the_folder_compose_mounts() -> None:
    (provider,) = _provisioning("dashboards")["providers"]
    host, target = _compose_volume("grafana", provider["options"]["path"])
    assert target == provider["options"]["path"]
    assert host == GRAFANA / "dashboards"
    provisioning_host, _ = _compose_volume("grafana", "/etc/grafana/provisioning")
    assert provisioning_host == GRAFANA / "provisioning"
