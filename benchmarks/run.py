"""`python -m benchmarks.run`: the whole benchmark, end to end, and its report.

1. Pre-produce the input (consent of every user first, then the raw events) under a
   fresh topic prefix on the broker at KAFKA_BOOTSTRAP_SERVERS, and the scale phase's
   state (`--scale-users` users' consent, `--scale-links` identity links).
2. What every report needs, in this order: one throughput run of the raw loops and the
   pipeline (each its own process with a fresh consumer group, measured over at most
   `--window` seconds once its consent table is loaded); the pipeline's latency phase
   (fresh topics fed at half its rate, measured end to end by the probe, with its
   revocation latency histogram); the scale phase (two workers fold the large state, one
   worker recovers all of it and decides events with it); one run of Faust, Faust with
   batches and Quix Streams (the two Faust apps load their tables side by side first).
3. Then, while the budget lasts: the further throughput runs (`--runs` in all), the other
   contenders' latency phases, and the scale state recovered into the in-memory store.
4. Write `results.json`, `results.md` and `results.png` and delete the run's topics.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import platform
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Final

import psutil

from benchmarks import chart, report
from benchmarks.core import core_phase
from benchmarks.harness import (
    REPO,
    Context,
    contender_python,
    is_pipeline,
    latency_phase,
    load_consent,
    memory_restart,
    raw_topic_names,
    rewind_group,
    scale_phase,
    throughput_run,
    workers_of,
)
from benchmarks.workload import LivePool, bench_settings, create_bench_topics, preproduce
from pipeline.kafka.admin import admin_client, create_topics

log = logging.getLogger("benchmarks")

CONTENDERS: Final = (
    "ceiling",
    "pipeline",
    "pipeline-2w",
    "ceiling_fair",
    "faust",
    "faust_batched",
    "quix",
)
"""In this order: the fair ceiling writes per input what the pipeline's first run measured."""
FAUST: Final = ("faust", "faust_batched")
FRAMEWORKS: Final = (*FAUST, "quix")
"""Contenders run after the scale phase: their first runs take minutes each."""
LATENCY_ESTIMATE_S: Final = 60.0
FAUST_LOAD_S: Final = 240.0
"""How long the Faust contenders may load their tables; their runs fold what is left."""
MEMORY_RESTART_ESTIMATE_S: Final = 45.0
SCALE_EVENTS: Final = 300_000
PACKAGES: Final = (
    "faust-streaming",
    "aiokafka",
    "quixstreams",
    "confluent-kafka",
    "orjson",
    "pydantic",
    "rocksdict",
)
POOL_CAP: Final = 400_000


@dataclass(frozen=True)
class Options:
    """What to run; `--quick` picks small numbers that prove the harness in a few minutes."""

    bootstrap: str
    events: int
    users: int
    partitions: int
    runs: int
    window_s: float
    latency_s: float
    latency_warmup_s: float
    latency_users: int
    core_events: int
    scale_users: int
    scale_links: int
    contenders: tuple[str, ...]
    out_dir: Path
    work_dir: Path
    seed: int
    quick: bool
    startup_timeout_s: float
    keep_topics: bool
    budget_s: float


def parse_options(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="Benchmark the pipeline against a raw aiokafka loop, Faust and Quix Streams.",
    )
    parser.add_argument("--events", type=int, help="raw records to pre-produce (1,000,000)")
    parser.add_argument("--users", type=int, help="users whose consent is loaded (100,000)")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--runs", type=int, help="throughput runs per contender (3)")
    parser.add_argument("--window", type=float, help="longest throughput window, s (20)")
    parser.add_argument("--latency-seconds", type=float, help="measured latency phase, s (15)")
    parser.add_argument("--scale-users", type=int, help="users of the scale phase (1M)")
    parser.add_argument("--scale-links", type=int, help="identity links of the scale phase (3M)")
    parser.add_argument(
        "--contenders",
        default=",".join(CONTENDERS),
        help=f"comma-separated subset of {','.join(CONTENDERS)}",
    )
    parser.add_argument("--out", type=Path, help="report folder (benchmarks/results)")
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--quick", action="store_true", help="small numbers, report to .local")
    parser.add_argument("--keep-topics", action="store_true", help="do not delete the topics")
    parser.add_argument(
        "--budget",
        type=float,
        help="seconds the whole run may take (1140); later runs and phases are cut to fit",
    )
    args = parser.parse_args(argv)
    contenders = tuple(c.strip() for c in args.contenders.split(",") if c.strip())
    unknown = set(contenders) - set(CONTENDERS)
    if unknown:
        parser.error(f"unknown contenders: {', '.join(sorted(unknown))}")
    quick = args.quick

    def pick(value: Any, full: Any, small: Any) -> Any:
        return value if value is not None else (small if quick else full)

    run_root = REPO / ".local" / "bench"
    return Options(
        bootstrap=bootstrap_servers(),
        events=pick(args.events, 1_000_000, 50_000),
        users=pick(args.users, 100_000, 10_000),
        partitions=args.partitions,
        runs=pick(args.runs, 3, 2),
        window_s=pick(args.window, 20.0, 10.0),
        latency_s=pick(args.latency_seconds, 15.0, 8.0),
        latency_warmup_s=pick(None, 10.0, 5.0),
        latency_users=pick(None, 10_000, 5_000),
        core_events=pick(None, 50_000, 10_000),
        scale_users=pick(args.scale_users, 1_000_000, 50_000),
        scale_links=pick(args.scale_links, 3_000_000, 150_000),
        contenders=contenders,
        out_dir=pick(args.out, REPO / "benchmarks" / "results", run_root / "quick-results"),
        work_dir=run_root,
        seed=args.seed,
        quick=quick,
        startup_timeout_s=600.0,
        keep_topics=args.keep_topics,
        budget_s=pick(args.budget, 1140.0, 900.0),
    )


def bootstrap_servers() -> str:
    """The broker the benchmark runs on: `KAFKA_BOOTSTRAP_SERVERS`, else the local broker that
    `make kafka-up` starts on `KAFKA_PORT` (9092)."""
    servers = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    return servers or f"127.0.0.1:{os.environ.get('KAFKA_PORT') or 9092}"


class Budget:
    """The run's time budget. What every report needs runs whatever the clock says; the
    rest starts only when its estimated duration still fits."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = time.monotonic()
        self.cuts: list[str] = []

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def allows(self, what: str, estimate_s: float) -> bool:
        """Whether `what`, expected to take `estimate_s`, ends within the budget."""
        if self.elapsed() + estimate_s <= self.seconds:
            return True
        self.cuts.append(what)
        log.warning("budget: %s skipped at %.0fs", what, self.elapsed())
        return False

    def note(self) -> str | None:
        """One line for the report: what was cut to stay within the budget."""
        if not self.cuts:
            return None
        return (
            f"Not run, to stay within the {self.seconds:.0f} s budget (each would have "
            f"ended past it): {', '.join(self.cuts)}."
        )


def quix_version() -> str | None:
    """The quixstreams version of the Quix contender's own interpreter."""
    code = "from importlib.metadata import version; print(version('quixstreams'))"
    try:
        done = subprocess.run(
            [contender_python("quix"), "-c", code], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (done.stdout.strip() or None) if done.returncode == 0 else None


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    pom = (REPO / "deploy" / "local" / "pom.xml").read_text()
    kafka = re.search(r"<kafka.version>(.*?)</kafka.version>", pom)
    versions: dict[str, str | None] = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    versions["quixstreams"] = quix_version()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": psutil.virtual_memory().total / 1024**3,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "kafka": kafka.group(1) if kafka else None,
        "packages": versions,
        "loadavg_start": " ".join(f"{v:.2f}" for v in os.getloadavg()),
        "git": _git(),
    }


def _git() -> dict[str, Any]:
    """The commit measured, and whether the work tree had changes (read-only git calls)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return {}
    return {"commit": head, "uncommitted_changes": bool(dirty)}


def measured(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs that measured a whole window (a run that failed midway does not count)."""
    return [r for r in runs if r.get("events_per_s") and not r.get("error")]


def median_rate(runs: list[dict[str, Any]]) -> float | None:
    """The median events/s of the runs that measured a whole window."""
    rates = [r["events_per_s"] for r in measured(runs)]
    return round(statistics.median(rates), 1) if rates else None


def summarize(name: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median rate and CPU cost over the runs that measured a whole window; the peak RSS of
    all."""
    cpu = [r["cpu_s_per_million"] for r in measured(runs) if not math.isnan(r["cpu_s_per_million"])]
    return {
        "label": report.LABELS.get(name, name),
        "processes": workers_of(name),
        "events_per_s": median_rate(runs),
        "cpu_s_per_million": round(statistics.median(cpu), 2) if cpu else None,
        "peak_rss_bytes": max((r["peak_rss_bytes"] for r in runs), default=None),
        "runs": runs,
    }


def _fair_shape(shape: dict[str, float] | None) -> list[str]:
    """The fair ceiling's command line for what the pipeline wrote per input."""
    if not shape:
        return []
    return ["--outputs", str(shape["outputs"]), "--internal", str(shape["internal"])]


def pipeline_shape(runs: list[dict[str, Any]]) -> dict[str, float] | None:
    """What one pipeline worker wrote per raw record, the median over `runs`."""
    shapes = [r["written_per_input"] for r in runs if r.get("written_per_input")]
    if not shapes:
        return None
    return {k: statistics.median(s[k] for s in shapes) for k in ("outputs", "internal")}


@dataclass
class Runs:
    """One contender's throughput runs and phases, as they accumulate."""

    name: str
    runs: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {**summarize(self.name, self.runs), **self.extra}

    def rate(self) -> float | None:
        return median_rate(self.runs)

    def estimate_s(self) -> float:
        """How long another run should take: the longest so far, and a margin."""
        return max((r["wall_s"] for r in self.runs), default=120.0) + 10.0


def faust_group(ctx: Context, name: str) -> str:
    """A Faust contender's one consumer group: its tables are loaded once, for every run."""
    return f"{ctx.run_id}-{name}"


async def run_once(
    ctx: Context,
    opts: Options,
    c: Runs,
    consent_ready: int,
    total: int,
    shape: dict[str, float] | None,
) -> None:
    """One more throughput run of contender `c`. A Faust run rewinds the contender's group
    on the raw topics and restarts with the tables in its local RocksDB store."""
    name = c.name
    i = len(c.runs) + 1
    timeout = opts.window_s + opts.startup_timeout_s
    if name in FAUST:
        group = faust_group(ctx, name)
        await rewind_group(ctx.bootstrap, group, raw_topic_names(ctx.prefix()))
        outcome = await throughput_run(
            ctx,
            name,
            group=group,
            consent_ready=0,
            total_events=total,
            window_s=opts.window_s,
            timeout_s=timeout,
            label=f"{group}-r{i}",
            keep_state=True,
        )
    else:
        extra_args = _fair_shape(shape) if name == "ceiling_fair" else []
        if extra_args:
            c.extra["shape"] = shape
        group = f"{ctx.run_id}-{name}-r{i}"
        outcome = await throughput_run(
            ctx,
            name,
            group=group,
            label=group,
            consent_ready=0 if name.startswith("ceiling") else consent_ready,
            total_events=total,
            window_s=opts.window_s,
            timeout_s=timeout,
            extra_args=extra_args,
        )
    c.runs.append(outcome.to_dict())
    log.info("%s run %d: %s", name, i, _brief(c.runs[-1]))


async def load_faust(ctx: Context, opts: Options, runs: dict[str, Runs], consent: int) -> None:
    """Both Faust contenders load their tables once, side by side (they fold consent at a
    few thousand records/s; loading is not what their runs measure)."""
    names = [n for n in FAUST if n in runs]
    log.info("%s: loading the consent and identity tables", ", ".join(names))
    loads = await asyncio.gather(
        *(
            load_consent(
                ctx,
                n,
                group=faust_group(ctx, n),
                consent_ready=consent,
                timeout_s=FAUST_LOAD_S if not opts.quick else FAUST_LOAD_S / 2,
            )
            for n in names
        )
    )
    for name, load in zip(names, loads, strict=True):
        runs[name].extra["consent_load"] = load
        if load["seconds"] is None:
            runs[name].extra["note"] = (
                f"{name}: its tables held {load['table_records_reached']:,} of "
                f"{load['table_records']:,} consent and link records after "
                f"{load['wall_s']:.0f} s of loading; its runs fold the rest as they go, "
                "which its events/s includes."
            )


def _brief(run: dict[str, Any]) -> str:
    if run.get("events_per_s") is None:
        return f"no window ({run.get('error')})"
    return (
        f"{run['events_per_s']:,.0f} events/s over {run['seconds']:.1f}s, "
        f"{run['cpu_s_per_million']:.1f} CPU s/M, consent ready after "
        f"{run['consent_ready_after_s']:.1f}s, peak RSS {run['peak_rss_bytes'] / 2**20:.0f} MB"
    )


async def delete_run_topics(bootstrap: str, run_id: str) -> int:
    """Delete every topic whose name carries `run_id` (inputs, outputs, changelogs)."""
    settings = bench_settings(bootstrap, "", 1)
    admin = admin_client(settings)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if run_id in t]
        for start in range(0, len(names), 50):
            await admin.delete_topics(names[start : start + 50])
        return len(names)
    finally:
        await admin.close()


async def run(opts: Options) -> dict[str, Any]:
    """The whole benchmark; returns the results the report is written from."""
    budget = Budget(opts.budget_s)
    run_id = "bench-" + datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    ctx = Context(
        bootstrap=opts.bootstrap,
        partitions=opts.partitions,
        run_id=run_id,
        work_dir=opts.work_dir / run_id,
        hmac_key=secrets.token_hex(32),
        trust_key=secrets.token_hex(32),
    )
    settings_out = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()}
    results: dict[str, Any] = {
        "schema_version": 1,
        "run_id": run_id,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "settings": settings_out,
        "contenders": {},
        "notes": [],
    }
    runs = {name: Runs(name) for name in opts.contenders}
    try:
        settings = bench_settings(
            opts.bootstrap, ctx.prefix(), opts.partitions, trust_key=ctx.trust_key
        )
        await create_bench_topics(settings, [c for c in opts.contenders if not is_pipeline(c)])
        log.info("pre-producing %d users' consent and %d raw records", opts.users, opts.events)
        workload = await preproduce(settings, opts.users, opts.events, opts.seed)
        results["workload"] = workload.to_dict()
        if workload.failures:
            results["notes"].append(
                f"Kafka did not acknowledge every pre-produced record: {workload.failures}."
            )
        log.info(
            "pre-produced in %.0fs; raw records average %.0f bytes",
            workload.produce_seconds,
            workload.mean_raw_bytes,
        )
        scale_input = None
        if "pipeline" in runs and opts.scale_users:
            scale_settings = bench_settings(
                opts.bootstrap, ctx.prefix("rec"), opts.partitions, trust_key=ctx.trust_key
            )
            await create_topics(scale_settings)
            log.info(
                "pre-producing %d users' consent and %d links for the scale phase",
                opts.scale_users,
                opts.scale_links,
            )
            scale_input = await preproduce(
                scale_settings,
                opts.scale_users,
                0,
                opts.seed + 1,
                max_links=opts.scale_links,
                hold=min(SCALE_EVENTS, opts.events),
            )
        log.info("core: the decision alone over %d events", opts.core_events)
        results["core"] = core_phase(
            opts.latency_users,
            opts.core_events,
            opts.seed + 3,
            ctx.hmac_key.encode(),
            ctx.trust_key.encode(),
        )
        log.info("core: %s", results["core"])
        # A window opens once the tables hold the pre-produced consent and links.
        consent, total = workload.consent_bootstrap + workload.links, workload.raw_records
        shape = None
        for name in opts.contenders:
            if name not in FRAMEWORKS:
                await run_once(ctx, opts, runs[name], consent, total, shape)
                if name == "pipeline":
                    shape = pipeline_shape(runs[name].runs)
        pool = _live_pool(ctx, opts, runs)
        if "pipeline" in runs:
            await _latency(ctx, opts, pool, runs["pipeline"])
        if scale_input is not None:
            log.info("scale: %d users, %d links", opts.scale_users, scale_input.links)
            results["scale"] = await scale_phase(
                ctx,
                users=opts.scale_users,
                consent_records=scale_input.consent_records,
                links=scale_input.links,
                events=scale_input.held,
                window_s=opts.window_s,
                timeout_s=opts.startup_timeout_s,
            )
        if any(n in FAUST for n in runs):
            await load_faust(ctx, opts, runs, consent)
            results["notes"].append(
                "The two Faust contenders load their tables once, side by side (consent_load "
                "in the JSON); each of their runs rewinds its consumer group to the start of "
                "the raw topics and restarts with those tables."
            )
        for name in opts.contenders:
            if name in FRAMEWORKS:
                await run_once(ctx, opts, runs[name], consent, total, shape)
        for i in range(2, opts.runs + 1):
            for name, c in runs.items():
                if budget.allows(f"{name} run {i}", c.estimate_s()):
                    await run_once(ctx, opts, c, consent, total, shape)
        for name, c in runs.items():
            if (
                name != "pipeline"
                and c.rate()
                and budget.allows(f"latency phase of {name}", LATENCY_ESTIMATE_S)
            ):
                await _latency(ctx, opts, pool, c)
        if "scale" in results and budget.allows(
            "scale: recovery into the in-memory store", MEMORY_RESTART_ESTIMATE_S
        ):
            results["scale"]["restarts"].append(
                await memory_restart(ctx, timeout_s=opts.startup_timeout_s)
            )
    finally:
        if not opts.keep_topics:
            deleted = await delete_run_topics(opts.bootstrap, run_id)
            log.info("deleted %d topics of %s", deleted, run_id)
        shutil.rmtree(ctx.work_dir / "state", ignore_errors=True)
    results["contenders"] = {name: c.summary() for name, c in runs.items()}
    revocation = results["contenders"].get("pipeline", {}).get("latency", {}).get("revocation")
    if revocation:
        results["revocation_latency"] = revocation
    results["machine"]["loadavg_end"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    results["duration_s"] = round(budget.elapsed(), 1)
    if (cut := budget.note()) is not None:
        results["notes"].append(cut)
    for contender in results["contenders"].values():
        contender.update(report.summary(contender))
    results["ratios"] = report.ratios(results["contenders"])
    results["targets"] = report.targets(results)
    results["core_bound"] = report.core_bound(results)
    results["notes"].append(
        f"Raw records average {results['workload']['mean_raw_bytes']:.0f} bytes of JSON, "
        "not the targeted ~400: the producer's realistic mix carries hashed emails, user agents, "
        "device and app objects, and TrafficConfig has no switch to leave them out."
    )
    return results


def _live_pool(ctx: Context, opts: Options, runs: dict[str, Runs]) -> LivePool:
    """Live records enough for the pipeline contenders' latency phases at half their rate."""
    span = opts.latency_warmup_s + opts.latency_s
    needs = [0.5 * (c.rate() or 0) * span * 1.1 for n, c in runs.items() if is_pipeline(n)]
    size = int(min(POOL_CAP, max([20_000, *needs])))
    log.info("latency: generating a pool of %d live records", size)
    return LivePool.generate(opts.latency_users, size, opts.seed + 2, ctx.trust_key.encode())


async def _latency(ctx: Context, opts: Options, pool: LivePool, c: Runs) -> None:
    """Contender `c`'s latency phase at half its median rate."""
    rate = c.rate()
    if not rate:
        return
    log.info("latency: %s at %.0f events/s", c.name, 0.5 * rate)
    try:
        c.extra["latency"] = await latency_phase(
            ctx,
            c.name,
            rate=0.5 * rate,
            pool=pool,
            warmup_s=opts.latency_warmup_s,
            duration_s=opts.latency_s,
        )
    except Exception as exc:  # one failed phase must not lose the rest of the report
        log.warning("latency phase of %s failed: %s", c.name, exc)
        c.extra["latency"] = {"error": f"{type(exc).__name__}: {str(exc)[:2000]}"}
        return
    shown = {k: v for k, v in c.extra["latency"].items() if k != "revocation"}
    log.info("latency: %s: %s", c.name, shown)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr
    )
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    opts = parse_options(argv)
    results = asyncio.run(run(opts))
    paths = report.write_report(results, opts.out_dir, chart.chart)
    sys.stdout.write(report.markdown(results))
    for path in paths:
        sys.stdout.write(f"wrote {path}\n")


if __name__ == "__main__":
    main()
