"""Write the PrometheusRule of deploy/k8s from deploy/prometheus/rules, the one source.

Run it after changing the rules; `--check` only tells (exit 1) whether the manifest is
out of date, as tests/deploy does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parents[1]
RULES = DEPLOY / "prometheus" / "rules" / "consent-pipeline.rules.yml"
MANIFEST = DEPLOY / "k8s" / "components" / "prometheus-operator" / "prometheusrule.yaml"
HEADER = (
    "# Generated from deploy/prometheus/rules/consent-pipeline.rules.yml by\n"
    "# deploy/tools/prometheusrule.py: edit the rules there, then run that script.\n"
)


class _Dumper(yaml.SafeDumper):
    """Writes multi-line strings (PromQL, descriptions) as literal blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render(rules_path: Path = RULES) -> str:
    """The PrometheusRule manifest holding every group of the rules file."""
    groups = yaml.safe_load(rules_path.read_text())["groups"]
    manifest = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "consent-pipeline"},
        "spec": {"groups": groups},
    }
    return HEADER + yaml.dump(manifest, Dumper=_Dumper, sort_keys=False, width=100)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check, write nothing")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not MANIFEST.exists() or MANIFEST.read_text() != text:
            sys.stderr.write(f"{MANIFEST} is out of date: run {Path(__file__).name}\n")
            return 1
        return 0
    MANIFEST.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
