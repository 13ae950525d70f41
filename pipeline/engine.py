"""The worker's data plane: consume in batches, decide, write, commit: one transaction each.

One aiokafka consumer in the worker's group reads the raw topics and `consent.changes`,
co-partitioned (range assignment gives a member the same partition numbers of every
topic). Each batch runs in one Kafka transaction: its outputs, audit and DLQ records, the
tables' changelog records and the consumed offsets commit together or not at all, so
every input offset ends in exactly one audit or DLQ record (exactly-once).

Before a batch's events are decided, the consent view of their partitions is brought up
to the end of `consent.changes` as of that moment (the revocation barrier): a revocation
acknowledged before an event was produced is applied before that event is decided.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import KafkaError, ProducerFenced
from mode import Service

from pipeline.admin import changelog_specs, ensure_topics
from pipeline.canary import CanaryScanner
from pipeline.core.deidentify import Pseudonymizer
from pipeline.core.parse import ParseLimits
from pipeline.core.route import DESTINATION_TOPICS, Origin, Output
from pipeline.errors import PipelineError
from pipeline.kafka_config import client_options
from pipeline.metrics import Metrics
from pipeline.process import BatchStats, InputRecord, Processor, ProcessorConfig
from pipeline.settings import Settings
from pipeline.stores import RocksMemory, open_store
from pipeline.tables import Table
from pipeline.topics import CONSENT_TOPIC, RAW_TOPICS
from pipeline.writer import BatchWriter, KeyPartitioner
from schemas import codec

log = logging.getLogger(__name__)

TABLES = ("consent", "dedup", "aggregates")
LAG_INTERVAL_S = 1.0
FETCH_MAX_WAIT_MS = 100
RESTORE_BATCH = 10_000
"""Changelog records restored per store write during recovery."""
DEDUP_SWEEP_INTERVAL_S = 600.0
GC_THRESHOLD = 50_000


class BarrierTimeout(PipelineError):
    """The consent view could not catch up with `consent.changes` in time; the batch is retried."""


class Engine(Service):
    """Consumes, decides and produces for the partitions assigned to this worker."""

    def __init__(self, settings: Settings, metrics: Metrics, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.metrics = metrics
        self.group_id = settings.app_id
        self.consent_topic = settings.topic(CONSENT_TOPIC)
        self.sources = {settings.topic(name): name.split(".", 1)[1] for name in RAW_TOPICS}
        self.destinations = {d: settings.topic(t) for d, t in DESTINATION_TOPICS.items()}
        root = settings.data_dir / settings.app_id
        memory = RocksMemory(settings.rocksdb_memory_mb * 1024 * 1024)

        def store(table: str, partition: int) -> Any:
            return open_store(settings.store, root, table, partition, memory)

        self.tables = {
            name: Table(name, settings.topic(f"{settings.app_id}.{name}-changelog"), store)
            for name in TABLES
        }
        self.processor = Processor(
            ProcessorConfig(
                policy=settings.policy(),
                pseudonymizer=Pseudonymizer(settings.require_hmac_key(), settings.hmac_key_id),
                limits=ParseLimits(max_bytes=settings.max_event_bytes),
                dedup_window_s=settings.dedup_window_hours * 3600,
                aggregate_k=settings.aggregate_k,
                aggregate_grace_s=settings.aggregate_grace_seconds,
            ),
            self.tables["consent"],
            self.tables["dedup"],
            self.tables["aggregates"],
        )
        self.canaries = CanaryScanner(settings.pii_canaries)
        self._partition_counts: dict[str, int] = {}
        self._hasher = KeyPartitioner()
        self._changelogs = {table.changelog_topic for table in self.tables.values()}
        self._lock = asyncio.Lock()
        self._stopping = False
        self._partitions: set[int] = set()
        self._last_lag = 0.0
        self._last_sweep = time.monotonic()
        self._next: dict[TopicPartition, int] = {}
        self.generation = 0
        """Bumped by every rebalance; a batch fetched in an older generation is not processed."""
        self.ready = asyncio.Event()
        self.last_cycle = time.monotonic()
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.offsets: AIOKafkaConsumer | None = None

    # -- lifecycle ----------------------------------------------------------------

    async def on_start(self) -> None:
        # The tables hold many long-lived objects; the default thresholds would have the
        # cyclic collector walk all of them every few thousand allocations.
        gc.set_threshold(GC_THRESHOLD, 20, 100)
        settings = self.settings
        await ensure_topics(settings, changelog_specs(settings, TABLES))
        self.producer = AIOKafkaProducer(
            **client_options(settings),
            client_id=f"{settings.app_id}-{settings.instance_name}",
            transactional_id=f"{settings.app_id}.{settings.instance_name}",
            acks="all",
            enable_idempotence=True,
            linger_ms=0,  # batches are built whole by BatchWriter: nothing to wait for
            retry_backoff_ms=20,  # e.g. CONCURRENT_TRANSACTIONS right after a commit
            max_batch_size=256 * 1024,
            max_request_size=4 * 1024 * 1024,
        )
        self.consumer = AIOKafkaConsumer(
            **client_options(settings),
            client_id=f"{settings.app_id}-{settings.instance_name}",
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            partition_assignment_strategy=(RangePartitionAssignor,),
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_bytes=16 * 1024 * 1024,
            # A fetch that finds no new data waits this long on the broker, and partitions
            # whose buffered records run out meanwhile are not fetched again until it ends.
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        )
        # The barrier's end offsets on a connection of their own: on the consumer's, the
        # request would queue behind a fetch the broker holds for up to FETCH_MAX_WAIT_MS.
        self.offsets = AIOKafkaConsumer(
            **client_options(settings),
            client_id=f"{settings.app_id}-{settings.instance_name}-offsets",
            enable_auto_commit=False,
            isolation_level="read_committed",
        )
        await self.offsets.start()
        await self.producer.start()
        self.consumer.subscribe(
            topics=[*self.sources, self.consent_topic], listener=_Rebalance(self)
        )
        await self.consumer.start()
        log.info("engine started as %s in group %s", settings.instance_name, self.group_id)

    async def on_stop(self) -> None:
        async with self._lock:
            self._stopping = True
        if self.consumer is not None:
            await self.consumer.stop()
        if self.producer is not None:
            await self.producer.stop()
        if self.offsets is not None:
            await self.offsets.stop()
        for table in self.tables.values():
            table.close()
        log.info("engine stopped")

    @Service.task
    async def _run(self) -> None:
        consumer = self.consumer
        assert consumer is not None
        while not self.should_stop and not self._stopping:
            generation = self.generation
            batch = await consumer.getmany(
                timeout_ms=self.settings.poll_timeout_ms,
                max_records=self.settings.batch_max_records,
            )
            self.last_cycle = time.monotonic()
            async with self._lock:
                if self._stopping:
                    break
                if generation != self.generation:
                    self._refetch(batch)
                    continue
                await self._cycle(batch)

    def _refetch(self, batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        """Put back a batch fetched across a rebalance: it is read again from where it began.

        Each batch commits before the next is fetched, so a batch's first offset is the
        committed one; seeking there is right whether the fetch came before or after the
        rebalance reset the positions.
        """
        assigned = self.consumer.assignment() if self.consumer is not None else set()
        for tp, records in batch.items():
            if records and tp in assigned and self.consumer is not None:
                self.consumer.seek(tp, records[0].offset)

    # -- one batch ----------------------------------------------------------------

    async def _cycle(self, batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        now = time.time()
        monotonic = time.monotonic()
        sweep = monotonic - self._last_sweep >= DEDUP_SWEEP_INTERVAL_S
        if not batch and not sweep and not self._windows_due(now):
            self._report_lag(monotonic)
            return
        starts = {tp: records[0].offset for tp, records in batch.items() if records}
        try:
            await self._transaction(batch, now, sweep, starts)
        except ProducerFenced:
            log.error("another worker took over this worker's transactional id; stopping")
            self._stopping = True
            self._restore_after_abort(starts)
            await self.crash(PipelineError("producer fenced"))
        except (KafkaError, BarrierTimeout, OSError) as exc:
            log.warning(
                "batch failed (%s); it will be read and processed again", type(exc).__name__
            )
            await self._abort(starts)
            await asyncio.sleep(0.5)
        else:
            if sweep:
                self._last_sweep = monotonic
        self._report_lag(monotonic)

    async def _transaction(
        self,
        batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]],
        now: float,
        sweep: bool,
        starts: dict[TopicPartition, int],
    ) -> None:
        producer, consumer = self.producer, self.consumer
        assert producer is not None
        assert consumer is not None
        stats = BatchStats()
        outputs: list[Output] = []
        offsets: dict[TopicPartition, int] = {}
        raw: list[tuple[TopicPartition, ConsumerRecord[bytes, bytes]]] = []
        for tp, records in batch.items():
            if not records:
                continue
            offsets[tp] = records[-1].offset + 1
            if tp.topic == self.consent_topic:
                for record in records:
                    self._apply_consent(tp, record, now, stats, outputs)
            else:
                raw.extend((tp, record) for record in records)
        if raw:
            partitions = {tp.partition for tp, _ in raw}
            await self._barrier(partitions, now, stats, outputs, offsets, starts)
        for tp, record in raw:
            outputs.extend(
                self.processor.process_event(
                    self._input(tp, record, self.sources[tp.topic]), now, stats
                )
            )
        outputs.extend(self.processor.close_windows(now, stats))
        if sweep:
            self.processor.sweep(now)

        await producer.begin_transaction()
        writer = BatchWriter(producer, self._partition_counts, self._hasher)
        canaries = self.canaries
        for output in outputs:
            value = codec.dumps(output.record)
            if canaries:
                self._check_canaries(output, value)
            await writer.write(self.destinations[output.destination], output.key, value)
            stats.outputs[output.destination] += 1
        for table in self.tables.values():
            for partition, key, table_value in table.changelog_records():
                await writer.write(table.changelog_topic, key, table_value, partition)
        sent = await writer.flush()
        # Wait for the produce acks before committing offsets. A Kafka 3.6+ broker verifies
        # each transactional produce and offset commit with the transaction coordinator,
        # one at a time per transactional id: overlapping, one fails as NOT_ENOUGH_REPLICAS
        # or COORDINATOR_NOT_AVAILABLE and the client retries it after a backoff.
        await asyncio.gather(*(handed.future for handed in sent))
        if offsets:
            await producer.send_offsets_to_transaction(offsets, self.group_id)
        await producer.commit_transaction()
        self._next.update(offsets)
        changelog_ends: dict[str, dict[int, int]] = {}
        for handed in sent:
            if handed.topic in self._changelogs:
                ends = changelog_ends.setdefault(handed.topic, {})
                ends[handed.partition] = max(ends.get(handed.partition, 0), handed.next_offset())
        for table in self.tables.values():
            table.commit(changelog_ends.get(table.changelog_topic, {}))
        self._report(stats, time.time() - now, len(raw))

    def _check_canaries(self, output: Output, value: bytes) -> None:
        location = self.canaries.location(output.destination, output.key, value, output.record)
        if location is not None:
            self.metrics.pii_canary_hits.labels(location).inc()
            log.error("a PII canary reached %s", location)

    def _apply_consent(
        self,
        tp: TopicPartition,
        record: ConsumerRecord[bytes, bytes],
        now: float,
        stats: BatchStats,
        outputs: list[Output],
    ) -> None:
        rejected = self.processor.apply_consent(self._input(tp, record, None), now, stats)
        if rejected is not None:
            outputs.append(rejected)

    async def _barrier(
        self,
        partitions: set[int],
        now: float,
        stats: BatchStats,
        outputs: list[Output],
        offsets: dict[TopicPartition, int],
        starts: dict[TopicPartition, int],
    ) -> None:
        """Apply every consent change the cluster holds for `partitions` before deciding."""
        consumer = self.consumer
        assert consumer is not None
        started = time.monotonic()
        deadline = started + self.settings.barrier_timeout_seconds
        tps = [TopicPartition(self.consent_topic, p) for p in sorted(partitions)]
        assert self.offsets is not None
        ends = await self.offsets.end_offsets(tps)
        for tp in tps:
            while await consumer.position(tp) < ends[tp]:
                if time.monotonic() > deadline:
                    raise BarrierTimeout("consent view did not catch up")
                got = await consumer.getmany(tp, timeout_ms=100)
                for record in got.get(tp, []):
                    starts.setdefault(tp, record.offset)
                    self._apply_consent(tp, record, now, stats, outputs)
                    offsets[tp] = record.offset + 1
        self.metrics.barrier_wait_seconds.observe(time.monotonic() - started)

    def _input(
        self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes], source: str | None
    ) -> InputRecord:
        return InputRecord(
            source=source,  # type: ignore[arg-type]
            origin=Origin(tp.topic, tp.partition, record.offset),
            key=record.key,
            value=record.value,
            timestamp_ms=record.timestamp,
        )

    async def _abort(self, starts: dict[TopicPartition, int]) -> None:
        producer = self.producer
        assert producer is not None
        try:
            await producer.abort_transaction()
        except Exception:  # the transaction may never have begun, or the broker is away
            log.debug("abort_transaction failed", exc_info=True)
        self._restore_after_abort(starts)

    def _restore_after_abort(self, starts: dict[TopicPartition, int]) -> None:
        consumer = self.consumer
        assert consumer is not None
        for table in self.tables.values():
            table.abort()
        for partition in self._partitions:
            self.processor.load_aggregator(partition)
        assigned = consumer.assignment()
        for tp, offset in starts.items():
            if tp in assigned:
                consumer.seek(tp, offset)

    def _windows_due(self, now: float) -> bool:
        up_to = int(now - self.settings.aggregate_grace_seconds) // 3600 * 3600
        return any(
            up_to > aggregator.closed_before for aggregator in self.processor.aggregators.values()
        )

    # -- partitions ---------------------------------------------------------------

    async def assign(self, assigned: Iterable[TopicPartition]) -> None:
        """Take the new assignment: close what moved away, recover what is new."""
        partitions = {tp.partition for tp in assigned if tp.topic == self.consent_topic}
        for partition in self._partitions - partitions:
            for table in self.tables.values():
                table.revoke(partition)
            self.processor.drop_partition(partition)
        new = partitions - self._partitions
        started = time.monotonic()
        for partition in sorted(new):
            for table in self.tables.values():
                table.assign(partition)
        if new:
            await self._recover(new)
            for partition in new:
                self.processor.load_aggregator(partition)
        self._partitions = partitions
        gc.collect()
        gc.freeze()  # recovered state is long-lived: keep it out of later collections
        self.metrics.consent_table_entries.set(self.tables["consent"].approximate_len())
        log.info(
            "assigned partitions %s (%d recovered in %.2fs)",
            sorted(partitions),
            len(new),
            time.monotonic() - started,
        )
        self.ready.set()

    def revoke(self, revoked: Iterable[TopicPartition]) -> None:
        """Forget lag and positions of partitions leaving; their stores stay until `assign`.

        A partition handed back to this worker keeps its store and only replays the
        changelog written since its checkpoint.
        """
        for tp in revoked:
            self._next.pop(tp, None)
            with contextlib.suppress(KeyError):
                self.metrics.consumer_lag.remove(tp.topic, str(tp.partition))

    async def _recover(self, partitions: set[int]) -> None:
        """Replay each table's changelog from its local checkpoint to the end."""
        settings = self.settings
        reader = AIOKafkaConsumer(
            **client_options(settings),
            client_id=f"{settings.app_id}-{settings.instance_name}-recovery",
            enable_auto_commit=False,
            isolation_level="read_committed",
            # Modest fetches: each record becomes a Python object until it is restored.
            max_partition_fetch_bytes=1024 * 1024,
            fetch_max_bytes=8 * 1024 * 1024,
        )
        await reader.start()
        try:
            tps = {
                TopicPartition(table.changelog_topic, p): (table, p)
                for table in self.tables.values()
                for p in partitions
            }
            reader.assign(list(tps))
            ends = await reader.end_offsets(list(tps))
            for tp, (table, partition) in tps.items():
                reader.seek(tp, table.stores[partition].checkpoint())
            pending = {tp for tp in tps if await reader.position(tp) < ends[tp]}
            while pending:
                self.last_cycle = time.monotonic()  # recovering is alive, not stalled
                got = await reader.getmany(*pending, timeout_ms=500, max_records=RESTORE_BATCH)
                for tp, records in got.items():
                    table, partition = tps[tp]
                    items = {r.key: r.value for r in records if r.key is not None}
                    table.restore(partition, items, records[-1].offset + 1)
                for tp in list(pending):
                    if await reader.position(tp) >= ends[tp]:
                        pending.discard(tp)
        finally:
            await reader.stop()

    # -- metrics ------------------------------------------------------------------

    def _report(self, stats: BatchStats, seconds: float, n_events: int) -> None:
        m = self.metrics
        for source, n in stats.events_in.items():
            m.events_in.labels(source).inc(n)
        for destination, n in stats.outputs.items():
            m.events_out.labels(DESTINATION_TOPICS[destination]).inc(n)  # type: ignore[index]
        for (purpose, outcome), n in stats.decisions.items():
            m.decisions.labels(purpose, outcome).inc(n)
        for reason, n in stats.reasons.items():
            m.reasons.labels(reason).inc(n)
        for (source, reason), n in stats.dlq.items():
            m.dlq.labels(source, reason).inc(n)
        for source, n in stats.duplicates.items():
            m.duplicates.labels(source).inc(n)
        for source, n in stats.processing_errors.items():
            m.processing_errors.labels(source).inc(n)
        for source, age in stats.event_ages:
            m.event_age_seconds.labels(source).observe(age)
        for latency in stats.revocation_latencies:
            m.revocation_latency_seconds.observe(latency + seconds)
        if stats.consent_changes:
            m.consent_changes.inc(stats.consent_changes)
            m.consent_table_entries.set(self.tables["consent"].approximate_len())
        if n_events:
            for source in stats.events_in:
                m.processing_seconds.labels(source).observe(seconds)

    def _report_lag(self, monotonic: float) -> None:
        consumer = self.consumer
        if consumer is None or monotonic - self._last_lag < LAG_INTERVAL_S:
            return
        self._last_lag = monotonic
        for tp, position in self._next.items():
            highwater = consumer.highwater(tp)
            if highwater is not None:
                lag = max(0, highwater - position)
                self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Finishes the batch in flight before partitions move; recovers state for new ones."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        async with self.engine._lock:  # the batch in flight commits first
            self.engine.generation += 1
            self.engine.revoke(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        async with self.engine._lock:  # no batch runs until recovery is complete
            self.engine.generation += 1
            await self.engine.assign(assigned)
