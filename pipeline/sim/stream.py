"""`consent-pipeline produce`: stream synthetic traffic to Kafka at a rate, for a count or a time.

`KafkaSink` is the fast path the generator and the benchmark use: records are already
encoded and keyed, so it builds per-partition batches (the producer's `writer`) and hands
them over whole, gathering the delivery futures once enough are in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from aiokafka.errors import KafkaError, UnknownTopicOrPartitionError

from pipeline.errors import KafkaUnavailable
from pipeline.kafka.producer import Producer
from pipeline.kafka.writer import BatchWriter, Sent
from pipeline.settings import Settings
from pipeline.sim.traffic import Record, TrafficGenerator

log = logging.getLogger(__name__)

CHUNK: Final = 1000
"""Records generated and handed to Kafka per step."""
TICK_S: Final = 0.02


class KafkaSink:
    """Writes generator records to their topics; counts what Kafka did not acknowledge.

    Records go through a `BatchWriter` (one open batch per topic partition, partitioned
    like the Java client: murmur2 of the key) handed over when a batch is full, or
    `linger_s` after the last hand-over: several times faster than one `send` per record,
    which is what lets the benchmark pre-produce a million events quickly.
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
        self._in_flight: list[Sent] = []
        self._writer: BatchWriter | None = None
        self._handed_over = time.monotonic()
        self._producer = Producer(
            settings, client_id="consent-pipeline-produce", max_batch_size=512 * 1024
        )

    async def start(self) -> None:
        """Connect.

        Raises:
            KafkaUnavailable: no bootstrap server answered.
        """
        await self._producer.start()
        self._writer = self._new_writer()

    async def stop(self) -> None:
        """Wait for every delivery, then close."""
        if not self._producer.started:
            return
        try:
            await self.flush()
        finally:
            await self._producer.stop()
            self._writer = None

    async def write(self, records: Iterable[Record]) -> None:
        """Add `records` to their partitions' batches; waits only when too much is in flight.

        Raises:
            KafkaUnavailable: the sink is not started, or a topic does not exist.
        """
        writer = self._writer
        if writer is None:
            raise KafkaUnavailable("the sink is not started")
        topic = self.settings.topic
        try:
            for record in records:
                await writer.write(
                    topic(record.topic), record.key, record.value, None, record.headers
                )
        except UnknownTopicOrPartitionError as exc:
            raise KafkaUnavailable("a topic does not exist; run `topics create`") from exc
        except KafkaError as exc:
            raise KafkaUnavailable(f"no metadata for a topic ({type(exc).__name__})") from exc
        if time.monotonic() - self._handed_over >= self._linger_s:
            await self._hand_over()
        if len(self._in_flight) >= self._max_in_flight:
            await self._settle(len(self._in_flight) // 2)  # the older half; the rest flies on

    async def flush(self) -> None:
        """Hand over every open batch and wait until each is acknowledged or failed."""
        await self._hand_over()
        await self._settle(len(self._in_flight))

    def _new_writer(self) -> BatchWriter:
        return self._producer.writer(tolerate_errors=True)

    async def _hand_over(self) -> None:
        if self._writer is None:
            return
        writer, self._writer = self._writer, self._new_writer()
        self._in_flight.extend(await writer.flush())
        self.failures.update(writer.failed)
        self._handed_over = time.monotonic()

    async def _settle(self, n: int) -> None:
        settled, self._in_flight = self._in_flight[:n], self._in_flight[n:]
        outcomes = await asyncio.gather(*(s.future for s in settled), return_exceptions=True)
        for outcome, sent in zip(outcomes, settled, strict=True):
            if isinstance(outcome, BaseException):
                self.failures[type(outcome).__name__] += sent.records
            else:
                self.delivered += sent.records


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
        for record in generator.bootstrap():
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
