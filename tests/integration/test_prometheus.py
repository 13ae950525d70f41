"""A real Prometheus server scrapes a running worker, evaluates the pipeline's rules and
answers the dashboards' queries; the worker exports every metric those read."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from pipeline import catalogue
from pipeline.ingest.metrics import CollectorMetrics
from pipeline.settings import Settings
from schemas import codec
from tests.deploy.metric_names import (
    RULE_FILES,
    SCRAPE_SERIES,
    dashboard_exprs,
    exposed_names,
    grafana_to_promql,
    metric_names,
)
from tests.integration.conftest import WorkerProcess, free_port
from tests.integration.kafka_io import produce_sync

pytestmark = pytest.mark.integration

N_EVENTS = 40
JOB = "consent-pipeline-worker"


def _get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body: bytes = response.read()
        return body


class PrometheusServer:
    """Debian's `prometheus` binary on a free loopback port, with its data in a temp folder."""

    def __init__(self, config: dict[str, Any], folder: Path) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("prometheus is not installed: run deploy/tools/install.sh")
        folder.mkdir(parents=True, exist_ok=True)
        config_path = folder / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log_path = folder / "prometheus.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address={self.url.removeprefix('http://')}",
                "--log.level=warn",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited:\n{self.log_path.read_text()}")
            try:
                _get(f"{self.url}/-/ready", timeout=1.0)
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)
        raise AssertionError(f"prometheus not ready:\n{self.log_path.read_text()}")

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        reply = json.loads(_get(f"{self.url}/api/v1/{path}?{query}"))
        assert reply["status"] == "success", reply
        return reply["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        data = self.api("query", query=promql)
        result: list[dict[str, Any]] = data["result"]
        return result

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def _eventually(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def _event(i: int) -> dict[str, object]:
    return {
        "event_id": f"prom-{i}",
        "event_name": "page_visit",
        "event_time": int(time.time()) - 5,
        "action_source": "web",
        "advertiser_id": "adv-prom",
        "user_id": f"prom-user-{i % 7}",
    }


@pytest.fixture
def worker(
    pipeline_settings: Settings, start_worker: Callable[[Settings], WorkerProcess]
) -> WorkerProcess:
    process = start_worker(pipeline_settings)
    process.wait_ready()
    return process


@pytest.fixture
def prometheus(worker: WorkerProcess, tmp_path: Path) -> Iterator[PrometheusServer]:
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in RULE_FILES],
        "scrape_configs": [
            {
                "job_name": JOB,
                "static_configs": [{"targets": [f"127.0.0.1:{worker.settings.web_port}"]}],
            }
        ],
    }
    server = PrometheusServer(config, tmp_path / "prometheus")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def test_prometheus_reads_the_pipeline_metrics_of_a_running_worker(
    worker: WorkerProcess, prometheus: PrometheusServer
) -> None:
    settings = worker.settings
    produce_sync(
        settings.kafka_bootstrap_servers,
        (
            (settings.topic(catalogue.RAW_TAG), str(e["user_id"]).encode(), codec.dumps(e))
            for e in map(_event, range(N_EVENTS))
        ),
    )

    def events_in() -> float:
        result = prometheus.query(f'sum(pipeline_events_in_total{{job="{JOB}", source="tag"}})')
        return float(result[0]["value"][1]) if result else 0.0

    assert _eventually(lambda: events_in() >= N_EVENTS, 60, "inputs in Prometheus")
    assert events_in() == N_EVENTS

    (target,) = prometheus.api("targets")["activeTargets"]
    assert (target["labels"]["job"], target["health"]) == (JOB, "up")

    decided = prometheus.query(f'sum by (purpose) (pipeline_decisions_total{{job="{JOB}"}})')
    assert {r["metric"]["purpose"] for r in decided} == {
        "personalization",
        "ads",
        "measurement",
        "partner_sharing",
    }
    assert all(float(r["value"][1]) == N_EVENTS for r in decided)

    (table_size,) = prometheus.query(f'pipeline_consent_table_entries{{job="{JOB}"}}')
    assert float(table_size["value"][1]) >= 0


def test_prometheus_evaluates_the_rules_and_dashboard_queries(
    prometheus: PrometheusServer,
) -> None:
    def groups_evaluated() -> list[dict[str, Any]]:
        groups: list[dict[str, Any]] = prometheus.api("rules")["groups"]
        done = all(g["lastEvaluation"] > "0001-01-01T00:00:00Z" for g in groups)
        return groups if groups and done else []

    groups = _eventually(groups_evaluated, 30, "the rule groups to be evaluated")
    assert {g["name"] for g in groups} == {
        "consent-pipeline.recording",
        "consent-pipeline.alerts",
        "consent-pipeline.collector",
    }
    unhealthy = [
        (rule["name"], rule.get("lastError"))
        for group in groups
        for rule in group["rules"]
        if rule["health"] != "ok"
    ]
    assert unhealthy == []
    # A healthy worker that is being scraped: neither down nor absent.
    firing = {
        alert["labels"]["alertname"]
        for alert in prometheus.api("alerts")["alerts"]
        if alert["state"] == "firing"
    }
    assert {"ConsentPipelineWorkerDown", "ConsentPipelineWorkersAbsent"}.isdisjoint(firing)

    for where, expr in dashboard_exprs():
        try:
            prometheus.query(grafana_to_promql(expr))
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{where}: {exc.read().decode()}") from exc


def test_dashboards_and_rules_read_only_metrics_the_worker_and_the_collector_export(
    worker: WorkerProcess,
) -> None:
    url = f"http://127.0.0.1:{worker.settings.web_port}/metrics"

    def scrape() -> str:
        try:
            return _get(url).decode()
        except (urllib.error.URLError, ConnectionError):
            return ""  # the web server may start a moment after the partitions are assigned

    exported = exposed_names(_eventually(scrape, 30, "the worker's /metrics"))
    assert "pipeline_events_in_total" in exported
    # What the collector's /metrics serves: its registry, before any call.
    exported |= exposed_names(
        generate_latest(CollectorMetrics(CollectorRegistry()).registry).decode()
    )
    assert "pipeline_collector_requests_total" in exported
    recorded = set()
    read_by_rules = set()
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                recorded.add(rule.get("record"))
                read_by_rules |= metric_names(rule["expr"])
    read_by_dashboards = {name for _, expr in dashboard_exprs() for name in metric_names(expr)}
    assert read_by_dashboards - exported == set()
    assert read_by_rules - exported - recorded - SCRAPE_SERIES == set()
