"""The input every contender reads: topics, pre-produced traffic, and paced live traffic.

The traffic is the producer's realistic mix (`pipeline.sim.traffic`): every registered
user's consent record first, then raw events with ~1% consent churn, 3% duplicates
and 1% malformed records, keyed by subject and spread over co-partitioned topics.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from benchmarks.contenders.ceiling_fair import TOPICS as CEILING_FAIR_TOPICS
from benchmarks.contenders.common import DESTINATIONS
from pipeline import catalogue
from pipeline.kafka.admin import TopicSpec, create_topics, ensure_topics
from pipeline.settings import Settings
from pipeline.sim.stream import KafkaSink, run_traffic
from pipeline.sim.traffic import Record, TrafficConfig, TrafficGenerator

TICK_S: Final = 0.01


def bench_settings(bootstrap: str, prefix: str, partitions: int, **extra: Any) -> Settings:
    """Pipeline settings for topics under `prefix` on the cluster at `bootstrap`."""
    return Settings(
        kafka_bootstrap_servers=bootstrap,
        topic_prefix=prefix,
        topic_partitions=partitions,
        **extra,
    )


async def create_bench_topics(settings: Settings, contenders: Sequence[str]) -> None:
    """The pipeline's topics under the prefix, and each contender's own output topics."""
    await create_topics(settings)
    specs: list[TopicSpec] = []
    for name in contenders:
        if name == "ceiling":
            names = ["ceiling.out"]
        elif name == "ceiling_fair":
            names = list(CEILING_FAIR_TOPICS)
        else:
            names = [f"{name}.{catalogue.BY_DESTINATION[d].name}" for d in DESTINATIONS]
        specs.extend(
            TopicSpec(
                settings.topic_prefix + n, settings.topic_partitions, settings.topic_replication
            )
            for n in names
        )
    await ensure_topics(settings, specs)


@dataclass
class Workload:
    """What was pre-produced, as the contenders will find it."""

    prefix: str
    users: int
    seed: int
    raw_records: int
    consent_bootstrap: int
    consent_records: int
    links: int = 0
    """`identity.links` records written before the events."""
    records_by_topic: dict[str, int] = field(default_factory=dict)
    records_by_kind: dict[str, int] = field(default_factory=dict)
    mean_raw_bytes: float = 0.0
    mean_consent_bytes: float = 0.0
    produce_seconds: float = 0.0
    failures: dict[str, int] = field(default_factory=dict)
    held: list[Record] = field(default_factory=list, repr=False)
    """Live records of the same users generated but not written (`hold`)."""

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "held"}


class _SizeTally:
    """Wraps a sink's `write` and tallies record sizes by raw/consent."""

    def __init__(self, sink: KafkaSink) -> None:
        self.sink = sink
        self.bytes: Counter[str] = Counter()
        self.records: Counter[str] = Counter()

    async def write(self, records: Sequence[Record]) -> None:
        for record in records:
            kind = "raw" if record.topic.source is not None else "consent"
            self.bytes[kind] += len(record.value or b"")
            self.records[kind] += 1
        await self.sink.write(records)


async def preproduce(
    settings: Settings,
    users: int,
    events: int,
    seed: int,
    *,
    max_links: int | None = None,
    hold: int = 0,
) -> Workload:
    """Write every user's consent record and the links of their match keys (at most
    `max_links` of them), then `events` raw records, as fast as Kafka takes them; then
    generate `hold` more records of the same users, kept in `Workload.held`.

    Raises:
        KafkaUnavailable: the cluster cannot be reached.
    """
    trust_key = settings.trust_key
    generator = TrafficGenerator(
        TrafficConfig(users=users),
        seed=seed,
        trust_key=None if trust_key is None else trust_key.get_secret_value().encode(),
    )
    sink = KafkaSink(settings)
    tally = _SizeTally(sink)
    started = time.monotonic()
    await sink.start()
    try:
        links = generator.identity_bootstrap()
        bootstrap = itertools.chain(
            generator.consent_bootstrap(),
            links if max_links is None else itertools.islice(links, max_links),
        )
        while chunk := list(itertools.islice(bootstrap, 5000)):
            await tally.write(chunk)
        report = await run_traffic(generator, tally.write, count=events, bootstrap=False)
        await sink.flush()
    finally:
        await sink.stop()
    workload = Workload(
        prefix=settings.topic_prefix,
        users=users,
        seed=seed,
        raw_records=report.raw_records,
        consent_bootstrap=generator.counts["consent.bootstrap"],
        links=generator.counts["identity.bootstrap"],
        consent_records=generator.topics[catalogue.CONSENT_CHANGES.name],
        records_by_topic=dict(generator.topics),
        records_by_kind=dict(generator.counts),
        mean_raw_bytes=tally.bytes["raw"] / max(1, tally.records["raw"]),
        mean_consent_bytes=tally.bytes["consent"] / max(1, tally.records["consent"]),
        produce_seconds=time.monotonic() - started,
        failures=dict(sink.failures),
    )
    # After the counts above: they describe what was written.
    workload.held = generator.records(hold) if hold else []
    return workload


@dataclass
class LivePool:
    """Pre-generated live traffic for the latency phases: a consent bootstrap and a pool of
    records (events and their churn) replayed at a paced rate."""

    bootstrap: list[Record]
    """Every registered user's consent record, then the links of every user's match keys."""
    records: list[Record]

    @classmethod
    def generate(cls, users: int, size: int, seed: int, trust_key: bytes | None = None) -> LivePool:
        generator = TrafficGenerator(TrafficConfig(users=users), seed=seed, trust_key=trust_key)
        bootstrap = list(generator.bootstrap())
        return cls(bootstrap, generator.records(size))

    @property
    def consent_records(self) -> int:
        """How many of the bootstrap records are consent records."""
        return sum(1 for record in self.bootstrap if record.topic is catalogue.CONSENT_CHANGES)

    def split(self, n: int) -> tuple[list[Record], list[Record]]:
        """The first `n` records, and the rest."""
        return self.records[:n], self.records[n:]


async def write_records(settings: Settings, records: Sequence[Record]) -> None:
    """Write `records` to their topics under the settings' prefix and wait for every ack."""
    sink = KafkaSink(settings)
    await sink.start()
    try:
        for start in range(0, len(records), 5000):
            await sink.write(records[start : start + 5000])
        await sink.flush()
    finally:
        await sink.stop()


@dataclass
class PacedResult:
    """What a paced sender wrote: raw records and consent records, over how long."""

    raw: int
    consent: int
    seconds: float
    cycled: bool

    @property
    def raw_rate(self) -> float:
        return self.raw / self.seconds if self.seconds > 0 else 0.0


async def send_paced(
    settings: Settings, records: Sequence[Record], raw_rate: float, duration: float
) -> PacedResult:
    """Replay `records` (cycling) at `raw_rate` raw records per second for `duration` seconds.

    Consent records in the pool go along with the raw records around them, so the churn
    share stays the generator's.
    """
    sink = KafkaSink(settings, linger_s=0.002)
    await sink.start()
    raw = consent = 0
    index = 0
    cycled = False
    started = time.monotonic()
    try:
        while (elapsed := time.monotonic() - started) < duration:
            due = int(raw_rate * elapsed) + 1 - raw
            if due <= 0:
                await asyncio.sleep(TICK_S)
                continue
            chunk: list[Record] = []
            while due > 0:
                record = records[index]
                index += 1
                if index == len(records):
                    index = 0
                    cycled = True
                chunk.append(record)
                if record.topic is catalogue.CONSENT_CHANGES:
                    consent += 1
                else:
                    raw += 1
                    due -= 1
            await sink.write(chunk)
            await asyncio.sleep(0)
        await sink.flush()
    finally:
        await sink.stop()
    return PacedResult(raw, consent, time.monotonic() - started, cycled)
