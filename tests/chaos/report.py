"""The suite's report: one entry per scenario with `passed`, as markdown and as JSON."""

from __future__ import annotations

import json
import platform
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline import catalogue
from tests.chaos.faults import REPO
from tests.chaos.scenarios import ScenarioResult

MAX_FAULT_LINES = 40


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _commit() -> str | None:
    """The commit the suite ran at, `+dirty` when the work tree had changes."""
    commit = _git("rev-parse", "--short", "HEAD")
    if commit is None:
        return None
    status = _git("status", "--porcelain", "--untracked-files=no")
    return f"{commit}+dirty" if status else commit


def report_data(results: Sequence[ScenarioResult], meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": _commit(),
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        **meta,
        "passed": bool(results) and all(r.passed for r in results),
        "scenarios": [r.to_dict() for r in results],
    }


def scenario_text(result: ScenarioResult) -> str:
    """A scenario as plain text: load, faults, invariants (what the CLI prints)."""
    verdict = "PASSED" if result.passed else "FAILED"
    lines = [f"== {result.name}: {verdict} ({result.duration_s:.0f}s) - {result.title}"]
    load = result.load
    lines.append(
        f"   load: {load.get('raw_records', 0):,} raw records from {load.get('users', 0):,} users"
        f" at {result.size.rate or 'max'}/s; "
        + ", ".join(f"{k} {v:,}" for k, v in sorted(load.get("by_kind", {}).items()))
    )
    lines.append(f"   faults ({len(result.faults)}):")
    lines.extend(f"     {entry}" for entry in result.faults[:MAX_FAULT_LINES])
    if len(result.faults) > MAX_FAULT_LINES:
        lines.append(f"     ... {len(result.faults) - MAX_FAULT_LINES} more")
    for invariant in result.invariants:
        mark = "ok  " if invariant.passed else "FAIL"
        counts = ", ".join(f"{k}={v:,}" for k, v in invariant.counts.items())
        lines.append(f"   [{mark}] {invariant.name}: {counts}")
        lines.extend(f"          - {example}" for example in invariant.examples)
    lines.extend(f"   note: {note}" for note in result.notes)
    if result.error:
        lines.append(f"   error: {result.error}")
    return "\n".join(lines)


def markdown(data: dict[str, Any]) -> str:
    contender = data.get("contender")
    findings = contender is not None and contender != "pipeline"
    title = "# Fault-injection report"
    if findings:
        title += f": the `{contender}` contender"
    elif contender:
        title += ": the contenders' scenario on the pipeline"
    out = [
        title,
        "",
        f"Generated {data['generated_at']} at commit `{data.get('commit') or 'unknown'}` by "
        f"`{data.get('command', 'python -m tests.chaos')}` "
        f"({data.get('variant', 'full')} sizes, seed {data.get('seed')}), "
        f"on {data['machine']['platform']}, Python {data['machine']['python']}.",
        "",
        f"**Overall: {'PASSED' if data['passed'] else 'FAILED'}.** Every input offset is "
        f"checked against `{catalogue.AUDIT.name}` and `{catalogue.DLQ.name}` read with "
        "`read_committed`; see `tests/chaos/ledger.py` for each invariant.",
        "",
        *(
            [
                f"The benchmark contender `{contender}` runs in place of the pipeline's workers "
                "and is held to the invariants that apply to what it does (not the hops "
                "between stages, customer lists or metrics); a `no` is a finding about the "
                "contender, not a failure of the suite.",
                "",
            ]
            if findings
            else []
        ),
        "| scenario | passed | raw records | faults | invariants | duration |",
        "|---|---|---:|---:|---|---:|",
    ]
    for s in data["scenarios"]:
        invariants = s["invariants"]
        held = sum(1 for i in invariants.values() if i["passed"])
        out.append(
            f"| {s['name']} | {'yes' if s['passed'] else '**no**'} | "
            f"{s['load'].get('raw_records', 0):,} | {len(s['faults'])} | "
            f"{held}/{len(invariants)} held | {s['duration_s']:.0f} s |"
        )
    for s in data["scenarios"]:
        out += ["", f"## {s['name']}: {'passed' if s['passed'] else 'FAILED'}", "", s["title"], ""]
        load = s["load"]
        out.append(
            f"- **Load**: {load.get('raw_records', 0):,} raw records, {load.get('users', 0):,} "
            f"synthetic users, {s['size']['rate'] or 'max'} records/s, "
            f"{load.get('partitions')} partitions, `{load.get('store')}` store; acknowledged "
            f"{load.get('acknowledged_records', 0):,} records (resent after failures: "
            f"{load.get('delivery_failures_resent', 0):,})."
        )
        kinds = ", ".join(f"{k} {v:,}" for k, v in load.get("by_kind", {}).items())
        out.append(f"- **Records by kind**: {kinds}.")
        out.append(f"- **Faults** ({len(s['faults'])}):")
        out.extend(f"  - `{entry}`" for entry in s["faults"][:MAX_FAULT_LINES])
        if len(s["faults"]) > MAX_FAULT_LINES:
            out.append(f"  - ... {len(s['faults']) - MAX_FAULT_LINES} more")
        out += ["", "| invariant | held | counts |", "|---|---|---|"]
        for name, invariant in s["invariants"].items():
            counts = ", ".join(f"{k} {v:,}" for k, v in invariant["counts"].items())
            examples = "; ".join(invariant["examples"])
            verdict = "yes" if invariant["passed"] else f"**no** ({examples})"
            out.append(f"| `{name}` | {verdict} | {counts} |")
        for note in s["notes"]:
            out.append(f"\n- {note}")
        if s.get("error"):
            out.append(f"\n**Error**: `{s['error']}`")
    return "\n".join(out) + "\n"


def write_report(data: dict[str, Any], directory: Path) -> tuple[Path, Path]:
    """Write `report.json` and `report.md` into `directory`; returns their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / "report.json"
    md_path = directory / "report.md"
    json_path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    md_path.write_text(markdown(data))
    return md_path, json_path
