"""The suite's load: synthetic traffic, canary events and poison pills, written with `acks=all`.

`LoadSink` writes records the way a tag or SDK backend would (idempotent, `acks=all`),
remembers the position of every record Kafka acknowledged, and sends again whatever was
not acknowledged (a broker restart), with a fresh producer when the old one gave up. A
record sent twice that way is two inputs, each to be accounted for: the ledger counts
what is in the log, and the producer's acknowledgements must all be found there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2

from pipeline.errors import KafkaUnavailable
from pipeline.kafka.producer import Producer
from pipeline.settings import Settings
from pipeline.sim.traffic import Record, TrafficGenerator
from tests.chaos.pii import CanarySet

log = logging.getLogger(__name__)

CHUNK: Final = 500
"""Generator records per step of the load."""
RETRY_PAUSE_S: Final = 1.0


@dataclass
class Acknowledged:
    """What Kafka acknowledged: offset ranges per (topic, partition), and what never was."""

    ranges: dict[tuple[str, int], list[tuple[int, int]]] = field(default_factory=dict)
    """(base offset, record count) of every acknowledged batch."""
    resent: int = 0
    """Records sent again after a failed delivery."""
    failures: Counter[str] = field(default_factory=Counter)
    """Failed deliveries by error type (each resent)."""
    given_up: int = 0
    """Records never acknowledged, even after resending."""

    @property
    def count(self) -> int:
        return sum(n for ranges in self.ranges.values() for _, n in ranges)

    def offsets(self) -> Iterator[tuple[str, int, int]]:
        """(topic, partition, offset) of every acknowledged record."""
        for (topic, partition), ranges in self.ranges.items():
            for base, n in ranges:
                for offset in range(base, base + n):
                    yield topic, partition, offset


@dataclass
class _Pending:
    future: asyncio.Future[Any]
    topic: str
    partition: int
    records: list[Record]


class LoadSink:
    """Writes records to their (prefixed) topics; keeps what Kafka acknowledged."""

    def __init__(
        self,
        settings: Settings,
        *,
        seed: int = 0,
        max_in_flight: int = 64,
        give_up_after_s: float = 300.0,
        raw_partitioner: str = "murmur2",
    ) -> None:
        """`raw_partitioner`: `crc32` writes the raw topics as librdkafka's default
        partitioner does (CRC32 of the key), the others always with murmur2."""
        self.settings = settings
        self.raw_partitioner = raw_partitioner
        self.acknowledged = Acknowledged()
        self._rng = random.Random(seed)
        self._max_in_flight = max_in_flight
        self._give_up_after_s = give_up_after_s
        self._kafka: Producer | None = None
        self._partitions: dict[str, list[int]] = {}
        self._in_flight: list[_Pending] = []
        self._retry: list[Record] = []
        self._failing_since: float | None = None

    async def start(self) -> None:
        kafka = Producer(
            self.settings, client_id="consent-pipeline-chaos-load", request_timeout_ms=20_000
        )
        await kafka.start()
        self._kafka = kafka

    async def stop(self) -> None:
        try:
            await self.flush()
        finally:
            if self._kafka is not None:
                await self._kafka.stop()
                self._kafka = None

    async def write(self, records: Sequence[Record]) -> None:
        """Hand `records` to Kafka; waits only when too many batches are in flight."""
        batches: dict[tuple[str, int], tuple[Any, list[Record]]] = {}
        kafka = (await self._producer()).kafka
        for record in records:
            topic = self.settings.topic(record.topic)
            partitions = self._partitions.get(topic)
            if partitions is None:
                partitions = self._partitions[topic] = await self._partitions_of(kafka, topic)
            if record.key is None:
                partition = partitions[int(self._rng.random() * len(partitions))]
            elif self.raw_partitioner == "crc32" and record.topic.source is not None:
                partition = partitions[zlib.crc32(record.key) % len(partitions)]
            else:
                partition = partitions[(murmur2(record.key) & 0x7FFFFFFF) % len(partitions)]
            batch, members = batches.get((topic, partition)) or (kafka.create_batch(), [])
            append = batch.append
            if (
                append(
                    key=record.key, value=record.value, timestamp=None, headers=list(record.headers)
                )
                is None
            ):
                await self._send(topic, partition, batch, members)
                batch, members = kafka.create_batch(), []
                batch.append(
                    key=record.key, value=record.value, timestamp=None, headers=list(record.headers)
                )
            members.append(record)
            batches[topic, partition] = (batch, members)
        for (topic, partition), (batch, members) in batches.items():
            await self._send(topic, partition, batch, members)
        if len(self._in_flight) >= self._max_in_flight:
            await self._settle(len(self._in_flight) // 2)

    async def forget_partitions(self) -> None:
        """Look every topic's partitions up again (partitions were added)."""
        self._partitions.clear()
        if self._kafka is not None:
            await self._kafka.kafka.client.force_metadata_update()

    async def _partitions_of(self, kafka: Any, topic: str) -> list[int]:
        """The partitions of `topic`, waiting a little for a topic created a moment ago.

        Raises:
            KafkaUnavailable: no metadata for the topic in time.
        """
        for _ in range(30):
            try:
                return sorted(await kafka.partitions_for(topic))
            except KafkaError as exc:
                log.info("load: no metadata for a topic yet (%s)", type(exc).__name__)
                await asyncio.sleep(RETRY_PAUSE_S)
        raise KafkaUnavailable(f"no metadata for {topic}")

    async def flush(self) -> None:
        """Wait until every record is acknowledged, resending failures; gives up eventually."""
        while self._in_flight or self._retry:
            await self._settle(len(self._in_flight))

    async def _send(self, topic: str, partition: int, batch: Any, records: list[Record]) -> None:
        if not records:
            return
        assert self._kafka is not None
        try:
            future = await self._kafka.kafka.send_batch(batch, topic, partition=partition)
        except (KafkaError, OSError) as exc:
            self._failed(type(exc).__name__, records)
            return
        self._in_flight.append(_Pending(future, topic, partition, records))

    async def _settle(self, n: int) -> None:
        settled, self._in_flight = self._in_flight[:n], self._in_flight[n:]
        outcomes = await asyncio.gather(*(p.future for p in settled), return_exceptions=True)
        for outcome, pending in zip(outcomes, settled, strict=True):
            if isinstance(outcome, BaseException):
                self._failed(type(outcome).__name__, pending.records)
            else:
                key = (pending.topic, pending.partition)
                self.acknowledged.ranges.setdefault(key, []).append(
                    (outcome.offset, len(pending.records))
                )
                self._failing_since = None
        if self._retry:
            await self._resend()

    def _failed(self, error: str, records: list[Record]) -> None:
        self.acknowledged.failures[error] += len(records)
        self._retry.extend(records)
        if self._failing_since is None:
            self._failing_since = time.monotonic()

    async def _resend(self) -> None:
        """Send the failed records again with a fresh producer, once the in-flight settled."""
        if self._in_flight:
            return
        retry, self._retry = self._retry, []
        if (
            self._failing_since is not None
            and time.monotonic() - self._failing_since > self._give_up_after_s
        ):
            self.acknowledged.given_up += len(retry)
            log.error("load: %d records never acknowledged; giving up", len(retry))
            return
        await asyncio.sleep(RETRY_PAUSE_S)
        await self._restart_producer()
        if self._kafka is None:
            self._retry = retry
            return
        self.acknowledged.resent += len(retry)
        await self.write(retry)

    async def _producer(self) -> Producer:
        """The producer, reconnecting while the cluster is away.

        Raises:
            KafkaUnavailable: no connection within the give-up time.
        """
        deadline = time.monotonic() + self._give_up_after_s
        while self._kafka is None:
            if time.monotonic() > deadline:
                raise KafkaUnavailable("the load cannot reach Kafka")
            await asyncio.sleep(RETRY_PAUSE_S)
            await self._restart_producer()
        return self._kafka

    async def _restart_producer(self) -> None:
        old, self._kafka = self._kafka, None
        if old is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(old.stop(), 30)
        try:
            await self.start()
        except KafkaUnavailable as exc:
            log.warning("load: cannot reconnect yet (%s)", exc)
            self._kafka = None


@dataclass
class LoadStats:
    """What the load wrote, by kind and topic, and how far it is."""

    planned: int = 0
    """Raw records the load will write (generator records, pills and canary events)."""
    written: int = 0
    """Raw records handed to Kafka so far."""
    kinds: Counter[str] = field(default_factory=Counter)
    topics: Counter[str] = field(default_factory=Counter)
    users: int = 0
    elapsed_s: float = 0.0
    done: bool = False

    @property
    def progress(self) -> float:
        """Share of the planned raw records written (0 until a plan is expected)."""
        return self.written / self.planned if self.planned else 0.0

    def expect(self, plan: LoadPlan) -> None:
        """Count `plan` in before it starts, so progress is right from the first moment."""
        self.planned += plan.raw_records
        self.users += plan.generator.config.users

    def to_dict(self) -> dict[str, Any]:
        return {
            "raw_records": self.written,
            "users": self.users,
            "elapsed_s": round(self.elapsed_s, 1),
            "by_kind": dict(sorted(self.kinds.items())),
            "by_topic": dict(sorted(self.topics.items())),
        }


@dataclass
class LoadPlan:
    """A stream of record chunks: consent bootstrap, then traffic with canaries and pills mixed in.

    Args:
        generator: the synthetic traffic (its users get a consent record first).
        events: generator raw records to write (consent churn comes on top).
        canaries: canary users and events; `canary_share` of raw records are theirs.
        pills: poison pills, reused in turn; `pill_share` of raw records are pills.
    """

    generator: TrafficGenerator
    events: int
    canaries: CanarySet | None = None
    canary_share: float = 0.005
    pills: Sequence[Record] = ()
    pill_share: float = 0.0
    seed: int = 0
    bootstrap: bool = True

    @property
    def raw_records(self) -> int:
        extra = self.canary_share if self.canaries is not None else 0.0
        extra += self.pill_share if self.pills else 0.0
        return self.events + round(self.events * extra)

    def chunks(self) -> Iterator[list[Record]]:
        rng = random.Random(self.seed)
        if self.bootstrap:
            first = list(self.generator.bootstrap())
            if self.canaries is not None:
                first.extend(self.canaries.consent_records())
                first.extend(self.canaries.link_records())
            for start in range(0, len(first), CHUNK * 10):
                yield first[start : start + CHUNK * 10]
        carry = {"canary": 0.0, "pill": 0.0}
        pill_index = 0
        planned = self.raw_records
        sent_extra = 0
        for start in range(0, self.events, CHUNK):
            n = min(CHUNK, self.events - start)
            chunk = self.generator.records(n)
            extra: list[Record] = []
            if self.canaries is not None:
                carry["canary"] += n * self.canary_share
                while carry["canary"] >= 1:
                    carry["canary"] -= 1
                    extra.append(self.canaries.event(rng))
            if self.pills:
                carry["pill"] += n * self.pill_share
                while carry["pill"] >= 1:
                    carry["pill"] -= 1
                    extra.append(self.pills[pill_index % len(self.pills)])
                    pill_index += 1
            last = start + n >= self.events
            if last:  # rounding: make the extras add up to the plan exactly
                missing = planned - self.events - sent_extra - len(extra)
                if missing > 0 and self.canaries is not None:
                    extra.extend(self.canaries.event(rng) for _ in range(missing))
                elif missing > 0 and self.pills:
                    extra.extend(
                        self.pills[(pill_index + i) % len(self.pills)] for i in range(missing)
                    )
                elif missing < 0:
                    extra = extra[:missing]
            sent_extra += len(extra)
            for record in extra:
                chunk.insert(int(rng.random() * (len(chunk) + 1)), record)
            yield chunk


async def drive(
    sink: LoadSink,
    plan: LoadPlan,
    stats: LoadStats,
    *,
    rate: float | None = None,
    on_chunk: Callable[[LoadStats], None] | None = None,
) -> LoadStats:
    """Write `plan` through `sink` at `rate` raw records per second (None: as fast as possible).

    `stats` must already expect the plan (`LoadStats.expect`).
    """
    started = time.monotonic()
    sent_at_start = stats.written
    for chunk in plan.chunks():
        raw = sum(1 for record in chunk if record.topic.source is not None)
        if rate:
            due = started + (stats.written - sent_at_start) / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        await sink.write(chunk)
        stats.written += raw
        stats.kinds.update(record.kind for record in chunk)
        stats.topics.update(record.topic.name for record in chunk)
        if on_chunk is not None:
            on_chunk(stats)
        await asyncio.sleep(0)
    await sink.flush()
    stats.elapsed_s += time.monotonic() - started
    return stats
