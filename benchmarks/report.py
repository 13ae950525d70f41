"""The benchmark's report: ratios, targets and verdicts, the JSON and the markdown summary.

`write_report(results, out_dir, draw)` writes `results.json`, `results.md` and, with a
`draw` function (`benchmarks.chart.chart`), `results.png`. No plotting library here, so
the arithmetic can be tested without one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

MB: Final = 1024 * 1024
TARGET_RSS_MB: Final = 500
TARGET_P50_MS: Final = 50
TARGET_P99_MS: Final = 150
TARGET_REVOCATION_P99_MS: Final = 250
LABELS: Final = {
    "ceiling": "ceiling (raw aiokafka loop, trivial filter, one output)",
    "ceiling_fair": "fair ceiling (raw aiokafka, the pipeline's records and bytes, transactions)",
    "faust": "Faust per event (agents, tables; log level and linger tuned)",
    "faust_batched": "Faust with batches (take, send_soon, exactly_once, RocksDB)",
    "quix": "Quix Streams (StreamingDataFrame, RocksDB state)",
    "pipeline": "pipeline (1 worker process)",
    "pipeline-2w": "pipeline, 2 worker processes (one per core)",
}


def summary(contender: dict[str, Any]) -> dict[str, float | None]:
    """The five numbers every contender reports: rate, CPU per event, latency, memory."""
    latency = contender.get("latency") or {}
    cpu = contender.get("cpu_s_per_million")
    rss = contender.get("peak_rss_bytes")
    return {
        "events_per_s": contender.get("events_per_s"),
        "cpu_us_per_event": None if cpu is None else round(cpu, 1),
        "p50_ms": _rounded(latency.get("p50_ms")),
        "p99_ms": _rounded(latency.get("p99_ms")),
        "rss_mb": None if not rss else round(rss / MB, 1),
    }


def _rounded(value: Any) -> float | None:
    return round(value, 1) if isinstance(value, int | float) else None


def ratios(contenders: dict[str, Any]) -> dict[str, float | None]:
    """The target ratios, from the same run's median rates (and CPU per event)."""

    def rate(name: str) -> float | None:
        value = contenders.get(name, {}).get("events_per_s")
        return value if isinstance(value, int | float) and value > 0 else None

    out: dict[str, float | None] = {}
    for pipeline in ("pipeline", "pipeline-2w"):
        for other in ("ceiling_fair", "ceiling", "quix", "faust_batched", "faust"):
            a, b = rate(pipeline), rate(other)
            out[f"{pipeline}/{other}"] = None if a is None or b is None else round(a / b, 3)
    mine = contenders.get("pipeline", {}).get("cpu_s_per_million")
    fair = contenders.get("ceiling_fair", {}).get("cpu_s_per_million")
    out["cpu pipeline/ceiling_fair"] = round(mine / fair, 3) if mine and fair else None
    return out


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The performance targets for the single-process pipeline, each with its value and verdict."""
    r = results["ratios"]
    pipeline = results["contenders"].get("pipeline", {})
    rows: list[dict[str, Any]] = []

    def row(text: str, value: float | None, shown: str, met: bool | None) -> None:
        rows.append({"target": text, "value": None if value is None else shown, "met": met})

    def ratio_row(key: str, goal: float, text: str, *, at_most: bool = False) -> None:
        value = r.get(key)
        met = None if value is None else (value <= goal if at_most else value >= goal)
        row(text, value, f"{value:.2f}x" if value is not None else "-", met)

    ratio_row("pipeline/ceiling_fair", 0.5, "pipeline >= 0.5 x fair ceiling")
    ratio_row("pipeline/quix", 3.0, "pipeline >= 3 x Quix Streams")
    ratio_row("pipeline/faust_batched", 3.0, "pipeline >= 3 x Faust with batches")
    ratio_row("cpu pipeline/ceiling_fair", 2.0, "CPU per event <= 2 x fair ceiling's", at_most=True)
    latency = pipeline.get("latency", {})
    for key, goal in (("p50_ms", TARGET_P50_MS), ("p99_ms", TARGET_P99_MS)):
        value = latency.get(key)
        row(
            f"{key[:3]} end to end <= {goal} ms at 50% of its own max rate",
            value,
            f"{value:.0f} ms" if value is not None else "-",
            None if value is None else value <= goal,
        )
    revocation = (results.get("revocation_latency") or {}).get("p99_ms")
    row(
        f"revocation p99 < {TARGET_REVOCATION_P99_MS} ms",
        revocation,
        f"{revocation:.0f} ms" if revocation is not None else "-",
        None if revocation is None else revocation < TARGET_REVOCATION_P99_MS,
    )
    rss = state_rss_mb(results)
    load = results.get("scale", {}).get("initial_load", {})
    users, links = load.get("users"), load.get("links")
    row(
        f"RSS < {TARGET_RSS_MB} MB with {count(users) if users else '1M'} users' consent and "
        f"{count(links) if links else '3M'} identity links",
        rss,
        f"{rss:.0f} MB" if rss is not None else "-",
        None if rss is None else rss < TARGET_RSS_MB,
    )
    return rows


def state_rss_mb(results: dict[str, Any]) -> float | None:
    """Peak RSS of one worker holding all of the scale phase's state in the default RocksDB
    store: the largest of its restarts and of its run deciding events with that state."""
    scale = results.get("scale") or {}
    restarts = scale.get("restarts", [])
    peaks = [r.get("peak_rss_bytes") for r in restarts if r.get("store") == "rocksdb"]
    peaks.append((scale.get("throughput") or {}).get("peak_rss_bytes"))
    values = [p for p in peaks if isinstance(p, int | float) and p > 0]
    return max(values) / MB if values else None


def count(n: int | float | None) -> str:
    if n is None:
        return "-"
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{int(n // 1_000_000)}M"
    if n >= 1000 and n % 1000 == 0:
        return f"{int(n // 1000)}k"
    return f"{int(n):,}"


def _num(value: Any, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def _verdict(met: bool | None) -> str:
    return {True: "met", False: "**not met**", None: "not measured"}[met]


def markdown(results: dict[str, Any]) -> str:
    """The human-readable report."""
    s = results["settings"]
    w = results["workload"]
    m = results["machine"]
    contenders = results["contenders"]
    lines = [
        "# Benchmark results",
        "",
        f"Run `{results['run_id']}` on {results['started_at']}, "
        f"{results['duration_s']:.0f} s in all"
        + (
            " (**quick run**: small input, not comparable with a full run)."
            if s.get("quick")
            else "."
        ),
        f"Input: {count(w['raw_records'])} raw records from the producer's realistic mix "
        f"(mean {w['mean_raw_bytes']:.0f} bytes of JSON), {s['partitions']} partitions, "
        f"consent state of {count(w['consent_bootstrap'])} users loaded first "
        f"(plus {count(w['consent_records'] - w['consent_bootstrap'])} churn records).",
        f"Machine: {m['cpu']} x {m['cores']} cores, {m['memory_gb']:.0f} GiB, "
        f"Linux {m['kernel']}, Python {m['python']}, Apache Kafka {m['kafka']} (one local broker "
        f"on the same machine); load average {m['loadavg_start']} at the start, "
        f"{m.get('loadavg_end', '-')} at the end.",
        "",
        "| contender | events/s (median of its runs) | runs | vs fair ceiling | "
        "p50 / p99 latency at 50% load | peak RSS | CPU µs per event |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    ceiling = contenders.get("ceiling_fair", {}).get("events_per_s")
    for name, c in contenders.items():
        rate = c.get("events_per_s")
        runs = ", ".join(_num(r.get("events_per_s")) for r in c.get("runs", []))
        vs = f"{rate / ceiling:.2f}x" if rate and ceiling else "-"
        lat = c.get("latency", {})
        latency = f"{_num(lat.get('p50_ms'))} / {_num(lat.get('p99_ms'))} ms" if lat else "-"
        if fell_behind(lat):
            latency += " (fell behind)"
        rss = c.get("peak_rss_bytes")
        lines.append(
            f"| {LABELS.get(name, name)} | {_num(rate)} | {runs} | {vs} | {latency} | "
            f"{_num(rss / MB if rss else None)} MB | {_num(c.get('cpu_s_per_million'), 1)} |"
        )
    lines += ["", "| target | this run | verdict |", "|---|---:|---|"]
    for row in results["targets"]:
        lines.append(f"| {row['target']} | {row['value'] or '-'} | {_verdict(row['met'])} |")
    lines += _ratio_lines(results)
    if any(fell_behind(c.get("latency", {})) for c in contenders.values()):
        lines += [
            "",
            "(fell behind): during its latency phase the contender consumed less than 95% of "
            "what the paced producer sent at half its measured maximum (`sent_rate` and "
            "`consumed_rate` in the JSON), so its latency grew through the phase.",
        ]
    lines += _core_lines(results) + _revocation_lines(results) + _scale_lines(results)
    notes = [c["note"] for c in contenders.values() if c.get("note")]
    notes += results.get("notes", [])
    if notes:
        lines += ["", "Notes:", ""] + [f"- {note}" for note in notes]
    lines += [
        "",
        "Method, and how to reproduce: `benchmarks/README.md` (`make bench`). "
        "Raw numbers: `results.json`; chart: `results.png`.",
        "",
    ]
    return "\n".join(lines)


def fell_behind(latency: dict[str, Any]) -> bool:
    """Whether a contender consumed less than 95% of what the paced producer sent."""
    sent, consumed = latency.get("sent_rate"), latency.get("consumed_rate")
    return bool(sent and consumed is not None and consumed < 0.95 * sent)


def _ratio_lines(results: dict[str, Any]) -> list[str]:
    r = results["ratios"]
    cells = [f"{k} {v:.2f}x" for k, v in r.items() if v is not None]
    return ["", "Ratios from this run: " + (", ".join(cells) if cells else "-") + "."]


def core_bound(results: dict[str, Any]) -> dict[str, float | None]:
    """What the core phase's CPU per event implies for the targets it bounds: its multiple
    of the fair ceiling's CPU per event, and the best pipeline/ceiling_fair and
    pipeline/quix ratios a worker spending only that could reach on one core."""
    core = (results.get("core") or {}).get("cpu_us_per_event")
    contenders = results["contenders"]
    fair_cpu = contenders.get("ceiling_fair", {}).get("cpu_s_per_million")
    fair_rate = contenders.get("ceiling_fair", {}).get("events_per_s")
    quix_rate = contenders.get("quix", {}).get("events_per_s")
    if not core:
        return {}
    best_rate = 1e6 / core
    return {
        "core_cpu_us_per_event": core,
        "best_events_per_s": round(best_rate),
        "core/ceiling_fair cpu": round(core / fair_cpu, 3) if fair_cpu else None,
        "best pipeline/ceiling_fair": round(best_rate / fair_rate, 3) if fair_rate else None,
        "best pipeline/quix": round(best_rate / quix_rate, 3) if quix_rate else None,
    }


def _core_lines(results: dict[str, Any]) -> list[str]:
    core = results.get("core")
    bound = results.get("core_bound") or {}
    if not core or not bound:
        return []
    return [
        "",
        "## The decision alone",
        "",
        f"The decision every contender makes (decode, match keys, policy, route, audit, outputs "
        f"encoded), run by itself without Kafka over {count(core['events'])} events of the mix "
        f"({count(core['users'])} users' consent and links in dicts): "
        f"{_num(core['cpu_us_per_event'], 1)} CPU µs per event, "
        f"{_num(bound.get('core/ceiling_fair cpu'), 2)}x the fair ceiling's CPU per event. "
        "A worker making this decision spends at least that: on one core it could decide at most "
        f"{_num(bound.get('best_events_per_s'))} events/s, "
        f"{_num(bound.get('best pipeline/ceiling_fair'), 2)}x the fair ceiling and "
        f"{_num(bound.get('best pipeline/quix'), 2)}x Quix Streams, with nothing else to do.",
    ]


def _revocation_lines(results: dict[str, Any]) -> list[str]:
    rev = results.get("revocation_latency")
    if not rev:
        return []
    return [
        "",
        "## Revocation latency",
        "",
        f"Pipeline worker, live traffic at 50% load: {rev.get('count', 0)} revocations took "
        f"effect with p50 {_num(rev.get('p50_ms'), 1)} ms, p90 {_num(rev.get('p90_ms'), 1)} ms, "
        f"p99 {_num(rev.get('p99_ms'), 1)} ms (from Kafka's acknowledgement of the revocation to "
        "it governing decisions: `pipeline_revocation_latency_seconds`, quantiles interpolated in "
        "its buckets).",
        "",
        "| at most | " + " | ".join(_bucket_label(le) for le, _ in rev.get("buckets", [])) + " |",
        "|---|" + "---:|" * len(rev.get("buckets", [])),
        "| revocations | " + " | ".join(str(c) for _, c in rev.get("buckets", [])) + " |",
    ]


def _bucket_label(le: Any) -> str:
    if le == "+Inf":
        return "all"
    return f"{le * 1000:g} ms" if le < 1 else f"{le:g} s"


def _scale_lines(results: dict[str, Any]) -> list[str]:
    scale = results.get("scale")
    if not scale:
        return []
    load = scale["initial_load"]
    lines = [
        "",
        f"## Scale: {count(load['users'])} users' consent and {count(load['links'])} identity "
        "links",
        "",
        f"{load.get('workers', 1)} workers (one per core) folded {count(load['consent_records'])} "
        f"consent records and {count(load['links'])} links in {_num(load.get('seconds'), 1)} s "
        f"({_num(load.get('records_per_s'))} records/s; "
        f"{_num(load.get('seconds_from_start'), 1)} s from process start), peak RSS "
        f"{_num(load.get('peak_rss_bytes', 0) / MB)} MB for both. Then one worker took every "
        "partition, recovering all of it from the changelogs:",
        "",
        "| restart of one worker | seconds to /ready | recovery (worker log) | peak RSS |",
        "|---|---:|---:|---:|",
    ]
    for r in scale["restarts"]:
        lines.append(
            f"| {r['case']} | {_num(r.get('seconds_to_ready'), 1)} | "
            f"{_num(r.get('recovered_in_s'), 1)} s | {_num(r.get('peak_rss_bytes', 0) / MB)} MB |"
        )
    run = scale.get("throughput") or {}
    if run:
        cpu = run.get("cpu_s_per_million")
        lines += [
            "",
            f"That worker, holding all of it, then decided {count(run.get('raw_records'))} "
            f"raw records of those users: {_num(run.get('events_per_s'))} events/s over "
            f"{_num(run.get('seconds'), 1)} s, {_num(cpu, 1)} CPU µs per event, peak RSS "
            f"{_num(run.get('peak_rss_bytes', 0) / MB)} MB"
            + (f" ({run['error']})" if run.get("error") else "")
            + ".",
        ]
    return lines


def write_report(
    results: dict[str, Any],
    out_dir: Path,
    draw: Callable[[dict[str, Any], Path], None] | None = None,
) -> list[Path]:
    """Write results.json and results.md into `out_dir`, and results.png with `draw`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "results.json", out_dir / "results.md"]
    paths[0].write_text(json.dumps(results, indent=2) + "\n")
    paths[1].write_text(markdown(results))
    if draw is not None:
        paths.append(out_dir / "results.png")
        draw(results, paths[2])
    return paths
