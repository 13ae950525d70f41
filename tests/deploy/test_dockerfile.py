"""deploy/docker: the image the compose file and the manifests run."""

from __future__ import annotations

import json
import re

import yaml

from tests.deploy.metric_names import DEPLOY, REPO

DOCKERFILE = DEPLOY / "docker" / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def test_copied_sources_exist_and_pass_the_dockerignore() -> None:
    allowed = {
        line[1:].rstrip("/")
        for line in (DEPLOY / "docker" / "Dockerfile.dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    for keyword, rest in _instructions():
        if keyword == "COPY" and "--from" not in rest:
            *sources, _ = rest.split()
            for source in sources:
                assert (REPO / source).exists(), source
                assert source.rstrip("/") in allowed, f"{source} is excluded from the context"


def test_runs_the_console_script_as_the_kubernetes_user() -> None:
    instructions = dict(_instructions())
    assert json.loads(instructions["ENTRYPOINT"]) == ["consent-pipeline"]
    uid = instructions["USER"].split(":")[0]
    workers = yaml.safe_load((DEPLOY / "k8s" / "base" / "worker-statefulset.yaml").read_text())
    assert str(workers["spec"]["template"]["spec"]["securityContext"]["runAsUser"]) == uid
    assert "6066" in instructions["EXPOSE"].split()
