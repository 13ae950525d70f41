"""deploy/k8s: each overlay rendered by kustomize, every resource validated against the
Kubernetes JSON schemas (kubernetes-validate, offline) or prometheus-operator's CRDs, and
the references between resources checked."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from pipeline.cli import build_parser
from pipeline.settings import Settings
from tests.deploy.metric_names import DEPLOY

K8S = DEPLOY / "k8s"
OVERLAYS = ("dev", "prod")
# The oldest Kubernetes minor these manifests support, and the newest schemas shipped.
KUBERNETES_VERSIONS = ("1.30", kubernetes_validate.utils.latest_version())
WORKER_JOB = "consent-pipeline-worker"
COLLECTOR_JOB = "consent-pipeline-collector"

Resource = dict[str, Any]


@cache
def _render(command: tuple[str, ...], directory: Path) -> tuple[Resource, ...]:
    result = subprocess.run([*command, str(directory)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def resources(kustomize: list[str], overlay: str) -> tuple[Resource, ...]:
    return _render(tuple(kustomize), K8S / "overlays" / overlay)


def _one(resources: tuple[Resource, ...], kind: str, name: str) -> Resource:
    found = [r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}"
    return found[0]


def _by_kind(resources: tuple[Resource, ...], kind: str) -> list[Resource]:
    return [r for r in resources if r["kind"] == kind]


def _strict(schema: Any) -> Any:
    """A CRD schema that rejects unknown fields, as the API server's strict field validation."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    strict = {
        key: {k: _strict(v) for k, v in value.items()} if key == "properties" else _strict(value)
        for key, value in schema.items()
    }
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        strict["additionalProperties"] = False
    return strict


@cache
def _crd_schemas(crd_dir: Path) -> dict[tuple[str, str], Any]:
    schemas = {}
    for path in crd_dir.glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = _strict(version["schema"]["openAPIV3Schema"])
            schemas[(f"{group}/{version['name']}", kind)] = schema
    return schemas


def _pod_specs(resources: tuple[Resource, ...]) -> Iterator[tuple[Resource, Resource]]:
    for resource in resources:
        if resource["kind"] in {"Deployment", "StatefulSet"}:
            yield resource, resource["spec"]["template"]


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_resources_are_valid_kubernetes(
    resources: tuple[Resource, ...], crd_dir: Path, version: str
) -> None:
    crds = _crd_schemas(crd_dir)
    for resource in resources:
        where = f"{resource['kind']} {resource['metadata']['name']}"
        crd = crds.get((resource["apiVersion"], resource["kind"]))
        if crd is not None:
            errors = [e.message for e in jsonschema.Draft7Validator(crd).iter_errors(resource)]
            assert errors == [], where
            continue
        try:
            kubernetes_validate.validate(resource, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{where} (Kubernetes {version}): {exc.message} at {list(exc.path)}")


def test_a_crd_schema_rejects_unknown_fields(crd_dir: Path) -> None:
    schema = _crd_schemas(crd_dir)[("monitoring.coreos.com/v1", "PodMonitor")]
    bad = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {"name": "x"},
        "spec": {"selector": {}, "podMetricsEndpoints": [{"port": "web", "intervall": "1s"}]},
    }
    assert list(jsonschema.Draft7Validator(schema).iter_errors(bad))


def test_the_overlays_hold_every_piece(resources: tuple[Resource, ...]) -> None:
    kinds = {r["kind"] for r in resources}
    assert {
        "StatefulSet",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ConfigMap",
        "PodMonitor",
        "PrometheusRule",
        "Namespace",
    } <= kinds
    namespaces = {r["metadata"].get("namespace") for r in resources if r["kind"] != "Namespace"}
    (namespace,) = _by_kind(resources, "Namespace")
    assert namespaces == {namespace["metadata"]["name"]}


def test_workers_have_stable_ids_state_and_probes(resources: tuple[Resource, ...]) -> None:
    workers = _one(resources, "StatefulSet", "consent-pipeline-worker")
    spec = workers["spec"]
    pod = spec["template"]["spec"]
    (container,) = [c for c in pod["containers"] if c["name"] == "worker"]
    env = {e["name"]: e for e in container["env"]}
    assert env["PIPELINE_WORKER_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["PIPELINE_WEB_HOST"]["value"] == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["web"] == int(env["PIPELINE_WEB_PORT"]["value"])
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "web"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "web"}
    (claim,) = spec["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == env["PIPELINE_DATA_DIR"]["value"]
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]["memory"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert (
        spec["serviceName"] == _one(resources, "Service", spec["serviceName"])["metadata"]["name"]
    )


def test_more_workers_than_partitions_would_idle(resources: tuple[Resource, ...]) -> None:
    (settings,) = _by_kind(resources, "ConfigMap")
    workers = _one(resources, "StatefulSet", "consent-pipeline-worker")
    assert workers["spec"]["replicas"] <= int(settings["data"]["PIPELINE_TOPIC_PARTITIONS"])


def test_settings_are_valid_for_the_worker(
    resources: tuple[Resource, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    (config_map,) = _by_kind(resources, "ConfigMap")
    known = {f"PIPELINE_{name.upper()}" for name in Settings.model_fields}
    assert set(config_map["data"]) - known == {"KAFKA_BOOTSTRAP_SERVERS"}
    for name, value in config_map["data"].items():
        monkeypatch.setenv(name, value)
    settings = Settings(_env_file=None)
    assert settings.store == "rocksdb"


def test_references_resolve(resources: tuple[Resource, ...], overlay: str) -> None:
    names = {(r["kind"], r["metadata"]["name"]) for r in resources}
    for workload, template in _pod_specs(resources):
        pod = template["spec"]
        assert _matches(workload["spec"]["selector"]["matchLabels"], template["metadata"]["labels"])
        assert ("ServiceAccount", pod["serviceAccountName"]) in names
        for container in pod.get("initContainers", []) + pod["containers"]:
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert ("ConfigMap", source["configMapRef"]["name"]) in names
                elif source["secretRef"]["name"] and overlay != "prod":
                    assert ("Secret", source["secretRef"]["name"]) in names


def test_containers_run_commands_the_cli_accepts(resources: tuple[Resource, ...]) -> None:
    for _, template in _pod_specs(resources):
        pod = template["spec"]
        for container in pod.get("initContainers", []) + pod["containers"]:
            assert container["image"].split("/")[-1].startswith("consent-pipeline:")
            args = build_parser().parse_args(container["args"])
            assert callable(args.func), container["name"]


def test_prod_never_ships_the_hmac_key(kustomize: list[str]) -> None:
    prod = _render(tuple(kustomize), K8S / "overlays" / "prod")
    assert _by_kind(prod, "Secret") == []
    dev_secret = _one(
        _render(tuple(kustomize), K8S / "overlays" / "dev"), "Secret", "consent-pipeline-hmac"
    )
    assert len(dev_secret["stringData"]["PIPELINE_HMAC_KEY"]) >= 32


def test_selectors_find_their_pods(resources: tuple[Resource, ...]) -> None:
    pods = {w["metadata"]["name"]: t for w, t in _pod_specs(resources)}

    def selected(selector: dict[str, str]) -> list[Resource]:
        return [t for t in pods.values() if _matches(selector, t["metadata"]["labels"])]

    for service in _by_kind(resources, "Service"):
        (template,) = selected(service["spec"]["selector"])
        ports = {p["name"] for c in template["spec"]["containers"] for p in c["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports
    for kind in ("PodDisruptionBudget", "PodMonitor"):
        for resource in _by_kind(resources, kind):
            assert len(selected(resource["spec"]["selector"]["matchLabels"])) == 1
    for policy in _by_kind(resources, "NetworkPolicy"):
        (template,) = selected(policy["spec"]["podSelector"]["matchLabels"])
        ports = {p["name"] for c in template["spec"]["containers"] for p in c["ports"]}
        for rule in policy["spec"]["ingress"]:
            assert {p["port"] for p in rule["ports"]} <= ports
    for hpa in _by_kind(resources, "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        assert target["name"] in pods
        assert "replicas" not in _one(resources, target["kind"], target["name"])["spec"]


def test_pod_monitors_scrape_the_jobs_the_rules_expect(resources: tuple[Resource, ...]) -> None:
    rules = yaml.safe_dump(_one(resources, "PrometheusRule", "consent-pipeline")["spec"])
    for name, port, job in (
        ("consent-pipeline-worker", "web", WORKER_JOB),
        ("consent-pipeline-collector", "http", COLLECTOR_JOB),
    ):
        (endpoint,) = _one(resources, "PodMonitor", name)["spec"]["podMetricsEndpoints"]
        assert (endpoint["port"], endpoint["path"]) == (port, "/metrics")
        jobs = [r["replacement"] for r in endpoint["relabelings"] if r.get("targetLabel") == "job"]
        assert jobs == [job]
        assert f'job="{job}"' in rules


def test_the_rate_limit_is_shared_by_the_collector_replicas(
    resources: tuple[Resource, ...],
) -> None:
    collector = _one(resources, "Deployment", "consent-pipeline-collector")
    (container,) = collector["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    peers = _one(resources, "Service", env["PIPELINE_COLLECTOR_PEERS"])
    assert peers["spec"]["clusterIP"] == "None", "a headless Service resolves to every pod"
    assert _matches(peers["spec"]["selector"], collector["spec"]["template"]["metadata"]["labels"])
    assert not peers["spec"].get("publishNotReadyAddresses"), "only pods that take calls"
    for name in ("PIPELINE_COLLECTOR_RATE_LIMIT_PER_SECOND", "PIPELINE_COLLECTOR_RATE_LIMIT_BURST"):
        assert name.removeprefix("PIPELINE_").lower() in Settings.model_fields
        assert float(env[name] or 0) > 0
