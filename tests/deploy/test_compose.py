"""deploy/compose: loaded and validated by compose-go (what `docker compose config` runs),
by `docker compose config` itself where that plugin is installed, and checked for the
pipeline's own rules: stable worker ids, one state volume each, real settings only."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.cli import build_parser
from pipeline.settings import Settings
from tests.deploy.metric_names import DEPLOY, REPO

COMPOSE_DIR = DEPLOY / "compose"
COMPOSE = COMPOSE_DIR / "compose.yaml"
WORKER_PORT = "6066"


@pytest.fixture
def env_file(tmp_path: Path) -> Path:
    """The example .env with its blanks filled in."""
    lines = []
    for line in (COMPOSE_DIR / "env.example").read_text().splitlines():
        if line == "PIPELINE_HMAC_KEY=":
            line += "compose-test-hmac-key-0123456789abcdef0123"
        elif line == "GRAFANA_ADMIN_PASSWORD=":
            line += "compose-test"
        lines.append(line)
    path = tmp_path / "test.env"
    path.write_text("\n".join(lines) + "\n")
    return path


def _clean_env() -> dict[str, str]:
    """The environment without variables compose would interpolate from."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PIPELINE_", "KAFKA_", "GRAFANA_", "PROMETHEUS_", "COLLECTOR_"))
    }


def _load(compose_config: str, env_file: Path) -> dict[str, Any]:
    result = subprocess.run(
        [compose_config, "-f", str(COMPOSE), "--env-file", str(env_file)],
        capture_output=True,
        text=True,
        env=_clean_env(),
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    loaded: dict[str, Any] = yaml.safe_load(result.stdout)
    return loaded


def _workers(project: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: spec
        for name, spec in project["services"].items()
        if spec.get("command") == ["worker"]
    }


def test_compose_go_loads_and_validates_the_project(compose_config: str, env_file: Path) -> None:
    project = _load(compose_config, env_file)
    assert {"kafka", "topics", "collector", "producer", "prometheus", "grafana"} <= set(
        project["services"]
    )
    assert len(_workers(project)) >= 2


def test_the_hmac_key_is_required(compose_config: str, tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("GRAFANA_ADMIN_PASSWORD=x\n")
    result = subprocess.run(
        [compose_config, "-f", str(COMPOSE), "--env-file", str(empty)],
        capture_output=True,
        text=True,
        env=_clean_env(),
        timeout=60,
    )
    assert result.returncode != 0
    assert "PIPELINE_HMAC_KEY" in result.stderr


def test_docker_compose_config_accepts_the_project(env_file: Path) -> None:
    docker = shutil.which("docker")
    if (
        docker is None
        or subprocess.run([docker, "compose", "version"], capture_output=True).returncode
    ):
        pytest.skip("the docker compose plugin is not installed here")
    result = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "--env-file", str(env_file), "config", "-q"],
        capture_output=True,
        text=True,
        env=_clean_env(),
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


def test_each_worker_has_a_stable_id_and_its_own_state(compose_config: str, env_file: Path) -> None:
    workers = _workers(_load(compose_config, env_file))
    ids = [spec["environment"]["PIPELINE_WORKER_ID"] for spec in workers.values()]
    assert len(set(ids)) == len(ids)
    data_dirs = {spec["environment"].get("PIPELINE_DATA_DIR") for spec in workers.values()}
    volumes = []
    for spec in workers.values():
        (mount,) = [v for v in spec["volumes"] if v["type"] == "volume"]
        assert mount["target"] == "/var/lib/consent-pipeline"
        volumes.append(mount["source"])
        assert spec["environment"]["PIPELINE_HMAC_KEY"]
    assert len(set(volumes)) == len(volumes), "workers must not share a state volume"
    # The image sets PIPELINE_DATA_DIR to the volume's mount point.
    assert data_dirs == {None}
    assert "PIPELINE_DATA_DIR=/var/lib/consent-pipeline" in _dockerfile_env()


def test_prometheus_scrapes_every_worker(compose_config: str, env_file: Path) -> None:
    workers = _workers(_load(compose_config, env_file))
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "consent-pipeline-worker"]
    targets = {t for c in job["static_configs"] for t in c["targets"]}
    assert targets == {f"{name}:{WORKER_PORT}" for name in workers}
    assert "PIPELINE_WEB_HOST=0.0.0.0" in _dockerfile_env()


def test_services_set_only_real_settings(compose_config: str, env_file: Path) -> None:
    project = _load(compose_config, env_file)
    known = {f"PIPELINE_{name.upper()}" for name in Settings.model_fields}
    for name, spec in project["services"].items():
        if spec.get("image", "").startswith("consent-pipeline"):
            unknown = {k for k in spec["environment"] if k.startswith("PIPELINE_")} - known
            assert unknown == set(), f"{name} sets unknown settings"
            assert spec["environment"]["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
            assert spec["build"]["dockerfile"] == "deploy/docker/Dockerfile"
            assert Path(spec["build"]["context"]) == REPO


def test_pipeline_commands_parse(compose_config: str, env_file: Path) -> None:
    """Every pipeline service runs a command the real `consent-pipeline` parser accepts."""
    for name, spec in _load(compose_config, env_file)["services"].items():
        if spec.get("image", "").startswith("consent-pipeline"):
            args = build_parser().parse_args(spec["command"])
            assert callable(args.func), name


def test_grafana_home_dashboard_exists(compose_config: str, env_file: Path) -> None:
    grafana = _load(compose_config, env_file)["services"]["grafana"]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    mounts = [v for v in grafana["volumes"] if home.startswith(v["target"] + "/")]
    mount = max(mounts, key=lambda v: len(v["target"]))
    assert mount["type"] == "bind"
    assert (Path(mount["source"]) / Path(home).relative_to(mount["target"])).is_file()


def _dockerfile_env() -> str:
    return " ".join((DEPLOY / "docker" / "Dockerfile").read_text().split())
