"""The tools that check deploy/, installed by deploy/tools/install.sh (run by `make test`)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.metric_names import REPO

TOOLS = Path(os.environ.get("DEPLOY_TOOLS_DIR", REPO / ".local" / "tools"))
INSTALL = "deploy/tools/install.sh"


def _which(name: str) -> str:
    """A tool from .local/tools/bin or the PATH; the test fails when it is missing."""
    found = shutil.which(name, path=f"{TOOLS / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    if found is None:
        pytest.fail(f"{name} is not installed: run {INSTALL}")
    return found


@pytest.fixture(scope="session")
def promtool() -> str:
    return _which("promtool")


@pytest.fixture(scope="session")
def compose_config() -> str:
    return _which("compose-config")


@pytest.fixture(scope="session")
def kustomize() -> list[str]:
    """The command that renders a kustomization: `kustomize build`, else `kubectl kustomize`."""
    search = f"{TOOLS / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    found = shutil.which("kustomize", path=search)
    if found:
        return [found, "build"]
    kubectl = shutil.which("kubectl")
    if (
        kubectl
        and subprocess.run([kubectl, "kustomize", "--help"], capture_output=True).returncode == 0
    ):
        return [kubectl, "kustomize"]
    pytest.fail(f"neither kustomize nor kubectl is installed: run {INSTALL}")


@pytest.fixture(scope="session")
def crd_dir() -> Path:
    """prometheus-operator's CRDs (PodMonitor, PrometheusRule)."""
    found = sorted(TOOLS.glob("crds/*/monitoring.coreos.com_podmonitors.yaml"))
    if not found:
        pytest.fail(f"prometheus-operator CRDs are missing: run {INSTALL}")
    return found[-1].parent


@pytest.fixture(scope="session")
def asyncapi_schema() -> Path:
    """The official JSON Schema of AsyncAPI 3.0.0, from @asyncapi/specs."""
    found = sorted(TOOLS.glob("asyncapi-specs/*/schemas/3.0.0-without-$id.json"))
    if not found:
        pytest.fail(f"the AsyncAPI specification schemas are missing: run {INSTALL}")
    return found[-1]
