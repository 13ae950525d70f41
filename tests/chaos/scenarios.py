"""The fault scenarios: a load, the faults injected during it, and the invariants after it.

Every scenario runs on its own topics (a run- and scenario-specific prefix), consumer
group and HMAC key, with PII canaries in its traffic. While it runs, the workers'
`/metrics` are scraped every few seconds and crashes are noted. Afterwards the workers
are stopped gracefully, every topic is read back and checked (`tests.chaos.ledger`),
worker logs, scrapes and outputs are searched for canaries, and the topics are deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import re
import secrets
import shutil
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from aiokafka.partitioner import murmur2
from pydantic import SecretStr

from benchmarks.workload import create_bench_topics
from pipeline import catalogue
from pipeline.catalogue import Topic
from pipeline.core.route import list_key
from pipeline.core.trust import TRUST_HEADER, trust_signature
from pipeline.kafka.admin import admin_client, changelog_specs, create_topics, topic_specs
from pipeline.kafka.producer import Producer
from pipeline.settings import Settings
from pipeline.sim.traffic import TrafficConfig, TrafficGenerator
from schemas import codec
from tests.chaos import cluster as cluster_faults
from tests.chaos import ledger
from tests.chaos import local as local_faults
from tests.chaos.cluster import dlq_only_bad_records
from tests.chaos.faults import FaultLog, LagProbe, LocalBroker, LocalCluster, WorkerPool
from tests.chaos.ledger import Invariant
from tests.chaos.load import LoadPlan, LoadSink, LoadStats, drive
from tests.chaos.observe import MetricsCheck
from tests.chaos.pii import CanarySet, PiiScanner
from tests.chaos.pills import draw_pills
from tests.chaos.readback import Message, read_topic
from tests.chaos.state import changelog_table, compare, replay_consent, rocksdb_table
from tests.chaos.zombies import PAUSES_S, slow_restore, worker_pause

log = logging.getLogger(__name__)

SCRAPE_EVERY_S: Final = 5.0
CRASH_LINE: Final = re.compile(r"Crashed reason=(\w+)\(")
"""A Faust service that crashed, and the exception's class."""
LOG_LEVEL_LINE: Final = re.compile(
    r"\[(WARNING|ERROR|CRITICAL)\] (?:\[[^\]]*\]:? )?((?:[A-Za-z]+ ?){1,4})"
)
"""A contender's log line at WARNING or above, and its first words (never its values)."""
RESOLVE_MIX: Final[Mapping[str, float]] = MappingProxyType(
    {
        "trusted_share": 0.0,
        "click_share": 0.9,
        "web_sources.sdk": 0.4,
        "churn_per_event": 0.05,
        "churn.move_email": 0.3,
        "churn.new_click": 0.3,
    }
)
"""Traffic that resolves through several keys, with links changing under it."""
RACE_MIX: Final[Mapping[str, float]] = MappingProxyType(
    {
        "churn_per_event": 0.25,
        "churn.revoke": 0.45,
        "churn.regrant": 0.45,
        "churn.device": 0.08,
        "churn.delete": 0.02,
    }
)
"""Consent churn of the race scenario: a change every four events, few deletions."""

LIST_MIX: Final[Mapping[str, float]] = MappingProxyType(
    {
        "list_share": 0.3,
        "unmatched_member_share": 0.05,
        "churn_per_event": 0.2,
        "churn.revoke": 0.4,
        "churn.regrant": 0.35,
        "churn.list_remove": 0.15,
        "churn.delete": 0.02,
        "churn.device": 0.03,
        "churn.move_email": 0.03,
        "churn.new_click": 0.0,
        "churn.unkeyed": 0.02,
    }
)
"""Customer lists under consent churn: a third of the records are list uploads of few
users whose consent is withdrawn and re-granted every few records."""


@dataclass(frozen=True)
class Size:
    """How big a scenario runs."""

    events: int
    rate: float | None
    """Raw records per second the load writes (None: as fast as Kafka takes them)."""
    fault_interval: tuple[float, float]
    """Seconds between faults of the periodic scenarios, drawn uniformly."""
    settle_timeout_s: float
    """How long the pipeline may take to catch up after the last fault."""
    fault_points: tuple[float, ...] = ()
    """Shares of the load written at which the one-off faults of a scenario happen."""


@dataclass
class ScenarioResult:
    """One scenario: its load, the faults injected and every invariant."""

    name: str
    title: str
    size: Size
    load: dict[str, Any] = field(default_factory=dict)
    faults: list[str] = field(default_factory=list)
    invariants: list[Invariant] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    error: str | None = None

    @property
    def passed(self) -> bool:
        return (
            self.error is None and bool(self.invariants) and all(i.passed for i in self.invariants)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "passed": self.passed,
            "duration_s": round(self.duration_s, 1),
            "size": {
                "events": self.size.events,
                "rate": self.size.rate,
                "fault_interval_s": list(self.size.fault_interval),
                "fault_points": list(self.size.fault_points),
            },
            "load": self.load,
            "faults": self.faults,
            "invariants": {i.name: i.to_dict() for i in self.invariants},
            "notes": self.notes,
            "error": self.error,
        }


class Harness:
    """One scenario's topics, workers, load, fault log and checks."""

    def __init__(
        self,
        name: str,
        base: Settings,
        root: Path,
        *,
        size: Size,
        seed: int,
        broker: LocalBroker | None = None,
        cluster: LocalCluster | None = None,
        keep: bool = False,
        raw_partitioner: str = "murmur2",
        contender: str | None = None,
        poisoned: bool = False,
    ) -> None:
        run = secrets.token_hex(4)
        self.name = name
        self.contender = contender
        """A benchmark contender the workers run instead of the pipeline (`Worker`)."""
        self.size = size
        self.seed = seed
        self.rng = random.Random(seed)
        self.keep = keep
        self.trust_key = secrets.token_hex(32).encode()
        self.canaries = CanarySet(run, trust_key=self.trust_key)
        self.settings = base.model_copy(
            update={
                "app_id": f"chaos-{name}-{run}",
                "topic_prefix": f"chaos-{run}-{name}.",
                "pii_canaries": self.canaries.all_values(),
                "hmac_key": SecretStr(secrets.token_hex(32)),
                "hmac_key_id": "chaos-1",
                "trust_key": SecretStr(self.trust_key.decode()),
            }
        )
        self.root = root / f"{name}-{run}"
        self.faults = FaultLog()
        self.broker = broker
        if broker is not None:
            broker.faults = self.faults
        self.cluster = cluster
        """The three-broker cluster of the cluster scenarios (`tests.chaos.cluster`)."""
        if cluster is not None:
            cluster.faults = self.faults
        self.stalls: list[tuple[str, float]] = []
        """(fault, the longest time without a new committed decision after it)."""
        self.pool = WorkerPool(self.settings, self.root, self.faults, contender, poisoned=poisoned)
        self.sink = LoadSink(self.settings, seed=seed, raw_partitioner=raw_partitioner)
        self.stats = LoadStats()
        self.metrics = MetricsCheck(self.settings)
        self.lag = LagProbe(self.settings)
        self.invariants: list[Invariant] = []
        self.notes: list[str] = []
        self.extra_load: dict[str, Any] = {}
        self._watch: asyncio.Task[None] | None = None
        self._progressed = asyncio.Event()
        self._victims: list[str] = []
        """The workers the current round of faults has yet to hit (`next_victim`)."""
        self.misplaced: set[tuple[str, int, int]] = set()
        """Table-input records sent to a wrong partition on purpose."""

    def signed(self, value: bytes) -> tuple[tuple[str, bytes], ...]:
        """The headers of a trusted producer's record: its user_id counts."""
        return ((TRUST_HEADER, trust_signature(self.trust_key, value)),)

    # -- set-up and tear-down -----------------------------------------------------

    async def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.contender is None:
            await create_topics(self.settings)
        else:
            await create_bench_topics(self.settings, [self.contender])
        await self.sink.start()
        self._watch = asyncio.create_task(self._watch_workers())

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        await self.pool.stop_all()
        with contextlib.suppress(Exception):
            await self.sink.stop()
        if not self.keep:
            await self._delete_topics()
            shutil.rmtree(self.root / "state", ignore_errors=True)

    async def _delete_topics(self) -> None:
        names = [s.name for s in topic_specs(self.settings)]
        names += [s.name for s in changelog_specs(self.settings, catalogue.TABLES)]
        admin = admin_client(self.settings)
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            doomed = [n for n in names if n in existing]
            if self.contender is not None:  # its outputs, and Faust's changelogs
                owned = (self.settings.topic_prefix, f"{self.settings.app_id}-")
                doomed += [n for n in existing - set(doomed) if n.startswith(owned)]
            if doomed:
                await admin.delete_topics(doomed)
        except Exception as exc:  # cleanup only: the run's verdict is already made
            log.warning("could not delete the scenario's topics (%s)", type(exc).__name__)
        finally:
            with contextlib.suppress(Exception):
                await admin.close()

    async def _watch_workers(self) -> None:
        while True:
            await asyncio.sleep(SCRAPE_EVERY_S)
            self.pool.revive()
            await self.scrape("during")

    async def scrape(self, label: str) -> dict[str, int]:
        """Scrape every running worker; returns series counts per worker."""
        counts = {}
        for name, text in (await self.pool.scrape_all()).items():
            counts[name] = len(self.metrics.add(f"{label}:{name}", text).series)
        return counts

    # -- load ---------------------------------------------------------------------

    def generator(
        self, *, users: int = 10_000, seed_offset: int = 0, mix: Mapping[str, float] | None = None
    ) -> TrafficGenerator:
        """Synthetic traffic for `users` users, with `mix` overrides (`TrafficConfig.override`)."""
        config = TrafficConfig(users=users)
        for name, value in (mix or {}).items():
            config = config.override(name, value)
        return TrafficGenerator(config, self.seed + seed_offset, trust_key=self.trust_key)

    def plan(
        self,
        events: int,
        *,
        generator: TrafficGenerator | None = None,
        pills: Sequence[Any] = (),
        pill_share: float = 0.0,
        canary_share: float = 0.005,
        bootstrap: bool = True,
    ) -> LoadPlan:
        return LoadPlan(
            generator=generator or self.generator(),
            events=events,
            canaries=self.canaries,
            canary_share=canary_share,
            pills=pills,
            pill_share=pill_share,
            seed=self.seed,
            bootstrap=bootstrap,
        )

    def start_load(self, plan: LoadPlan) -> asyncio.Task[LoadStats]:
        self.stats.expect(plan)
        return asyncio.create_task(
            drive(
                self.sink,
                plan,
                self.stats,
                rate=self.size.rate,
                on_chunk=lambda _: self._progressed.set(),
            )
        )

    async def wait_progress(self, fraction: float, load: asyncio.Task[LoadStats]) -> None:
        """Wait until `fraction` of the planned raw records is written (or the load ended).

        Raises:
            Exception: the load's own, if it failed.
        """
        while not load.done() and self.stats.progress < fraction:
            self._progressed.clear()
            progressed = asyncio.ensure_future(self._progressed.wait())
            await asyncio.wait({progressed, load}, return_when=asyncio.FIRST_COMPLETED)
            progressed.cancel()
        if load.done():
            load.result()

    async def idle_for(self, seconds: float, load: asyncio.Task[LoadStats]) -> bool:
        """Wait `seconds`; True as soon as the load is written and the pipeline caught up."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if load.done() and load.result() and await self.lag.lag() == 0:
                return True
            await asyncio.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
        return False

    async def start_workers(self, n: int) -> list[str]:
        names = [f"w{i}" for i in range(n)]
        await asyncio.gather(*(self.pool.start(name) for name in names))
        return names

    def next_victim(self) -> str:
        """The worker the next fault hits: every worker in turn, in a random order each round."""
        if not self._victims:
            self._victims = sorted(self.pool.workers)
            self.rng.shuffle(self._victims)
        return self._victims.pop()

    async def periodic_faults(
        self,
        load: asyncio.Task[LoadStats],
        fault: Callable[[str], Awaitable[None]],
        *,
        minimum: int = 1,
    ) -> int:
        """Inject `fault` into a worker every `fault_interval` until all input is committed."""
        done = 0
        while True:
            finished = await self.idle_for(self.rng.uniform(*self.size.fault_interval), load)
            if finished and done >= minimum:
                return done
            await fault(self.next_victim())
            done += 1

    async def settle(self, phase: str = "") -> bool:
        """Wait for the pipeline to commit every input; records `pipeline.caught_up[.phase]`."""
        started = time.monotonic()
        caught_up = await self.lag.wait_caught_up(self.size.settle_timeout_s)
        lag = await self.lag.lag()
        self.invariants.append(
            Invariant(
                f"pipeline.caught_up.{phase}" if phase else "pipeline.caught_up",
                caught_up,
                {
                    "lag_at_end": -1 if lag is None else lag,
                    "seconds": int(time.monotonic() - started),
                },
                [] if caught_up else [f"not caught up in {self.size.settle_timeout_s:.0f}s"],
            )
        )
        return caught_up

    # -- verdict ------------------------------------------------------------------

    async def check(self) -> None:
        """Stop the workers and check everything; appends to `invariants`."""
        await self.scrape("end")
        self.pool.check()
        crashes = self.pool.unexpected_exits
        await self.pool.stop_all()
        self.invariants.append(
            Invariant(
                "workers.no_crash",
                not crashes,
                {
                    "worker_starts": sum(w.starts for w in self.pool.workers.values()),
                    "unexpected_exits": sum(len(c) for c in crashes.values()),
                },
                [f"worker {name} exited by itself with {codes}" for name, codes in crashes.items()],
            )
        )
        scanner = PiiScanner(self.canaries)
        checked = await ledger.check(
            self.settings,
            acknowledged=self.sink.acknowledged,
            scanner=scanner,
            contender=self.contender,
        )
        if self.contender is not None:
            checked = [i for i in checked if i.name in CONTENDER_INVARIANTS]
        self.invariants.extend(checked)
        if self.misplaced:
            self.invariants.append(await self._partition_guarded())
        for worker in self.pool.workers.values():
            for _, log_bytes in worker.log_texts():
                for line in log_bytes.splitlines():
                    scanner.scan("worker_log", line)
        for _, metrics_text in self.metrics.texts:
            scanner.scan("metrics", metrics_text.encode())
        summary = scanner.summary()
        self.invariants.append(
            Invariant(
                "pii.canaries",
                summary["hits"] == 0 and summary["canary_values"] > 0,
                {
                    "canary_values": summary["canary_values"],
                    "forbidden_hits": summary["hits"],
                    **{f"scanned.{k}": v for k, v in summary["scanned"].items()},
                },
                [f"{where} x{n}" for where, n in summary["hits_by_location"].items()][:5],
            )
        )
        if self.contender is not None:
            self.notes.extend(self._contender_log_notes())
            return  # no /metrics to hold to the pipeline's label sets
        self.invariants.append(self.metrics.invariant())
        p50 = self.metrics.revocation_p50_s()
        if p50 is not None:
            self.notes.append(
                f"revocation latency: median within {p50:g}s (`pipeline_revocation_latency_seconds`"
                " of each worker's last scrape; changes queued behind a backlog count too)"
            )

    def _contender_log_notes(self) -> list[str]:
        """What the contender's logs say went wrong: warnings and errors by their text's
        first words (no values), and the exceptions it crashed with."""
        lines: Counter[str] = Counter()
        crashes: Counter[str] = Counter()
        for worker in self.pool.workers.values():
            for _, text in worker.log_texts():
                for line in text.decode(errors="replace").splitlines():
                    if crash := CRASH_LINE.search(line):
                        crashes[crash.group(1)] += 1
                    if level := LOG_LEVEL_LINE.search(line):
                        lines[f"{level.group(1)} {level.group(2).strip()}"] += 1
        notes = [f"{self.contender} crashed with {name} x{n}" for name, n in crashes.most_common()]
        notes += [f"{self.contender} logged `{what} ...` x{n}" for what, n in lines.most_common(8)]
        return notes

    async def _partition_guarded(self) -> Invariant:
        """Every table-input record sent to a wrong partition is in the DLQ as such."""
        rejected: dict[tuple[str, int, int], str] = {}

        def keep(msg: Message) -> None:
            record = codec.loads(msg.value or b"{}")
            origin = record.get("origin") or {}
            position = (origin.get("topic"), origin.get("partition"), origin.get("offset"))
            rejected[position] = record.get("reason", "")  # type: ignore[index]

        await read_topic(self.settings, self.settings.topic(catalogue.DLQ), keep)
        missing = [p for p in self.misplaced if rejected.get(p) != "wrong_partition"]
        return Invariant(
            "partition.guarded",
            not missing,
            {"misplaced_records": len(self.misplaced), "not_dlqd_as_wrong_partition": len(missing)},
            [f"{t}/{p}@{o}" for t, p, o in missing[:5]],
        )

    def load_summary(self) -> dict[str, Any]:
        acknowledged = self.sink.acknowledged
        return {
            **self.stats.to_dict(),
            "canary_events": sum(self.canaries.events_written.values()),
            "acknowledged_records": acknowledged.count,
            "delivery_failures_resent": acknowledged.resent,
            "never_acknowledged": acknowledged.given_up,
            "partitions": self.settings.topic_partitions,
            "store": self.settings.store,
            **self.extra_load,
        }


# -- the scenarios ------------------------------------------------------------------


async def worker_kill9(h: Harness) -> None:
    await h.start_workers(2)
    load = h.start_load(h.plan(h.size.events))

    async def fault(name: str) -> None:
        await h.pool.restart(name, signal.SIGKILL, pause_s=h.rng.uniform(0.5, 3.0))

    await h.periodic_faults(load, fault)
    await load
    await h.settle()


async def worker_sigterm(h: Harness) -> None:
    await h.start_workers(2)
    load = h.start_load(h.plan(h.size.events))

    async def fault(name: str) -> None:
        await h.pool.restart(name, signal.SIGTERM, pause_s=h.rng.uniform(0.5, 3.0))

    await h.periodic_faults(load, fault)
    await load
    await h.settle()


async def scale_1_3_1(h: Harness) -> None:
    await h.start_workers(1)
    load = h.start_load(h.plan(h.size.events))
    await h.wait_progress(0.25, load)
    await asyncio.gather(h.pool.start("w1"), h.pool.start("w2"))
    await h.wait_progress(0.6, load)
    await asyncio.gather(h.pool.kill("w1", signal.SIGTERM), h.pool.kill("w2", signal.SIGTERM))
    await load
    await h.settle()


async def broker_kill9(h: Harness) -> None:
    if h.broker is None:
        raise RuntimeError("the broker scenario needs a broker the suite started")
    await h.start_workers(2)
    load = h.start_load(h.plan(h.size.events))
    for at in h.size.fault_points:
        await h.wait_progress(at, load)
        await h.broker.restart_after_kill(pause_s=h.rng.uniform(2.0, 5.0))
    await load
    await h.settle()


async def state_recovery(h: Harness) -> None:
    worker = h.pool.slot("w0").settings
    generator = h.generator()
    await h.pool.start("w0")
    await h.start_load(h.plan(h.size.events // 2, generator=generator))
    await h.settle("first_half")
    await h.pool.kill("w0", signal.SIGTERM)
    replay = await replay_consent(h.settings)
    h.invariants.append(compare("state.before_wipe_equals_replay", rocksdb_table(worker), replay))
    h.pool.wipe_state("w0")
    await h.pool.start("w0")
    await h.settle("after_wipe")
    await h.pool.kill("w0", signal.SIGTERM)
    h.invariants.append(compare("state.recovered_equals_replay", rocksdb_table(worker), replay))
    await h.pool.start("w0")
    load = h.start_load(
        h.plan(h.size.events - h.size.events // 2, generator=generator, bootstrap=False)
    )
    await h.wait_progress(0.75, load)
    await h.pool.restart("w0", signal.SIGKILL, pause_s=1.0)
    await load
    await h.settle()
    await h.pool.kill("w0", signal.SIGTERM)
    replay = await replay_consent(h.settings)
    h.invariants.append(compare("state.final_equals_replay", rocksdb_table(worker), replay))
    h.invariants.append(
        compare("state.changelog_equals_replay", await changelog_table(h.settings), replay)
    )


async def consent_race(h: Harness) -> None:
    generator = h.generator(users=200, mix=RACE_MIX)
    await h.start_workers(2)
    load = h.start_load(h.plan(h.size.events, generator=generator))
    probes = asyncio.create_task(revocation_probes(h, rounds=max(5, h.size.events // 2000)))
    await h.wait_progress(0.5, load)
    await h.pool.restart("w0", signal.SIGKILL, pause_s=1.0)
    await load
    await probes
    await h.settle()


async def contender_race(h: Harness) -> None:
    """The consent race, without customer lists, with a kill -9 every few seconds while the
    load is written (a contender may never catch up: the faults stop with the load, and
    `settle` says whether it did)."""
    generator = h.generator(users=200, mix={**RACE_MIX, "list_share": 0.0})
    await h.start_workers(2)
    load = h.start_load(h.plan(h.size.events, generator=generator))
    probes = asyncio.create_task(revocation_probes(h, rounds=max(5, h.size.events // 2000)))
    faults = 0
    while not (load.done() and faults):
        await asyncio.wait({load}, timeout=h.rng.uniform(*h.size.fault_interval))
        if load.done() and faults:
            break
        await h.pool.restart(h.next_victim(), signal.SIGKILL, pause_s=h.rng.uniform(0.5, 3.0))
        faults += 1
    await load
    await probes
    await h.settle()


async def poison_pills(h: Harness) -> None:
    count = min(2000, max(50, h.size.events // 100))
    started = time.monotonic()
    pills = await asyncio.to_thread(draw_pills, count, h.seed, h.canaries)
    h.extra_load["distinct_pills_drawn"] = len(pills)
    h.notes.append(f"{len(pills)} pills drawn by hypothesis in {time.monotonic() - started:.1f}s")
    await h.start_workers(2)
    await h.start_load(h.plan(h.size.events, pills=pills, pill_share=0.01))
    await miskeyed_probes(h, pairs=10)
    await h.settle()


async def miskeyed_probes(h: Harness, pairs: int) -> None:
    """Valid records under another subject's key (inputs are keyed by their subject).

    `pairs` events are sent under their own key and again under a key on another
    partition; `pairs` revocations are sent under another user's key, each followed by an
    event of the revoked user under its own key. The copy must not be processed as new
    and the revocation must govern the event, unless the pipeline rejects the
    wrongly keyed record to the DLQ.
    """
    partitions = h.settings.topic_partitions
    users = [f"mk-{h.canaries.run}-{i}" for i in range(4 * pairs)]

    def partition(user: str) -> int:
        return int((murmur2(user.encode()) & 0x7FFFFFFF) % partitions)

    pairings = []
    for user in users:
        other = next((u for u in users if partition(u) != partition(user)), None)
        if other is not None:
            pairings.append((user, other))
    consent, tag = catalogue.CONSENT_CHANGES, catalogue.RAW_TAG
    async with Producer(h.settings, client_id="chaos-mk") as producer:

        async def send(topic: Topic, key: str, value: bytes, kind: str) -> None:
            headers = h.signed(value) if topic.source is not None else ()
            await (await producer.send(h.settings.topic(topic), value, key.encode(), headers))
            h.stats.kinds[kind] += 1
            if topic.source is not None:
                h.stats.written += 1

        for user, _ in pairings[: 2 * pairs]:
            await send(consent, user, _probe_consent(user, "grant", 0, 2), "probe.grant")
        for n, (user, other) in enumerate(pairings[:pairs]):
            event = _probe_event(user, 0, n)
            await send(tag, user, event, "probe.event")
            await send(tag, other, event, "pill.miskeyed_copy")
        for n, (user, other) in enumerate(pairings[pairs : 2 * pairs]):
            revoke = _probe_consent(user, "revoke", 0, 2)
            await send(consent, other, revoke, "pill.miskeyed_revocation")
            await send(tag, user, _probe_event(user, 1, n), "probe.event")


async def pii_canaries(h: Harness) -> None:
    await h.start_workers(1)
    half = h.size.events // 2
    await h.start_load(h.plan(half, generator=h.generator(users=1_000), canary_share=0.02))
    await h.settle("1k_users")
    few = await h.scrape("after 1k users")
    many_users = h.generator(users=10_000, seed_offset=1)
    await h.start_load(h.plan(h.size.events - half, generator=many_users, canary_share=0.02))
    await h.settle("10k_users")
    many = await h.scrape("after 10k users")
    bound = h.metrics.bound()
    before, after = few.get("w0", 0), many.get("w0", 0)
    h.invariants.append(
        Invariant(
            "metrics.series_independent_of_users",
            bool(few and many) and after <= bound and not h.metrics.unknown,
            {
                "series_after_1k_users": before,
                "series_after_10k_users": after,
                "series_bound_from_closed_label_sets": bound,
            },
            [] if after <= bound else ["more series than the closed label sets allow"],
        )
    )


async def revocation_probes(h: Harness, rounds: int) -> None:
    """Acknowledged revocations followed at once by events of the same users.

    Each round, per probe user: a grant, an event, a revocation (personalization off, or
    deletion in the last round), an event, a re-grant, an event; each record waits for its
    acknowledgement before the next is sent. The ledger's revocation check holds every
    event produced after a revocation's acknowledgement to it.
    """
    sent = 0
    async with Producer(h.settings, client_id="chaos-probe") as producer:
        users = [f"probe-{h.canaries.run}-{i}" for i in range(5)]
        for round_ in range(rounds):
            for user in users:
                for step in ("grant", "event", "revoke", "event", "regrant", "event"):
                    topic: Topic
                    if step == "event":
                        topic, value = catalogue.RAW_TAG, _probe_event(user, round_, sent)
                    else:
                        topic = catalogue.CONSENT_CHANGES
                        value = _probe_consent(user, step, round_, rounds)
                    headers = h.signed(value) if topic.source is not None else ()
                    await (
                        await producer.send(h.settings.topic(topic), value, user.encode(), headers)
                    )
                    sent += 1
                    if step == "event":
                        h.stats.written += 1
                        h.stats.kinds["probe.event"] += 1
                    else:
                        h.stats.kinds[f"probe.{step}"] += 1
            await asyncio.sleep(0.05)
    h.extra_load["probe_records"] = sent


async def membership_withdrawal(h: Harness) -> None:
    generator = h.generator(users=300, mix=LIST_MIX)
    await h.start_workers(2)
    load = h.start_load(h.plan(h.size.events, generator=generator))
    probes = asyncio.create_task(membership_probes(h, rounds=max(3, h.size.events // 4000)))
    await h.wait_progress(0.3, load)
    await h.pool.restart("w0", signal.SIGKILL, pause_s=1.0)
    await h.wait_progress(0.65, load)
    await h.pool.restart("w1", signal.SIGKILL, pause_s=1.0)
    await load
    await probes
    await h.settle()


async def membership_probes(h: Harness, rounds: int) -> None:
    """Acknowledged consent changes between acknowledged list uploads of the same people.

    Per round and probe person (linked by an email key): a grant; adds to audiences 1 and
    2; a revocation (both memberships must be withdrawn); an add to audience 3 (denied,
    kept suppressed); a re-grant (1, 2 and 3 restored); the advertiser's remove of 1; a
    revocation and a re-grant (only 2 and 3 restored: 1 was removed meanwhile). Each record
    waits for its acknowledgement before the next is sent; the ledger's
    `memberships.follow_consent` holds the outputs to every step.
    """
    sent = 0
    run = h.canaries.run
    links, consent, lists = (
        catalogue.IDENTITY_LINKS,
        catalogue.CONSENT_CHANGES,
        catalogue.RAW_AUDIENCE,
    )
    async with Producer(h.settings, client_id="chaos-membership-probe") as producer:

        async def send(topic: Topic, key: bytes, value: bytes, kind: str) -> None:
            nonlocal sent
            await (await producer.send(h.settings.topic(topic), value, key))
            h.stats.kinds[kind] += 1
            if topic is lists:
                h.stats.written += 1
            sent += 1

        for round_ in range(rounds):
            for i in range(3):
                user = f"mp-{run}-{round_}-{i}"
                email = hashlib.sha256(f"{user}@example.com".encode()).hexdigest()
                key = f"em:{email}"
                await send(links, key.encode(), _probe_link(key, user, 1), "probe.list_link")
                steps = [
                    ("grant", None),
                    ("add", "1"),
                    ("add", "2"),
                    ("revoke", None),
                    ("add", "3"),
                    ("regrant", None),
                    ("remove", "1"),
                    ("revoke", None),
                    ("regrant", None),
                ]
                for step, audience in steps:
                    if audience is None:
                        change = _probe_consent(user, step, 0, 2)
                        await send(consent, user.encode(), change, f"probe.{step}")
                    else:
                        member = _probe_member(run, audience, step, email)
                        record_key = list_key("adv-probe", f"{run}-{audience}").encode()
                        await send(lists, record_key, member, f"probe.list_{step}")
            await asyncio.sleep(0.05)
    h.extra_load["membership_probe_records"] = sent


async def resolve_kill9(h: Harness) -> None:
    generator = h.generator(mix=RESOLVE_MIX)
    await h.start_workers(2)
    load = h.start_load(h.plan(h.size.events, generator=generator))

    async def fault(name: str) -> None:
        await h.pool.restart(name, signal.SIGKILL, pause_s=h.rng.uniform(0.5, 3.0))

    await h.periodic_faults(load, fault)
    await load
    await h.settle()


async def identity_race(h: Harness) -> None:
    generator = h.generator(users=500, mix={**RESOLVE_MIX, "churn_per_event": 0.2})
    await h.start_workers(2)
    load = h.start_load(h.plan(h.size.events, generator=generator))
    probes = asyncio.create_task(identity_probes(h, rounds=max(4, h.size.events // 2500)))
    await h.wait_progress(0.5, load)
    await h.pool.restart("w1", signal.SIGKILL, pause_s=1.0)
    await load
    await probes
    await wrong_partition_probes(h, n=6)
    await h.settle()


async def crc32_partitioner(h: Harness) -> None:
    await h.start_workers(2)
    load = h.start_load(h.plan(h.size.events, generator=h.generator(mix=RESOLVE_MIX)))
    await load
    await resend_copies(h, share=0.1)
    await h.settle()


async def identity_probes(h: Harness, rounds: int) -> None:
    """Acknowledged link moves and unlinks followed at once by events naming only the key.

    Per round and probe key: link it to one user, an event; move it to another user,
    three events; unlink it (a tombstone, or `deleted: true` on odd rounds), an event.
    Each record waits for its acknowledgement before the next is sent. The ledger's
    `identity.as_of_production` holds every event to the link of its moment: none after
    the move names the former user, none after the unlink names anyone.
    """
    sent = 0
    run = h.canaries.run
    links, tag, consent = catalogue.IDENTITY_LINKS, catalogue.RAW_TAG, catalogue.CONSENT_CHANGES
    async with Producer(h.settings, client_id="chaos-identity-probe") as producer:

        async def send(topic: Topic, key: bytes, value: bytes | None) -> None:
            await (await producer.send(h.settings.topic(topic), value, key))

        users = [f"idp-{run}-{i}" for i in range(6)]
        for user in users:
            await send(consent, user.encode(), _probe_consent(user, "grant", 0, 2))
        for round_ in range(rounds):
            for i in range(3):
                key = f"em:{hashlib.sha256(f'idp-{run}-{round_}-{i}'.encode()).hexdigest()}"
                former, new = users[2 * i], users[2 * i + 1]
                steps: list[tuple[Topic, bytes | None]] = [
                    (links, _probe_link(key, former, 1)),
                    (tag, None),
                    (links, _probe_link(key, new, 2)),
                    (tag, None),
                    (tag, None),
                    (tag, None),
                    (links, _probe_unlink(key, 3) if round_ % 2 else None),
                    (tag, None),
                ]
                for topic, value in steps:
                    if topic is tag:
                        event = _probe_key_event(key, f"{run}-{round_}-{i}-{sent}")
                        await send(tag, event[0], event[1])
                        h.stats.written += 1
                        h.stats.kinds["probe.identity_event"] += 1
                    else:
                        await send(topic, key.encode(), value)
                        h.stats.kinds["probe.identity_link"] += 1
                    sent += 1
            await asyncio.sleep(0.05)
    h.extra_load["identity_probe_records"] = sent


async def wrong_partition_probes(h: Harness, n: int) -> None:
    """Links and consent changes sent to another partition than murmur2 of their key.

    They cannot be joined: each must reach the DLQ as `wrong_partition`, and none may
    govern anything (the ledger leaves DLQ'd table inputs out of its histories).
    """
    partitions = h.settings.topic_partitions
    run = h.canaries.run
    sent: set[tuple[str, int, int]] = set()
    async with Producer(h.settings, client_id="chaos-misplaced") as producer:
        for i in range(n):
            user = f"wp-{run}-{i}"
            key = f"click:wp-{run}-{i}"
            for topic, record_key, value in (
                (catalogue.CONSENT_CHANGES, user.encode(), _probe_consent(user, "grant", 0, 2)),
                (catalogue.IDENTITY_LINKS, key.encode(), _probe_link(key, user, 1)),
            ):
                right = (murmur2(record_key) & 0x7FFFFFFF) % partitions
                name = h.settings.topic(topic)
                metadata = await (
                    await producer.kafka.send(
                        name, value, key=record_key, partition=(right + 1) % partitions
                    )
                )
                sent.add((name, metadata.partition, metadata.offset))
    h.stats.kinds["probe.wrong_partition"] += len(sent)
    h.misplaced = sent


async def resend_copies(h: Harness, share: float) -> None:
    """Re-send a share of the raw records already written, by another producer: murmur2,
    other keys. Each lands wherever that producer put it; every one is a duplicate."""
    run = h.canaries.run
    copies = 0
    async with Producer(h.settings, client_id="chaos-resend") as producer:
        for raw in catalogue.RAW.values():
            picked: list[Message] = []

            def pick(msg: Message, picked: list[Message] = picked) -> None:
                if msg.value and h.rng.random() < share:
                    picked.append(msg)

            await read_topic(h.settings, h.settings.topic(raw), pick)
            for n, msg in enumerate(picked):
                key = f"resent-{run}-{n}".encode()
                await producer.send(h.settings.topic(raw), msg.value, key, msg.headers)
                copies += 1
        await producer.flush()
    h.stats.written += copies
    h.stats.kinds["copy.resent"] += copies
    h.extra_load["resent_copies"] = copies


def _probe_link(key: str, user: str, linked_at: int) -> bytes:
    return codec.dumps({"match_key": key, "user_id": user, "linked_at": linked_at})


def _probe_unlink(key: str, linked_at: int) -> bytes:
    return codec.dumps({"match_key": key, "deleted": True, "linked_at": linked_at})


def _probe_key_event(key: str, event_id: str) -> tuple[bytes, bytes]:
    """An event naming its person by `key` (an email hash) only, and its record key."""
    event: dict[str, Any] = {
        "event_id": f"idp-{event_id}",
        "event_name": "add_to_cart",
        "event_time": int(time.time()) - 1,
        "action_source": "web",
        "advertiser_id": "adv-probe",
        "user_data": {"em": [key.partition(":")[2]]},
        "custom_data": {"currency": "USD", "value": 1.0},
    }
    return str(event["event_id"]).encode(), codec.dumps(event)


def _probe_consent(user: str, step: str, round_: int, rounds: int) -> bytes:
    now_ms = int(time.time() * 1000)
    if step == "revoke" and round_ == rounds - 1:
        return codec.dumps({"user_id": user, "changed_at": now_ms, "deleted": True})
    return codec.dumps(
        {
            "user_id": user,
            "changed_at": now_ms,
            "settings": {
                "personalization": step != "revoke",
                "ads_from_partner_info": True,
                "partner_sharing": True,
            },
            "profile": {"country": "US", "birth_year": 1980},
        }
    )


def _probe_member(run: str, audience: str, operation: str, email: str) -> bytes:
    return codec.dumps(
        {
            "advertiser_id": "adv-probe",
            "audience_id": f"{run}-{audience}",
            "operation": operation,
            "match_keys": {"em": [email]},
            "uploaded_at": int(time.time() * 1000),
        }
    )


def _probe_event(user: str, round_: int, n: int) -> bytes:
    return codec.dumps(
        {
            "event_id": f"{user}-r{round_}-{n}",
            "event_name": "add_to_cart",
            "event_time": int(time.time()) - 1,
            "action_source": "web",
            "advertiser_id": "adv-probe",
            "user_id": user,
            "browser": {"cookie_id": f"ck-probe-{n}", "dnt": False, "gpc": False},
            "custom_data": {"currency": "USD", "value": 1.0},
        }
    )


@dataclass(frozen=True)
class Scenario:
    """A named fault scenario with its full and short sizes."""

    name: str
    title: str
    run: Callable[[Harness], Awaitable[None]]
    full: Size
    short: Size
    store: str = "rocksdb"
    needs_broker: bool = False
    needs_cluster: bool = False
    """Runs on the suite's three-broker cluster, with every topic replicated three times."""
    partitions: int | None = None
    """The partition count of its topics, when not the suite's."""
    poisoned: bool = False
    """Its workers raise for planted records (`tests.chaos.poisoned`)."""
    local: bool = False
    """A fault of one worker's machine: also holds `dlq.only_bad_records`."""
    raw_partitioner: str = "murmur2"
    contender: str | None = None
    """The benchmark contender it runs instead of the pipeline's workers."""


def _size(
    events: int,
    rate: float | None,
    interval: tuple[float, float],
    settle_s: float,
    points: tuple[float, ...] = (),
) -> Size:
    return Size(events, rate, interval, settle_s, points)


SCENARIOS: Final = (
    Scenario(
        "worker-kill9",
        "kill -9 a worker every 5-30 s and restart it",
        worker_kill9,
        full=_size(500_000, 2500, (5, 30), 1200),
        short=_size(20_000, 1000, (6, 12), 180),
    ),
    Scenario(
        "worker-sigterm",
        "graceful SIGTERM restarts of a worker every 5-30 s",
        worker_sigterm,
        full=_size(100_000, 1500, (5, 30), 600),
        short=_size(10_000, 800, (4, 8), 180),
        store="memory",
    ),
    Scenario(
        "scale-1-3-1",
        "scale from 1 to 3 workers at 25% of the load, back to 1 at 60%",
        scale_1_3_1,
        full=_size(100_000, 1500, (0, 0), 600),
        short=_size(10_000, 800, (0, 0), 180),
    ),
    Scenario(
        "broker-kill9",
        "kill -9 the broker during the load (at 30% and 70%; short: 50%), restart it after 2-5 s",
        broker_kill9,
        full=_size(100_000, 1500, (0, 0), 600, (0.3, 0.7)),
        short=_size(15_000, 1000, (0, 0), 240, (0.5,)),
        needs_broker=True,
    ),
    Scenario(
        "state-recovery",
        "wipe a RocksDB worker's local state and restart: table equals the consent replay",
        state_recovery,
        full=_size(100_000, 2500, (0, 0), 600),
        short=_size(10_000, 1500, (0, 0), 180),
    ),
    Scenario(
        "consent-race",
        "revocations interleaved with events of the same 200 users, acknowledged probes, a kill -9",
        consent_race,
        full=_size(50_000, 1000, (0, 0), 600),
        short=_size(8_000, 800, (0, 0), 180),
    ),
    Scenario(
        "poison-pills",
        "hypothesis-drawn poison pills at 1% of the traffic",
        poison_pills,
        full=_size(100_000, 2500, (0, 0), 600),
        short=_size(15_000, 1500, (0, 0), 180),
    ),
    Scenario(
        "resolve-kill9",
        "kill -9 a worker every 5-20 s while events resolve through several keys",
        resolve_kill9,
        full=_size(200_000, 2000, (5, 20), 1200),
        short=_size(10_000, 1000, (6, 12), 180),
    ),
    Scenario(
        "identity-race",
        "links moved and unlinked under acknowledged probes, a kill -9, misplaced links",
        identity_race,
        full=_size(50_000, 1000, (0, 0), 600),
        short=_size(6_000, 800, (0, 0), 180),
    ),
    Scenario(
        "crc32-partitioner",
        "raw records partitioned by librdkafka's CRC32, and copies re-sent with murmur2",
        crc32_partitioner,
        full=_size(100_000, 2500, (0, 0), 600),
        short=_size(10_000, 1500, (0, 0), 180),
        raw_partitioner="crc32",
    ),
    Scenario(
        "membership-withdrawal",
        "consent withdrawn and re-granted while memberships exist, acknowledged probes, kill -9",
        membership_withdrawal,
        full=_size(60_000, 1000, (0, 0), 600),
        short=_size(8_000, 800, (0, 0), 180),
    ),
    Scenario(
        "worker-pause",
        "SIGSTOP each worker in turn inside an open transaction, past the session timeout "
        f"({PAUSES_S[0]:.0f}s, then {PAUSES_S[1]:.0f}s: past the transaction timeout too), "
        "then SIGCONT: the zombie's transaction is refused or aborted, never committed",
        worker_pause,
        full=_size(100_000, 1500, (0, 0), 600, (0.3, 0.65)),
        short=_size(15_000, 300, (0, 0), 300, (0.2, 0.7)),
    ),
    Scenario(
        "slow-restore",
        "a worker restarted on an empty state folder restores its tables slower than the "
        "session timeout (its changelog reads throttled by a client quota)",
        slow_restore,
        full=_size(100_000, 2000, (0, 0), 900, (0.5,)),
        short=_size(15_000, 1000, (0, 0), 300, (0.5,)),
    ),
    Scenario(
        "local-data-dir",
        "a worker's PIPELINE_DATA_DIR is a file when it starts, later immutable (chattr -R +i) "
        "when it restarts; each fault removed after it stood down",
        local_faults.data_dir_unusable,
        full=_size(60_000, 1000, (0, 0), 600, (0.15, 0.55)),
        short=_size(12_000, 400, (0, 0), 300, (0.15, 0.55)),
        local=True,
    ),
    Scenario(
        "local-store-lock",
        "another process holds the lock of a worker's stores when it restarts, for 50 s",
        local_faults.store_locked,
        full=_size(60_000, 1000, (0, 0), 600, (0.3,)),
        short=_size(12_000, 400, (0, 0), 300, (0.3,)),
        local=True,
    ),
    Scenario(
        "local-store-corrupt",
        "garbage written over a killed worker's store files (MANIFEST, SST, CURRENT) before it "
        "restarts; its rebuilt tables equal the consent replay",
        local_faults.store_corrupted,
        full=_size(60_000, 1500, (0, 0), 600, (0.4,)),
        short=_size(12_000, 800, (0, 0), 300, (0.4,)),
        local=True,
    ),
    Scenario(
        "local-disk-full",
        f"a worker's state on a {local_faults.TMPFS_MB} MiB tmpfs that fills up under load, then "
        "is freed",
        local_faults.disk_full,
        full=_size(60_000, 1000, (0, 0), 600, (0.35,)),
        short=_size(12_000, 400, (0, 0), 300, (0.35,)),
        local=True,
    ),
    Scenario(
        "local-poison",
        f"records that raise in each stage, {local_faults.POISON_PER_STAGE} per stage: each "
        "dead-lettered alone, every other record decided",
        local_faults.poisoned,
        full=_size(60_000, 1500, (0, 0), 600),
        short=_size(12_000, 800, (0, 0), 300),
        poisoned=True,
        local=True,
    ),
    Scenario(
        "pii-canaries",
        "canary identifiers at 2% of the traffic, 1k users then 10k users",
        pii_canaries,
        full=_size(60_000, 2500, (0, 0), 600),
        short=_size(10_000, 1500, (0, 0), 180),
        store="memory",
    ),
)
CLUSTER_SCENARIOS: Final = (
    Scenario(
        "cluster-broker-kill9",
        "a worker restarted with a slow restore; meanwhile kill -9 of the broker coordinating "
        "the other worker's transactions, mid-transaction; later kill -9 of the broker leading "
        "the most input partitions",
        cluster_faults.broker_kill9,
        full=_size(80_000, 1000, (0, 0), 900, (0.25, 0.7)),
        short=_size(15_000, 500, (0, 0), 300, (0.25, 0.7)),
        needs_cluster=True,
    ),
    Scenario(
        "cluster-rolling-restart",
        "each broker restarted gracefully in turn under load",
        cluster_faults.rolling_restart,
        full=_size(60_000, 1000, (0, 0), 600, (0.2, 0.45, 0.7)),
        short=_size(15_000, 500, (0, 0), 300, (0.2, 0.45, 0.7)),
        needs_cluster=True,
    ),
    Scenario(
        "cluster-isr-below-min",
        "fewer in-sync replicas than min.insync.replicas for 30 s: the pipeline stalls and "
        "resumes, nothing dead-lettered or lost",
        cluster_faults.isr_below_min,
        full=_size(60_000, 1000, (0, 0), 600, (0.3,)),
        short=_size(15_000, 500, (0, 0), 300, (0.3,)),
        needs_cluster=True,
    ),
    Scenario(
        "cluster-coordinator-moves",
        "kill -9 of the broker coordinating the workers' consumer group, twice",
        cluster_faults.coordinator_moves,
        full=_size(60_000, 1000, (0, 0), 600, (0.3, 0.65)),
        short=_size(15_000, 500, (0, 0), 300, (0.3, 0.65)),
        needs_cluster=True,
    ),
    Scenario(
        "cluster-partitions-added",
        f"partitions added to {catalogue.RAW_TAG.name} under load (taken in); then to "
        f"{catalogue.CONSENT_CHANGES.name} (every worker refuses and exits, saying why)",
        cluster_faults.partitions_added,
        full=_size(40_000, 1000, (0, 0), 600, (0.4,)),
        short=_size(10_000, 500, (0, 0), 300, (0.4,)),
        needs_cluster=True,
    ),
    Scenario(
        "cluster-four-workers",
        "four workers over twelve partitions: two added, one removed, one killed and "
        "restarted, one added back, under load",
        cluster_faults.scale_four,
        full=_size(80_000, 1000, (0, 0), 900, (0.15, 0.4, 0.6, 0.8)),
        short=_size(15_000, 500, (0, 0), 300, (0.15, 0.4, 0.6, 0.8)),
        needs_cluster=True,
        partitions=12,
    ),
)
BY_NAME: Final[Mapping[str, Scenario]] = MappingProxyType(
    {s.name: s for s in (*SCENARIOS, *CLUSTER_SCENARIOS)}
)


def _race(name: str, title: str, contender: str | None) -> Scenario:
    return Scenario(
        name,
        f"{title}: revocations interleaved with events of 200 users, acknowledged probes, "
        "kill -9 of one of its two workers every 5-30 s",
        contender_race,
        full=_size(40_000, 300, (5, 30), 900),
        short=_size(4_000, 300, (6, 12), 300),
        contender=contender,
    )


CONTENDER_SCENARIOS: Final[Mapping[str, Scenario]] = MappingProxyType(
    {
        "faust_batched": _race(
            "faust-batched-race",
            "the faust_batched benchmark contender (Faust with exactly_once) in place of the "
            "pipeline",
            "faust_batched",
        ),
        "pipeline": _race("pipeline-race", "the pipeline, as the contender runs", None),
    }
)
"""The fault suite run over a benchmark contender (which of its invariants hold there), and
the same scenario on the pipeline's workers, held to every invariant."""
CONTENDER_INVARIANTS: Final = (
    "pipeline.caught_up",
    "workers.no_crash",
    "ledger.exactly_once",
    "ledger.acknowledged_in_log",
    "outputs.exactly_once",
    "no_leak.audited_decision",
    "revocation_barrier",
    "identity.as_of_production",
    "decisions.match_replay",
    "pii.canaries",
)
"""What a contender is held to: not `hops.at_most_once` (it has no internal topics),
`memberships.follow_consent` (it keeps no customer lists; the traffic has none) or the
metrics checks (it serves no `/metrics`)."""


async def run_scenario(
    scenario: Scenario,
    base: Settings,
    root: Path,
    *,
    short: bool = False,
    seed: int = 7,
    broker: LocalBroker | None = None,
    cluster: LocalCluster | None = None,
    keep: bool = False,
    events: int | None = None,
) -> ScenarioResult:
    """Run one scenario against the cluster of `base` and check it."""
    size = scenario.short if short else scenario.full
    if events is not None:
        size = Size(
            events, size.rate, size.fault_interval, size.settle_timeout_s, size.fault_points
        )
    update: dict[str, Any] = {"store": scenario.store}
    if scenario.partitions is not None:
        update["topic_partitions"] = scenario.partitions
    if scenario.needs_cluster:
        update["topic_replication"] = 3
    settings = base.model_copy(update=update)
    harness = Harness(
        scenario.name,
        settings,
        root,
        size=size,
        seed=seed,
        broker=broker,
        cluster=cluster if scenario.needs_cluster else None,
        keep=keep,
        raw_partitioner=scenario.raw_partitioner,
        contender=scenario.contender,
        poisoned=scenario.poisoned,
    )
    result = ScenarioResult(scenario.name, scenario.title, size)
    started = time.monotonic()
    try:
        await harness.start()
        await scenario.run(harness)
        await harness.check()
        if scenario.needs_cluster or scenario.local:
            harness.invariants.append(dlq_only_bad_records(harness))
        harness.notes.extend(
            f"decisions stalled at most {seconds:g}s after: {fault}"
            for fault, seconds in harness.stalls
        )
    except Exception as exc:
        log.exception("scenario %s failed to run", scenario.name)
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        await harness.close()
    result.duration_s = time.monotonic() - started
    result.load = harness.load_summary()
    result.faults = harness.faults.entries
    result.invariants = harness.invariants
    result.notes = harness.notes
    return result
