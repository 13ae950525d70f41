"""The benchmark's chart (matplotlib, Agg backend), and the command that redraws a report.

`python -m benchmarks.chart benchmarks/results` rewrites results.md and results.png from
results.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

from benchmarks.report import MB, TARGET_P99_MS, TARGET_RSS_MB, count, state_rss_mb, write_report
from schemas import codec


def chart(results: dict[str, Any], path: Path) -> None:
    """Four panels: throughput with each run, latency, peak RSS, CPU per million events."""
    plt.switch_backend("Agg")  # files only, with or without a display
    contenders = results["contenders"]
    names = list(contenders)
    x = list(range(len(names)))
    palette = ["#8c8c8c", "#1b9e77", "#66a61e", "#525252", "#d95f02", "#e6ab02", "#7570b3"]
    colors = (palette * 2)[: len(names)]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    ax = axes[0][0]
    rates = [contenders[n].get("events_per_s") or 0 for n in names]
    ceiling = contenders.get("ceiling_fair", {}).get("events_per_s")
    ax.bar(x, rates, color=colors)
    for i, n in enumerate(names):
        runs = [
            r.get("events_per_s") for r in contenders[n].get("runs", []) if r.get("events_per_s")
        ]
        ax.scatter([i] * len(runs), runs, color="black", s=12, zorder=3)
        share = f"\n{rates[i] / ceiling:.2f}x fair" if ceiling and n != "ceiling_fair" else ""
        ax.annotate(f"{rates[i]:,.0f}{share}", (i, rates[i]), ha="center", va="bottom", fontsize=8)
    if any(rates):
        ax.set_yscale("log")
    ax.set_title(f"events/s, log scale (median of {results['settings']['runs']}; dots: runs)")
    ax = axes[0][1]
    p50 = [contenders[n].get("latency", {}).get("p50_ms") or 0 for n in names]
    p99 = [contenders[n].get("latency", {}).get("p99_ms") or 0 for n in names]
    ax.bar([i - 0.2 for i in x], p50, width=0.4, label="p50", color="#a6cee3")
    ax.bar([i + 0.2 for i in x], p99, width=0.4, label="p99", color="#1f78b4")
    ax.axhline(
        TARGET_P99_MS, color="red", linestyle="--", linewidth=1, label=f"{TARGET_P99_MS} ms p99"
    )
    if any(v > 0 for v in p99):
        ax.set_yscale("log")
    ax.set_title("end-to-end latency at 50% of own max rate (ms)")
    ax.legend(fontsize=8)
    ax = axes[1][0]
    rss = [(contenders[n].get("peak_rss_bytes") or 0) / MB for n in names]
    ax.bar(x, rss, color=colors)
    state = state_rss_mb(results)
    users = results.get("scale", {}).get("initial_load", {}).get("users")
    if state is not None:
        ax.axhline(
            state,
            color="black",
            linestyle=":",
            linewidth=1,
            label=f"one worker, {count(users)} users + links (RocksDB): {state:.0f} MB",
        )
    ax.axhline(TARGET_RSS_MB, color="red", linestyle="--", linewidth=1, label="500 MB target")
    ax.legend(fontsize=8)
    ax.set_title(
        f"peak RSS in the throughput runs ({count(results['workload']['consent_bootstrap'])} "
        "users), MB"
    )
    ax = axes[1][1]
    cpu = [contenders[n].get("cpu_s_per_million") or 0 for n in names]
    ax.bar(x, cpu, color=colors)
    for i, value in enumerate(cpu):
        ax.annotate(f"{value:,.0f}", (i, value), ha="center", va="bottom", fontsize=8)
    ax.set_title("CPU µs per event")
    for row in axes:
        for ax in row:
            ax.set_xticks(x)
            ax.set_xticklabels(names, fontsize=9)
    m = results["machine"]
    fig.suptitle(
        f"{results['run_id']}: {count(results['workload']['raw_records'])} events, "
        f"{m['cores']} cores ({m['cpu']}), load avg {m['loadavg_start']}"
        + (" - QUICK RUN" if results["settings"].get("quick") else ""),
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="benchmarks.chart", description=__doc__)
    parser.add_argument("dir", type=Path, help="folder with results.json")
    args = parser.parse_args(argv)
    results = codec.loads((args.dir / "results.json").read_bytes())
    for path in write_report(results, args.dir, chart):
        sys.stdout.write(f"wrote {path}\n")


if __name__ == "__main__":
    main()
