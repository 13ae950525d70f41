"""`consent-pipeline produce`: write synthetic traffic to Kafka at a rate, for a count or a time.

`KafkaSink` is the fast path the generator and the benchmark use: records are already
encoded and keyed, so it builds per-partition batches itself and hands them to aiokafka
(`acks=all`, idempotent) with `send_batch`, gathering the delivery futures once enough
are in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2

from pipeline.errors import KafkaUnavailable
from pipeline.settings import Settings
from pipeline.traffic import Record, TrafficGenerator

log = logging.getLogger(__name__)

CHUNK: Final = 1000
"""Records generated and handed to Kafka per step."""
TICK_S: Final = 0.02


class KafkaSink:
    """Writes generator records to their topics; counts what Kafka did not acknowledge.

    Records are appended to one open batch per topic partition (partitioned like the
    Java client: murmur2 of the key) and handed over with `send_batch` when a batch is
    full, or `linger_s` after the last hand-over: several times faster than one `send`
    per record, which is what lets the benchmark pre-produce a million events quickly.
    """

    def __init__(
        self, settings: Settings, *, max_in_flight: int = 512, linger_s: float = 0.02
    ) -> None:
        self.settings = settings
        self.failures: Counter[str] = Counter()
        """Unacknowledged records by error type."""
        self.delivered = 0
        """Records Kafka acknowledged."""
        self._max_in_flight = max_in_flight
        self._linger_s = linger_s
        self._in_flight: list[tuple[asyncio.Future[Any], int]] = []
        self._topics: dict[str, tuple[str, list[int]]] = {}
        self._open: dict[tuple[str, int], Any] = {}
        self._handed_over = time.monotonic()
        self._kafka: AIOKafkaProducer | None = None

    async def start(self) -> None:
        """Connect.

        Raises:
            KafkaUnavailable: no bootstrap server answered.
        """
        kafka = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap_servers,
            client_id="consent-pipeline-produce",
            acks="all",
            enable_idempotence=True,
            max_batch_size=512 * 1024,
            max_request_size=4 * 1024 * 1024,
        )
        try:
            await kafka.start()
        except (KafkaError, OSError) as exc:
            with contextlib.suppress(KafkaError, OSError):
                await kafka.stop()
            raise KafkaUnavailable(
                f"cannot reach Kafka at {self.settings.kafka_bootstrap_servers} "
                f"({type(exc).__name__})"
            ) from exc
        self._kafka = kafka

    async def stop(self) -> None:
        """Wait for every delivery, then close."""
        if self._kafka is None:
            return
        try:
            await self.flush()
        finally:
            await self._kafka.stop()
            self._kafka = None

    async def write(self, records: Iterable[Record]) -> None:
        """Add `records` to their partitions' batches; waits only when too much is in flight.

        Raises:
            KafkaUnavailable: the sink is not started, or a topic does not exist.
        """
        kafka = self._kafka
        if kafka is None:
            raise KafkaUnavailable("the sink is not started")
        topics = self._topics
        open_batches = self._open
        for record in records:
            resolved = topics.get(record.topic)
            if resolved is None:
                resolved = await self._resolve(record.topic)
            topic, partitions = resolved
            key = record.key
            if key is None:
                partition = partitions[int(random.random() * len(partitions))]
            else:
                partition = partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]
            batch = open_batches.get((topic, partition))
            if batch is None:
                batch = open_batches[topic, partition] = kafka.create_batch()
            if batch.append(key=key, value=record.value, timestamp=None) is None:
                await self._send(topic, partition, batch)
                batch = open_batches[topic, partition] = kafka.create_batch()
                batch.append(key=key, value=record.value, timestamp=None)
        if time.monotonic() - self._handed_over >= self._linger_s:
            await self._send_open()
        if len(self._in_flight) >= self._max_in_flight:
            await self._settle(len(self._in_flight) // 2)  # the older half; the rest flies on

    async def flush(self) -> None:
        """Hand over every open batch and wait until each is acknowledged or failed."""
        await self._send_open()
        await self._settle(len(self._in_flight))

    async def _resolve(self, logical: str) -> tuple[str, list[int]]:
        assert self._kafka is not None
        topic = self.settings.topic(logical)
        try:
            partitions = sorted(await self._kafka.partitions_for(topic))
        except KafkaError as exc:
            raise KafkaUnavailable(f"no metadata for {topic} ({type(exc).__name__})") from exc
        if not partitions:
            raise KafkaUnavailable(f"topic {topic} does not exist; run `topics create`")
        self._topics[logical] = (topic, partitions)
        return topic, partitions

    async def _send_open(self) -> None:
        batches, self._open = self._open, {}
        for (topic, partition), batch in batches.items():
            await self._send(topic, partition, batch)
        self._handed_over = time.monotonic()

    async def _send(self, topic: str, partition: int, batch: Any) -> None:
        assert self._kafka is not None
        count = batch.record_count()
        try:
            future = await self._kafka.send_batch(batch, topic, partition=partition)
        except KafkaError as exc:
            self.failures[type(exc).__name__] += count
            return
        self._in_flight.append((future, count))

    async def _settle(self, n: int) -> None:
        settled, self._in_flight = self._in_flight[:n], self._in_flight[n:]
        outcomes = await asyncio.gather(*(f for f, _ in settled), return_exceptions=True)
        for outcome, (_, count) in zip(outcomes, settled, strict=True):
            if isinstance(outcome, BaseException):
                self.failures[type(outcome).__name__] += count
            else:
                self.delivered += count


@dataclass
class ProduceReport:
    """What a run wrote: records by kind and topic, failures, time taken."""

    seed: int
    counts: Counter[str] = field(default_factory=Counter)
    topics: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    raw_records: int = 0
    elapsed_s: float = 0.0

    @property
    def rate(self) -> float:
        """Raw records per second."""
        return self.raw_records / self.elapsed_s if self.elapsed_s > 0 else 0.0


Progress = Callable[[int], None]


async def run_traffic(
    generator: TrafficGenerator,
    write: Callable[[Sequence[Record]], Any],
    *,
    rate: float | None = None,
    count: int | None = None,
    duration: float | None = None,
    stop: asyncio.Event | None = None,
    bootstrap: bool = True,
    on_progress: Progress | None = None,
) -> ProduceReport:
    """Generate traffic and hand it to `write` (a coroutine function) until a limit is hit.

    Args:
        generator: the traffic source; its counters fill the report.
        write: receives each chunk of records; awaited.
        rate: raw records per second; None or 0 for as fast as possible.
        count: stop after this many raw records.
        duration: stop after this many seconds.
        stop: stop when set (Ctrl-C).
        bootstrap: write every registered user's consent record first.
        on_progress: told the number of raw records of each chunk written.
    """
    if bootstrap:
        batch: list[Record] = []
        for record in generator.consent_bootstrap():
            batch.append(record)
            if len(batch) >= CHUNK * 5:
                await write(batch)
                batch = []
        if batch:
            await write(batch)
    started = time.monotonic()
    sent = 0
    while not (stop is not None and stop.is_set()):
        elapsed = time.monotonic() - started
        if duration is not None and elapsed >= duration:
            break
        if count is not None and sent >= count:
            break
        n = CHUNK
        if rate:
            n = min(CHUNK, int(rate * elapsed) + 1 - sent)
            if n <= 0:
                await _sleep(TICK_S, stop)
                continue
        if count is not None:
            n = min(n, count - sent)
        await write(generator.records(n))
        sent += n
        if on_progress is not None:
            on_progress(n)
        if not rate:
            await asyncio.sleep(0)
    report = ProduceReport(
        seed=generator.seed,
        counts=Counter(generator.counts),
        topics=Counter(generator.topics),
        raw_records=sent,
        elapsed_s=time.monotonic() - started,
    )
    return report


async def _sleep(seconds: float, stop: asyncio.Event | None) -> None:
    if stop is None:
        await asyncio.sleep(seconds)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def produce(
    settings: Settings,
    generator: TrafficGenerator,
    *,
    rate: float | None = None,
    count: int | None = None,
    duration: float | None = None,
    stop: asyncio.Event | None = None,
    bootstrap: bool = True,
    on_progress: Progress | None = None,
) -> ProduceReport:
    """Write the generator's traffic to the cluster in `settings`; see `run_traffic`.

    Raises:
        KafkaUnavailable: the cluster cannot be reached.
    """
    sink = KafkaSink(settings)
    await sink.start()
    try:
        report = await run_traffic(
            generator,
            sink.write,
            rate=rate,
            count=count,
            duration=duration,
            stop=stop,
            bootstrap=bootstrap,
            on_progress=on_progress,
        )
        handed_over = time.monotonic()
        await sink.flush()
        report.elapsed_s += time.monotonic() - handed_over  # the rate counts acknowledged
    finally:
        await sink.stop()
    report.failures = Counter(sink.failures)
    return report
