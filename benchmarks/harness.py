"""Starting contenders as processes and running the three kinds of measurement on them.

- `throughput_run`: one contender on the pre-produced input, measured over a window;
- `latency_phase`: one contender on fresh topics fed at a paced rate, with the probe;
- `scale_phase`: pipeline workers folding, recovering and deciding with the state of 1M
  users and 3M identity links.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import shutil
import signal
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from benchmarks.contenders import MODULES
from benchmarks.contenders.ceiling import output_topic as ceiling_output
from benchmarks.contenders.ceiling_fair import output_topic as ceiling_fair_output
from benchmarks.measure import MetricsProgress, ProcessGroup, ProgressSource, StdoutProgress
from benchmarks.stats import (
    Sample,
    bucket_delta,
    bucket_quantile,
    measure_window,
    written_per_input,
)
from benchmarks.workload import (
    LivePool,
    bench_settings,
    create_bench_topics,
    send_paced,
    write_records,
)
from pipeline import catalogue
from pipeline.kafka.admin import create_topics, partition_counts
from pipeline.sim.traffic import Record
from schemas import codec

log = logging.getLogger(__name__)

REPO: Final = Path(__file__).resolve().parent.parent
SAMPLE_INTERVAL_S: Final = 0.2
STOP_TIMEOUT_S: Final = 20.0
READY_LINE: Final = re.compile(r"assigned partitions .*\((\d+) records recovered in ([0-9.]+)s\)")
REVOCATION_HISTOGRAM: Final = "pipeline_revocation_latency_seconds"
LATENCY_SCOPES: Final = {
    "ceiling": "lc",
    "ceiling_fair": "lcf",
    "faust": "lf",
    "faust_batched": "lfb",
    "quix": "lq",
    "pipeline": "lp",
    "pipeline-2w": "lp2",
}
"""Short topic scopes of the latency phases (`<run>.lq.` for Quix Streams): Quix names its
changelog topic after every input topic, and Kafka allows 249 characters."""
PRIMER_RECORDS: Final = 500
"""Live records a contender processes before a latency phase's clock starts."""


class ContenderFailed(RuntimeError):
    """A contender exited or did not get ready in time; the message says which and where its
    log is."""


@dataclass(frozen=True)
class Context:
    """Where and how contenders run in this benchmark run."""

    bootstrap: str
    partitions: int
    run_id: str
    work_dir: Path
    hmac_key: str
    trust_key: str
    """The key trusted producers sign raw records with: the input has signed events."""

    def prefix(self, scope: str = "") -> str:
        """The topic prefix of this run (`scope` for the latency and recovery topics)."""
        return f"{self.run_id}.{scope + '.' if scope else ''}"


def workers_of(name: str) -> int:
    """How many worker processes a contender runs: 2 for `pipeline-2w`."""
    return 2 if name == "pipeline-2w" else 1


def is_pipeline(name: str) -> bool:
    return name.startswith("pipeline")


def output_topic(name: str, prefix: str) -> str:
    """The topic the latency probe reads for a contender."""
    if name == "ceiling":
        return ceiling_output(prefix)
    if name == "ceiling_fair":
        return ceiling_fair_output(prefix)
    if is_pipeline(name):
        return f"{prefix}{catalogue.AUDIT.name}"
    return f"{prefix}{name}.{catalogue.AUDIT.name}"


@dataclass
class Running:
    """A contender's processes, its progress source and its resource sampler."""

    name: str
    processes: list[asyncio.subprocess.Process]
    source: ProgressSource
    group: ProcessGroup
    logs: list[Path]
    session: aiohttp.ClientSession | None = None
    ports: list[int] = field(default_factory=list)

    def exited(self) -> int | None:
        """The exit code of a process that has ended, if any has."""
        for process in self.processes:
            if process.returncode is not None:
                return process.returncode
        return None

    async def stop(self) -> None:
        """SIGTERM every process, then SIGKILL what is still running after a while."""
        for process in self.processes:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if isinstance(self.source, StdoutProgress):
            await self.source.close()
        if self.session is not None:
            await self.session.close()

    def log_tail(self, lines: int = 30) -> str:
        tails = []
        for path in self.logs:
            with contextlib.suppress(OSError):
                tails.append(f"== {path}\n" + "\n".join(path.read_text().splitlines()[-lines:]))
        return "\n".join(tails)


QUIX_PYTHON_ENV: Final = "BENCH_QUIX_PYTHON"
"""The interpreter of the Quix Streams contender: quixstreams pins pydantic below the
project's, so `make bench` installs it in a virtualenv of its own (`.local/venv-quix`)."""


def contender_python(name: str) -> str:
    """The interpreter a contender runs under: its own virtualenv's for Quix Streams."""
    if name == "quix":
        return os.environ.get(QUIX_PYTHON_ENV) or sys.executable
    return sys.executable


def quix_group(group: str) -> str:
    """A short application id for Quix Streams: its changelog topic is named after the id
    and every concatenated input topic, which must stay within Kafka's 249 characters."""
    return "q-" + hashlib.sha256(group.encode()).hexdigest()[:12]


async def start(
    ctx: Context,
    name: str,
    *,
    prefix: str,
    group: str,
    state_dir: Path,
    store: str = "rocksdb",
    extra_args: Sequence[str] = (),
    log_name: str | None = None,
) -> Running:
    """Start contender `name` reading under `prefix` as consumer group (or app id) `group`;
    its output goes to `.../logs/<log_name or group>[-w<i>].log`."""
    log_name = log_name or group
    log_dir = _make_dirs(state_dir, ctx.work_dir / "logs")
    env = {
        **os.environ,
        "PIPELINE_HMAC_KEY": ctx.hmac_key,
        "PIPELINE_TRUST_KEY": ctx.trust_key,
        "PYTHONUNBUFFERED": "1",
    }
    if not is_pipeline(name):
        log_path = log_dir / f"{log_name}.log"
        python = contender_python(name)
        if name == "quix":
            group = quix_group(group)
        argv = [python, "-m", MODULES[name], "--bootstrap", ctx.bootstrap]
        argv += ["--prefix", prefix, "--group", group, "--partitions", str(ctx.partitions)]
        argv += ["--state-dir", str(state_dir), *extra_args]
        with log_path.open("ab") as stderr:
            process = await asyncio.create_subprocess_exec(
                *argv,
                cwd=REPO,
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                start_new_session=True,
            )
        assert process.stdout is not None
        source = StdoutProgress(process.stdout, log_path)
        return Running(name, [process], source, ProcessGroup([process.pid]), [log_path])
    processes = []
    logs = []
    ports = []
    # The internal topics between the stages belong to the app id: a fresh one per run.
    await create_topics(
        bench_settings(ctx.bootstrap, prefix, ctx.partitions, app_id=group, hmac_key=ctx.hmac_key)
    )
    for i in range(workers_of(name)):
        port = free_port()
        settings = bench_settings(
            ctx.bootstrap,
            prefix,
            ctx.partitions,
            app_id=group,
            hmac_key=ctx.hmac_key,
            trust_key=ctx.trust_key,
            web_port=port,
            worker_id=f"{group}-w{i}",
            store=store,
            data_dir=state_dir / f"w{i}",
        )
        worker_env = {**env, **settings.to_env(), "KAFKA_BOOTSTRAP_SERVERS": ctx.bootstrap}
        log_path = log_dir / f"{log_name}-w{i}.log"
        with log_path.open("ab") as out:
            processes.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "pipeline.cli",
                    "worker",
                    cwd=REPO,
                    env=worker_env,
                    stdout=out,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        logs.append(log_path)
        ports.append(port)
    session = aiohttp.ClientSession()
    return Running(
        name,
        processes,
        MetricsProgress(session, ports),
        ProcessGroup([p.pid for p in processes]),
        logs,
        session,
        ports,
    )


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now (for a worker's web server)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _make_dirs(*paths: Path) -> Path:
    """Create `paths`; returns the last."""
    for path in paths:
        path.mkdir(parents=True, exist_ok=True)
    return paths[-1]


async def rewind_group(bootstrap: str, group: str, topics: Sequence[str]) -> None:
    """Commit offset 0 on every partition of `topics` for the (idle) consumer group."""
    counts = await partition_counts(bench_settings(bootstrap, "", 1), list(topics))
    tps = [TopicPartition(topic, p) for topic, n in counts.items() for p in range(n or 0)]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.commit({tp: OffsetAndMetadata(0, "") for tp in tps})
    finally:
        await consumer.stop()


@dataclass
class RunOutcome:
    """One throughput run: its window (None when it never opened), resources, errors."""

    window: dict[str, Any] | None
    peak_rss_bytes: int
    wall_s: float
    consent_at_end: int
    error: str | None = None
    written: dict[str, float] | None = None
    """The pipeline's records written per raw record consumed (outputs, internal hops)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            **(self.window or {}),
            **({"written_per_input": self.written} if self.written else {}),
            "peak_rss_bytes": self.peak_rss_bytes,
            "wall_s": round(self.wall_s, 2),
            "consent_at_end": self.consent_at_end,
            "error": self.error,
        }


async def observe(
    running: Running,
    *,
    consent_ready: int,
    total_events: int,
    window_s: float,
    timeout_s: float,
) -> tuple[list[Sample], str | None]:
    """Sample a running contender until its window is complete, it fails, or time runs out."""
    samples: list[Sample] = []
    started = time.monotonic()
    error = None
    while True:
        await asyncio.sleep(SAMPLE_INTERVAL_S)
        progress = await running.source.read()
        cpu, rss = running.group.sample()
        if progress is not None:
            samples.append(Sample(progress.t, progress.events, progress.consent, cpu, rss))
        code = running.exited()
        if code is not None:
            error = f"{running.name} exited with code {code}"
            break
        window = measure_window(samples, consent_ready, total_events, window_s)
        if window is not None and (window.complete or window.seconds >= window_s):
            break
        if window is None and progress is not None and progress.events >= total_events:
            error = f"{running.name} consumed the whole input before its window opened"
            break
        if time.monotonic() - started > timeout_s:
            error = f"{running.name} did not finish its window within {timeout_s:.0f}s"
            break
    return samples, error


async def throughput_run(
    ctx: Context,
    name: str,
    *,
    group: str,
    consent_ready: int,
    total_events: int,
    window_s: float,
    timeout_s: float,
    label: str,
    keep_state: bool = False,
    extra_args: Sequence[str] = (),
    prefix: str | None = None,
    state_dir: Path | None = None,
) -> RunOutcome:
    """Run contender `name` on the pre-produced input (under `prefix`, the run's own by
    default) as `group` and measure its window; its log and samples are kept under `label`
    in the work dir."""
    state_dir = state_dir or ctx.work_dir / "state" / group
    started = time.monotonic()
    running = await start(
        ctx,
        name,
        prefix=prefix or ctx.prefix(),
        group=group,
        state_dir=state_dir,
        log_name=label,
        extra_args=extra_args,
    )
    try:
        samples, error = await observe(
            running,
            consent_ready=consent_ready,
            total_events=total_events,
            window_s=window_s,
            timeout_s=timeout_s,
        )
        written = None
        if isinstance(running.source, MetricsProgress):
            texts = await running.source.scrape()
            written = None if not texts else written_per_input(texts)
    finally:
        await running.stop()
    if error is not None:
        log.warning("%s\n%s", error, running.log_tail())
    save_samples(ctx, label, samples)
    window = measure_window(samples, consent_ready, total_events, window_s)
    if not keep_state:
        shutil.rmtree(state_dir, ignore_errors=True)
    return RunOutcome(
        window=None if window is None else window.to_dict(),
        peak_rss_bytes=running.group.peak_rss,
        wall_s=time.monotonic() - started,
        consent_at_end=samples[-1].consent if samples else 0,
        error=error,
        written=written,
    )


def save_samples(ctx: Context, name: str, samples: Sequence[Sample]) -> None:
    """Keep a run's samples next to its logs, for a closer look."""
    path = ctx.work_dir / "samples" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(codec.dumps([asdict(sample) for sample in samples]))


async def load_consent(
    ctx: Context, name: str, *, group: str, consent_ready: int, timeout_s: float
) -> dict[str, Any]:
    """Run a contender with `--consent-only` until its tables hold `consent_ready` records
    (consent and links), or for `timeout_s`, then stop it, keeping its state (Faust: the
    tables are loaded once, see README)."""
    state_dir = ctx.work_dir / "state" / group
    started = time.monotonic()
    running = await start(
        ctx,
        name,
        prefix=ctx.prefix(),
        group=group,
        state_dir=state_dir,
        extra_args=["--consent-only"],
    )
    first: float | None = None
    ready_after: float | None = None
    reached = 0
    try:
        while time.monotonic() - started < timeout_s:
            await asyncio.sleep(SAMPLE_INTERVAL_S)
            running.group.sample()
            progress = await running.source.read()
            if running.exited() is not None:
                break
            if progress is None:
                continue
            first = first or progress.t
            reached = progress.consent
            if progress.consent >= consent_ready:
                ready_after = progress.t - first
                break
    finally:
        await running.stop()
    if ready_after is None:
        log.warning("%s: its tables held %d of %d records in time", name, reached, consent_ready)
    return {
        "table_records": consent_ready,
        "table_records_reached": reached,
        "seconds": None if ready_after is None else round(ready_after, 2),
        "wall_s": round(time.monotonic() - started, 2),
        "peak_rss_bytes": running.group.peak_rss,
    }


async def wait_until(running: Running, predicate: Any, timeout_s: float, what: str) -> list[Sample]:
    """Sample until `predicate(progress)` holds; raises ContenderFailed on exit or timeout."""
    started = time.monotonic()
    samples: list[Sample] = []
    while time.monotonic() - started < timeout_s:
        await asyncio.sleep(SAMPLE_INTERVAL_S)
        progress = await running.source.read()
        cpu, rss = running.group.sample()
        if running.exited() is not None:
            raise ContenderFailed(f"{running.name} exited while {what}\n{running.log_tail()}")
        if progress is not None:
            samples.append(Sample(progress.t, progress.events, progress.consent, cpu, rss))
            if predicate(progress):
                return samples
    raise ContenderFailed(f"{running.name}: timed out while {what}\n{running.log_tail()}")


async def latency_phase(
    ctx: Context,
    name: str,
    *,
    rate: float,
    pool: LivePool,
    warmup_s: float,
    duration_s: float,
) -> dict[str, Any]:
    """Feed contender `name` fresh traffic at `rate` raw records/s and measure end-to-end
    latency with the probe (and, for the pipeline, its revocation latency histogram)."""
    scope = LATENCY_SCOPES[name]
    prefix = ctx.prefix(scope)
    settings = bench_settings(ctx.bootstrap, prefix, ctx.partitions)
    await create_bench_topics(settings, [] if is_pipeline(name) else [name])
    await write_records(settings, pool.bootstrap)
    group = f"{ctx.run_id}-{scope}"
    state_dir = ctx.work_dir / "state" / group
    running = await start(ctx, name, prefix=prefix, group=group, state_dir=state_dir)
    consent_ready = 0 if name.startswith("ceiling") else len(pool.bootstrap)
    result: dict[str, Any] = {"target_rate": round(rate, 1)}
    try:
        # The pipeline's progress only reads once every worker serves /metrics, that is once
        # every worker has joined the group and taken its partitions.
        await wait_until(
            running, lambda p: p.consent >= consent_ready, 300, "loading the consent table"
        )
        # A first small batch, processed before the clock starts, so one-off costs of the
        # first writes (metadata, new topics' leaders, the transaction coordinator) are not
        # counted as latency.
        primer, live = pool.split(PRIMER_RECORDS)
        await write_records(settings, primer)
        primed = sum(1 for record in primer if record.topic.source is not None)
        await wait_until(running, lambda p: p.events >= primed, 120, "processing the primer")
        since = time.time() + warmup_s
        until = since + duration_s
        probe = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "benchmarks.probe",
            "--bootstrap",
            ctx.bootstrap,
            "--topic",
            output_topic(name, prefix),
            "--since",
            f"{since:.3f}",
            "--until",
            f"{until:.3f}",
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE,
        )
        marks: dict[str, Any] = {}
        watcher = asyncio.create_task(_watch(running, since, until, marks))
        sent = await send_paced(settings, live, rate, warmup_s + duration_s)
        out, _ = await probe.communicate()
        await watcher
        save_samples(ctx, group, marks.pop("samples", []))
        result.update(codec.loads(out) if out else {"error": "probe produced no result"})
        result["sent_rate"] = round(sent.raw_rate, 1)
        result["pool_cycled"] = sent.cycled
        begin, end = marks.get("begin"), marks.get("end")
        if begin is not None and end is not None and end.t > begin.t:
            result["consumed_rate"] = round((end.events - begin.events) / (end.t - begin.t), 1)
            result["cpu_s_per_million"] = (
                round((end.cpu_s - begin.cpu_s) / (end.events - begin.events) * 1e6, 2)
                if end.events > begin.events
                else None
            )
        if "revocations" in marks:
            result["revocation"] = marks["revocations"]
    finally:
        await running.stop()
        shutil.rmtree(state_dir, ignore_errors=True)
    return result


async def _watch(running: Running, since: float, until: float, marks: dict[str, Any]) -> None:
    """Record the contender's progress at `since` and `until` (and the pipeline's revocation
    histogram between them)."""
    metrics = running.source if isinstance(running.source, MetricsProgress) else None
    samples: list[Sample] = []
    pending = [("begin", since), ("end", until)]
    while pending and time.time() < until + 10:  # a contender that stopped reporting
        await asyncio.sleep(SAMPLE_INTERVAL_S)
        progress = await running.source.read()
        cpu, rss = running.group.sample()
        if progress is None:
            continue
        samples.append(Sample(progress.t, progress.events, progress.consent, cpu, rss))
        mark, at = pending[0]
        if progress.t >= at:
            marks[mark] = samples[-1]
            if metrics is not None:
                marks[f"{mark}_histogram"] = await metrics.histogram(REVOCATION_HISTOGRAM)
            pending.pop(0)
    marks["samples"] = samples
    await asyncio.sleep(3.0)  # revocations applied in the last batches
    if metrics is not None and "begin_histogram" in marks:
        after = await metrics.histogram(REVOCATION_HISTOGRAM)
        marks["revocations"] = revocation_summary(bucket_delta(after, marks["begin_histogram"]))


def revocation_summary(buckets: list[tuple[float, float]]) -> dict[str, Any]:
    """Count and quantiles (from the histogram's buckets) of revocation latencies, in ms."""

    def ms(q: float) -> float | None:
        value = bucket_quantile(buckets, q)
        return None if value is None else round(value * 1000, 1)

    return {
        "count": int(buckets[-1][1]) if buckets else 0,
        "p50_ms": ms(0.5),
        "p90_ms": ms(0.9),
        "p99_ms": ms(0.99),
        "buckets": [[le if le != float("inf") else "+Inf", int(c)] for le, c in buckets],
    }


async def start_and_wait_ready(
    ctx: Context,
    *,
    prefix: str,
    group: str,
    state_dir: Path,
    store: str,
    timeout_s: float,
    log_name: str,
) -> dict[str, Any]:
    """Start one pipeline worker and time its start-up: the log's recovery line and /ready."""
    started = time.monotonic()
    running = await start(
        ctx,
        "pipeline",
        prefix=prefix,
        group=group,
        state_dir=state_dir,
        store=store,
        log_name=log_name,
    )
    result: dict[str, Any] = {"store": store}
    try:
        assert running.session is not None
        url = f"http://127.0.0.1:{running.ports[0]}/ready"
        while time.monotonic() - started < timeout_s:
            await asyncio.sleep(0.1)
            running.group.sample()
            if running.exited() is not None:
                raise ContenderFailed(f"worker exited during recovery\n{running.log_tail()}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with running.session.get(url, timeout=aiohttp.ClientTimeout(total=1)) as r:
                    if r.status == 200:
                        result["seconds_to_ready"] = round(time.monotonic() - started, 2)
                        break
        match = READY_LINE.search(running.logs[0].read_text(errors="replace"))
        if match:
            result["records_recovered"] = int(match.group(1))
            result["recovered_in_s"] = float(match.group(2))
        await asyncio.sleep(1.0)
        running.group.sample()
        progress = await running.source.read()
        result["consent_table_entries"] = await _gauge(running, "pipeline_consent_table_entries")
        result["table_records_applied"] = None if progress is None else progress.consent
    finally:
        await running.stop()
    result["peak_rss_bytes"] = running.group.peak_rss
    return result


async def _gauge(running: Running, name: str) -> float | None:
    if not isinstance(running.source, MetricsProgress):
        return None
    return await running.source.gauge(name)


async def scale_phase(
    ctx: Context,
    *,
    users: int,
    consent_records: int,
    links: int,
    events: Sequence[Record],
    window_s: float,
    timeout_s: float,
) -> dict[str, Any]:
    """The state of `users` users and `links` identity links: two workers (one per core)
    fold it; then one worker takes every partition and recovers it from the changelogs
    into an empty RocksDB store (cold), restarts on that store (warm), and decides
    `events` of those users while holding all of it."""
    prefix = ctx.prefix("rec")
    group = f"{ctx.run_id}-rec"
    fold_dir = ctx.work_dir / "state" / f"{group}-fold"
    one_dir = ctx.work_dir / "state" / f"{group}-one"
    started = time.monotonic()
    running = await start(ctx, "pipeline-2w", prefix=prefix, group=group, state_dir=fold_dir)
    load: dict[str, Any] = {
        "users": users,
        "consent_records": consent_records,
        "links": links,
        "workers": workers_of("pipeline-2w"),
    }
    try:
        samples = await wait_until(
            running,
            lambda p: p.consent >= consent_records + links,
            timeout_s,
            "folding consent and links",
        )
        while (await _gauge(running, "pipeline_identity_links") or 0) < links:
            if time.monotonic() - started > timeout_s:
                raise ContenderFailed(f"links not folded in time\n{running.log_tail()}")
            running.group.sample()
            await asyncio.sleep(SAMPLE_INTERVAL_S)
        load["seconds_from_start"] = round(time.monotonic() - started, 2)
        folding = [s for s in samples if s.consent > 0]
        load["seconds"] = round(time.time() - (folding[0].t if folding else samples[0].t), 2)
        load["records_per_s"] = round((consent_records + links) / max(1e-9, load["seconds"]), 1)
        load["consent_table_entries"] = await _gauge(running, "pipeline_consent_table_entries")
    finally:
        await running.stop()
    load["peak_rss_bytes"] = running.group.peak_rss
    load["wall_s"] = round(time.monotonic() - started, 2)
    shutil.rmtree(fold_dir, ignore_errors=True)
    restarts = []
    for tag, label in (("cold", "rocksdb, cold (empty data dir)"), ("warm", "rocksdb, warm")):
        result = await start_and_wait_ready(
            ctx,
            prefix=prefix,
            group=group,
            state_dir=one_dir,
            store="rocksdb",
            timeout_s=timeout_s,
            log_name=f"{group}-{tag}",
        )
        result["case"] = label + (" (the cold restart's state kept)" if tag == "warm" else "")
        restarts.append(result)
    settings = bench_settings(ctx.bootstrap, prefix, ctx.partitions)
    await write_records(settings, events)
    raw = sum(1 for record in events if record.topic.source is not None)
    outcome = await throughput_run(
        ctx,
        "pipeline",
        group=group,
        consent_ready=0,
        total_events=raw,
        window_s=window_s,
        timeout_s=window_s + timeout_s,
        label=f"{group}-events",
        prefix=prefix,
        state_dir=one_dir,
    )
    return {
        "initial_load": load,
        "restarts": restarts,
        "throughput": {"raw_records": raw, **outcome.to_dict()},
    }


async def memory_restart(ctx: Context, *, timeout_s: float) -> dict[str, Any]:
    """One worker recovering the scale phase's state into the in-memory store."""
    state_dir = ctx.work_dir / "state" / f"{ctx.run_id}-rec-memory"
    result = await start_and_wait_ready(
        ctx,
        prefix=ctx.prefix("rec"),
        group=f"{ctx.run_id}-rec",
        state_dir=state_dir,
        store="memory",
        timeout_s=timeout_s,
        log_name=f"{ctx.run_id}-rec-memory",
    )
    result["case"] = "memory, cold"
    shutil.rmtree(state_dir, ignore_errors=True)
    return result


def raw_topic_names(prefix: str) -> list[str]:
    return [f"{prefix}{topic.name}" for topic in catalogue.RAW.values()]
