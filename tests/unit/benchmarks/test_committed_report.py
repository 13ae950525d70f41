"""The committed benchmark report says what its own numbers say.

`benchmarks/results/results.md` is generated from `results.json`, and the JSON's ratios,
verdicts and core bound are derived from its contenders' numbers; docs/performance.md's
section quotes that run. These tests fail when any of them is edited by hand, or left
behind when `make bench` writes a new report.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from benchmarks import report
from schemas import codec

ROOT = Path(__file__).resolve().parents[3]
RESULTS = ROOT / "benchmarks" / "results"
CONTENDERS = ("ceiling", "ceiling_fair", "faust", "faust_batched", "quix", "pipeline")
"""The contenders every report names, each with the same five numbers."""
FIVE_NUMBERS = ("events_per_s", "cpu_us_per_event", "p50_ms", "p99_ms", "rss_mb")


@pytest.fixture(scope="module")
def committed() -> dict[str, Any]:
    results: dict[str, Any] = codec.loads((RESULTS / "results.json").read_bytes())
    return results


def test_the_committed_markdown_is_what_the_report_makes_of_the_committed_json(
    committed: dict[str, Any],
) -> None:
    assert (RESULTS / "results.md").read_text() == report.markdown(committed)


def test_the_committed_ratios_verdicts_and_bound_follow_from_its_numbers(
    committed: dict[str, Any],
) -> None:
    assert committed["ratios"] == report.ratios(committed["contenders"])
    assert committed["targets"] == report.targets(committed)
    assert committed["core_bound"] == report.core_bound(committed)


def test_the_committed_report_names_every_contender_with_its_five_numbers(
    committed: dict[str, Any],
) -> None:
    contenders = committed["contenders"]
    for name in CONTENDERS:
        assert name in contenders, name
        assert {key: contenders[name][key] for key in FIVE_NUMBERS} == report.summary(
            contenders[name]
        )
        assert contenders[name]["events_per_s"] > 0, name
    assert committed["machine"]["git"]["uncommitted_changes"] is False


def performance_section() -> str:
    page = (ROOT / "docs" / "performance.md").read_text()
    start = page.index("## The benchmark")
    end = page.find("\n## ", start + 1)
    return page[start:] if end < 0 else page[start:end]


def target_rows(section: str) -> list[tuple[str, str]]:
    """The (value, verdict) cells of the performance page's target table."""
    lines = section.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| target | this run |"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows.append((cells[1], cells[2]))
    return rows


def test_the_readme_quotes_the_committed_run(committed: dict[str, Any]) -> None:
    section = performance_section()
    assert f"({committed['machine']['git']['commit'][:7]})" in section
    for name, contender in committed["contenders"].items():
        assert f"{round(contender['events_per_s']):,}" in section, name
    rows = target_rows(section)
    for target in committed["targets"]:
        number = target["value"].split()[0]
        quoting = [
            verdict
            for value, verdict in rows
            if re.search(rf"(?<![\d.]){re.escape(number)}(?!\d)", value)
        ]
        assert len(quoting) == 1, target["target"]
        assert quoting[0].startswith("met") is target["met"], target["target"]
