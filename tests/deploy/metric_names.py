"""Metric names: those a worker exports, and those a PromQL expression reads."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from pipeline.ingest.metrics import CollectorMetrics
from pipeline.runtime.metrics import Metrics

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
RULE_FILES = sorted((DEPLOY / "prometheus" / "rules").glob("*.rules.yml"))

# Series Prometheus itself adds to every scrape; rules may read them, dashboards do not.
SCRAPE_SERIES = frozenset({"up"})

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
}
_STRINGS = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_LABEL_LISTS = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", re.IGNORECASE
)
_MODIFIERS = re.compile(r"\b(?:offset)\s+-?[0-9a-z$_]+|@\s*[0-9.a-z()_$]+", re.IGNORECASE)
_TOKENS = re.compile(
    r"(?P<number>0x[0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+)"
    r"|(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)"
)
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "inf", "nan"})


def series_names(family: str, kind: str) -> set[str]:
    """The series names a metric family of `kind` exposes (counters gain `_total`)."""
    base = family.removesuffix("_total") if kind == "counter" else family
    return {base + suffix for suffix in _SUFFIXES.get(kind, ("",))}


def registered_names() -> set[str]:
    """Every series name the worker's `Metrics` and the collector's `CollectorMetrics`
    register, samples or not."""
    registry = CollectorRegistry()
    Metrics(registry)
    CollectorMetrics(registry)
    names: set[str] = set()
    for family in registry.collect():
        names |= series_names(family.name, family.type)
    return names


def exposed_names(text: str) -> set[str]:
    """Every series name a Prometheus text exposition declares (`# TYPE` lines)."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(maxsplit=3)
            names |= series_names(family, kind.strip())
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects.

    A lexical reading, enough for the expressions of this repository: strings, label
    matchers, ranges, label lists and modifiers are dropped, then every identifier that is
    not a keyword, a function or an aggregation is a metric name.
    """
    text = _STRINGS.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _LABEL_LISTS.sub(" ", text)
    text = _MODIFIERS.sub(" ", text)
    names: set[str] = set()
    for token in _TOKENS.finditer(text):
        name = token.group("name")
        if name is None or name.lower() in _KEYWORDS:
            continue
        if text[token.end() :].lstrip().startswith("("):
            continue
        names.add(name)
    return names


def dashboard(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel of a dashboard, those inside collapsed rows included."""
    for panel in board.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def dashboard_exprs(paths: Iterable[Path] = DASHBOARDS) -> list[tuple[str, str]]:
    """(where, expr) of every query target of every panel of the dashboards."""
    found = []
    for path in paths:
        for panel in panels(dashboard(path)):
            for target in panel.get("targets", []):
                if target.get("expr"):
                    found.append((f"{path.name}: {panel['title']}", target["expr"]))
    return found


def grafana_to_promql(expr: str) -> str:
    """A dashboard expression with Grafana's variables replaced, for Prometheus to run."""
    text = expr.replace("$__rate_interval", "1m").replace("$__interval", "15s")
    return re.sub(r"\$\{?(job|instance)\}?", ".*", text)
