"""The worker's data path: consume in batches, run the stages, commit: one transaction each.

One aiokafka consumer in the worker's group reads every input of every stage,
co-partitioned (range assignment gives a member the same partition numbers of every
topic). Each batch runs in one Kafka transaction (`pipeline.runtime.transaction`): its
outputs, the tables' changelog records and the consumed offsets commit together or not
at all, so every input offset ends in exactly one audit or DLQ record (exactly-once).
Before a stage's stream records are processed, its table inputs are caught up for their
partitions (`pipeline.runtime.barrier`); newly assigned partitions recover their tables
from the changelogs before any batch runs (`pipeline.runtime.recovery`,
`pipeline.runtime.rebalance`). The stages run in order, and a record forwarded to a
partition this worker owns is processed by its stage in the same batch; only hops to
another worker's partitions are written to the internal topics.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError, ProducerFenced
from mode import Service

from pipeline import catalogue
from pipeline.catalogue import TableName, Topic
from pipeline.core.parse import Rejected
from pipeline.core.route import Origin, Output, dlq_record
from pipeline.errors import PipelineError
from pipeline.kafka.admin import changelog_specs, ensure_topics
from pipeline.kafka.config import client_options
from pipeline.kafka.producer import Producer
from pipeline.kafka.writer import KeyPartitioner
from pipeline.runtime import transaction
from pipeline.runtime.barrier import BarrierTimeout, catch_up
from pipeline.runtime.canary import CanaryScanner
from pipeline.runtime.metrics import Metrics
from pipeline.runtime.rebalance import Generation, Rebalance
from pipeline.runtime.recovery import recover
from pipeline.runtime.reporting import BatchStats, report
from pipeline.runtime.routing import Route, assignors
from pipeline.runtime.stage import Forward, InputRecord, Stage
from pipeline.settings import Settings
from pipeline.state.stores import RocksMemory, open_store
from pipeline.state.tables import Table
from schemas import codec

log = logging.getLogger(__name__)

WRONG_PARTITION = Rejected("wrong_partition", "key: wrong_partition")
"""A table-input record on another partition than murmur2 of its key (SPEC §3)."""
LAG_INTERVAL_S = 1.0
FETCH_MAX_WAIT_MS = 20
PREFETCH_BACKOFF_S = 0.01
TOP_UP_MS = 3
"""How long a batch not yet full waits for the records its taking sets off (`take_batch`)."""
INTAKE_PAUSE_BATCHES = 2
"""The raw topics are paused while the internal topics hold more than this many batches
(`batch_max_records`) not yet processed, and resumed once they hold less than one."""
SWEEP_INTERVAL_S = 600.0
GC_THRESHOLD = 50_000
IN_PROCESS_OFFSET = -1
"""The offset of a forwarded record processed in the transaction that made it: it was never
written (`Engine._process`)."""
BARRIER_BATCHES = 10
"""A barrier folds at most this many batches' worth (`batch_max_records`) of table-input
records in one transaction; the stream records wait for the next."""
Batch = dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]


class Engine(Service):
    """Consumes, runs `stages` and produces for the partitions assigned to this worker."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        stages: Sequence[Stage],
        *,
        partition_count: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.metrics = metrics
        self.stages = tuple(stages)
        self.partition_count = partition_count or settings.topic_partitions
        """The partition count of every co-partitioned topic (tables, changelogs)."""
        self.group_id = settings.app_id
        root = settings.data_dir / settings.app_id
        memory = RocksMemory(settings.rocksdb_memory_mb * 1024 * 1024)

        def store(table: str, partition: int) -> Any:
            return open_store(settings.store, root, table, partition, memory)

        names: dict[TableName, None] = {}
        for stage in self.stages:
            names.update(dict.fromkeys(stage.tables))
        self.tables = {
            name: Table(name, settings.topic(catalogue.changelog(name)), store) for name in names
        }
        for stage in self.stages:
            stage.bind({name: self.tables[name] for name in stage.tables})
        self._owner = {settings.topic(s.partitioned_by): s for s in self.stages if s.partitioned_by}
        """Full name of a stage's `partitioned_by` topic -> the stage."""
        self._inputs: dict[str, tuple[Stage, Topic, bool]] = {}
        """Full topic name -> (its stage, its catalogue entry, whether it is a table input)."""
        for stage in self.stages:
            for topic in stage.table_inputs:
                self._inputs[settings.topic(topic)] = (stage, topic, True)
            for topic in stage.stream_inputs:
                self._inputs[settings.topic(topic)] = (stage, topic, False)
        self._names = {topic: settings.topic(topic) for s in self.stages for topic in s.outputs}
        """Catalogue entry -> full topic name of every stage output (what is forwarded)."""
        self.destinations = {d: settings.topic(t) for d, t in catalogue.BY_DESTINATION.items()}
        self._keyed_topics = (*self._names.values(), *self.destinations.values())
        """Full names of every topic a batch writes to by key (changelogs go by partition)."""
        self.canaries = CanaryScanner(settings.pii_canaries)
        self._hash = KeyPartitioner()
        self._lock = asyncio.Lock()
        self._stopping = False
        self._partitions: dict[Stage, set[int]] = {stage: set() for stage in self.stages}
        self._last_lag = 0.0
        self._last_sweep = time.monotonic()
        self._next: dict[TopicPartition, int] = {}
        self._written: dict[TopicPartition, int] = {}
        """Internal stream partitions this worker reads -> the end offset its own committed
        transactions reached there (known before any fetch sees it)."""
        self._raw: frozenset[TopicPartition] = frozenset()
        self._internal: frozenset[TopicPartition] = frozenset()
        """The assigned raw partitions, and the internal stream partitions (`_pace_intake`,
        `_in_process`)."""
        self._order = {stage: index for index, stage in enumerate(self.stages)}
        self.generation = Generation()
        """Bumped by every rebalance; a batch fetched in an older generation is not processed."""
        self.ready = asyncio.Event()
        self.last_cycle = time.monotonic()
        self.consumer: AIOKafkaConsumer | None = None
        self.producer = Producer(
            settings,
            client_id=f"{settings.app_id}-{settings.instance_name}",
            transactional_id=f"{settings.app_id}.{settings.instance_name}",
            retry_backoff_ms=20,  # e.g. CONCURRENT_TRANSACTIONS right after a commit
        )
        self.offsets: AIOKafkaConsumer | None = None
        me = Route(settings.instance_name, settings.canonical_url)
        (self.routing,) = assignors(me, settings.topic(catalogue.CONSENT_CHANGES))
        """Which worker owns each partition: for the web pages that answer from a table."""

    # -- lifecycle ----------------------------------------------------------------

    async def on_start(self) -> None:
        # The tables hold many long-lived objects; the default thresholds would have the
        # cyclic collector walk all of them every few thousand allocations.
        gc.set_threshold(GC_THRESHOLD, 20, 100)
        settings = self.settings
        await ensure_topics(settings, changelog_specs(settings, self.tables, self.partition_count))
        self.consumer = AIOKafkaConsumer(
            **client_options(settings),
            client_id=f"{settings.app_id}-{settings.instance_name}",
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            partition_assignment_strategy=(self.routing,),
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_bytes=16 * 1024 * 1024,
            # A fetch that finds no new data waits this long on the broker, and partitions
            # whose buffered records run out meanwhile are not fetched again until it ends.
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        )
        self.offsets = AIOKafkaConsumer(
            **client_options(settings),
            client_id=f"{settings.app_id}-{settings.instance_name}-offsets",
            enable_auto_commit=False,
            isolation_level="read_committed",
        )
        await self.offsets.start()
        await self.producer.start()
        listener = Rebalance(self._lock, self.generation, self.revoke, self.assign)
        self.consumer.subscribe(topics=list(self._inputs), listener=listener)
        await self.consumer.start()
        shorten_prefetch_backoff(self.consumer)
        log.info("engine started as %s in group %s", settings.instance_name, self.group_id)

    async def on_stop(self) -> None:
        async with self._lock:
            self._stopping = True
        if self.consumer is not None:
            await self.consumer.stop()
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
            generation = self.generation.value
            batch = await take_batch(
                consumer,
                limit=self.settings.batch_max_records,
                poll_timeout_ms=self.settings.poll_timeout_ms,
            )
            self.last_cycle = time.monotonic()
            async with self._lock:
                if self._stopping:
                    break
                if generation != self.generation.value:
                    self._refetch(batch)
                    continue
                await self._cycle(batch)
                await self._pace_intake()

    async def _pace_intake(self) -> None:
        """Hold the raw topics back while the later stages have a backlog.

        Every raw record goes on through the internal topics, each hop read in a later
        batch; with raw records waiting (a worker behind, or starting on a backlog),
        batches filled with them would move the backlog into the internal topics while
        few events get decided. Pausing the raw partitions lets the later stages drain
        first, so each event is decided soon after it is taken in and the internal
        topics stay short. The backlog counts what this worker's own commits wrote there
        even before a fetch reports it: counted from the ends the consumer last fetched
        alone, it lagged a batch's forwards, and the raw topics stayed open for seconds
        while tens of thousands of raw records were taken in and nothing was decided.
        """
        consumer = self.consumer
        assert consumer is not None
        pending = 0
        for tp in self._internal:
            fetched = consumer.last_stable_offset(tp) or consumer.highwater(tp)
            pending += unread(fetched, self._written.get(tp, 0), await consumer.position(tp))
        raw = self._raw
        paused = consumer.paused()
        held = pace_intake(pending, self.settings.batch_max_records, bool(paused & raw))
        if held and not paused.issuperset(raw):
            consumer.pause(*raw)
        elif not held and paused:
            consumer.resume(*[tp for tp in raw if tp in paused])

    def _note_written(self, ends: dict[str, dict[int, int]]) -> None:
        """Remember how far this worker's commits reached in the internal partitions it
        reads: the consumer learns of those records only when its next fetch returns."""
        for tp in self._internal:
            end = ends.get(tp.topic, {}).get(tp.partition)
            if end is not None and end > self._written.get(tp, 0):
                self._written[tp] = end

    def _refetch(self, batch: Batch) -> None:
        """Put back a batch fetched across a rebalance: it is read again from where it began.

        Each batch commits before the next is fetched, so a batch's first offset is the
        committed one; seeking there is right whether the fetch came before or after the
        rebalance reset the positions.
        """
        consumer = self.consumer
        assigned = consumer.assignment() if consumer is not None else set()
        for tp, records in batch.items():
            if records and tp in assigned and consumer is not None:
                consumer.seek(tp, records[0].offset)

    # -- one batch ----------------------------------------------------------------

    async def _cycle(self, batch: Batch) -> None:
        now = time.time()
        monotonic = time.monotonic()
        sweep = monotonic - self._last_sweep >= SWEEP_INTERVAL_S
        markers = await self._past_markers()
        if (
            not batch
            and not sweep
            and not markers
            and not any(stage.due(now) for stage in self.stages)
        ):
            self._report_lag(monotonic)
            return
        starts = {tp: records[0].offset for tp, records in batch.items() if records}
        try:
            await self._transaction(batch, now, sweep, starts, markers)
        except ProducerFenced:
            log.error("another worker took over this worker's transactional id; stopping")
            self._stopping = True
            self._restore_after_abort(starts)
            await self.crash(PipelineError("producer fenced"))
        except (KafkaError, BarrierTimeout, OSError) as exc:
            log.warning(
                "batch failed (%s); it will be read and processed again", type(exc).__name__
            )
            await self.producer.abort()
            self._restore_after_abort(starts)
            await asyncio.sleep(0.5)
        else:
            if sweep:
                self._last_sweep = monotonic
        self._report_lag(monotonic)

    async def _transaction(
        self,
        batch: Batch,
        now: float,
        sweep: bool,
        starts: dict[TopicPartition, int],
        markers: dict[TopicPartition, int],
    ) -> None:
        stats = BatchStats()
        outputs: list[Output | Forward] = []
        offsets: dict[TopicPartition, int] = dict(markers)
        streams: dict[Stage, list[InputRecord]] = {}
        waiting: dict[Stage, set[int]] = {}
        for tp, records in batch.items():
            if not records:
                continue
            offsets[tp] = max(offsets.get(tp, 0), records[-1].offset + 1)
            stage, topic, is_table = self._inputs[tp.topic]
            if is_table:
                for record in records:
                    outputs.extend(self._fold(stage, self._input(tp, topic, record), now, stats))
            else:
                streams.setdefault(stage, []).extend(
                    self._input(tp, topic, record) for record in records
                )
                waiting.setdefault(stage, set()).add(tp.partition)
        behind = await self._process(streams, waiting, now, stats, outputs, offsets, starts)
        deferred = self._defer(batch, behind, offsets) if behind else {}
        for stage in self.stages:
            outputs.extend(stage.tick(now, stats, sweep=sweep))

        writer = await transaction.begin(self.producer)
        await writer.prepare(self._keyed_topics)
        canaries = self.canaries
        destinations = self.destinations
        names = self._names
        for output in outputs:
            if isinstance(output, Forward):
                writer.add(names[output.topic], output.key, output.value, None, output.headers())
                stats.hops[catalogue.hop_name(output.topic)] += 1
                continue
            value = codec.dumps(output.record)
            if canaries:
                self._check_canaries(output, value)
            writer.add(destinations[output.destination], output.key, value)
            stats.outputs[output.destination] += 1
        ends = await transaction.commit(
            self.producer, writer, self.tables.values(), offsets, self.group_id
        )
        self._next.update(offsets)
        self._note_written(ends)
        consumer = self.consumer
        assert consumer is not None
        for tp, offset in deferred.items():
            consumer.seek(tp, offset)
        sizes = [size for stage in self.stages if (size := stage.table_size()) is not None]
        report(
            self.metrics,
            stats,
            time.time() - now,
            consent_entries=sizes[0] if stats.consent_changes and sizes else None,
        )

    async def _process(
        self,
        streams: dict[Stage, list[InputRecord]],
        waiting: dict[Stage, set[int]],
        now: float,
        stats: BatchStats,
        outputs: list[Output | Forward],
        offsets: dict[TopicPartition, int],
        starts: dict[TopicPartition, int],
    ) -> set[Stage]:
        """Run the stages in order over the batch's stream records; returns the stages whose
        tables could not be caught up (their records wait for a later batch).

        A record a stage forwards to a partition this worker owns, of the same or a later
        stage, is processed in this transaction instead of through its internal topic: its
        raw record's offset commits with its decision, as a hop through Kafka would leave
        it, without a produce and a fetch per hop. The next stage's barrier covers the
        partitions such records reach first; where it cannot catch up, they take their
        internal topic after all.
        """
        behind: set[Stage] = set()
        caught: dict[Stage, set[int]] = {stage: set() for stage in self.stages}
        handed: dict[Stage, list[tuple[Forward, InputRecord]]] = {}
        for index, stage in enumerate(self.stages):
            todo = streams.get(stage, [])
            partitions = waiting.get(stage, set())
            while todo or handed.get(stage):
                extra = handed.pop(stage, [])
                needed = (partitions | {record.origin.partition for _, record in extra}) - caught[
                    stage
                ]
                if needed and not await self._barrier(
                    stage, needed, now, stats, outputs, offsets, starts
                ):
                    if todo:
                        behind.add(stage)
                    outputs.extend(forward for forward, _ in extra)
                    break
                caught[stage] |= needed
                for record in (*todo, *(record for _, record in extra)):
                    for output in stage.process(record, now, stats):
                        target = self._in_process(output, index, now)
                        if target is None:
                            outputs.append(output)
                        else:
                            handed.setdefault(target[0], []).append(target[1:])
                            stats.hops_in_process[catalogue.hop_name(target[2].topic)] += 1
                todo, partitions = [], set()
        return behind

    def _in_process(
        self, output: Output | Forward, index: int, now: float
    ) -> tuple[Stage, Forward, InputRecord] | None:
        """The stage and record a forward becomes when this worker owns its partition, for
        a stage not before the one at `index`; None: it goes through its internal topic."""
        if not isinstance(output, Forward):
            return None
        name = self._names[output.topic]
        stage, topic, _ = self._inputs[name]
        if self._order[stage] < index:
            return None
        partition = self._hash(output.key) % self.partition_count
        # (name, partition) equals the TopicPartition, without making one per forward.
        if partition not in self._partitions[stage] or (name, partition) not in self._internal:
            return None
        record = InputRecord(
            topic=topic,
            origin=Origin(name, partition, IN_PROCESS_OFFSET),
            key=output.key,
            value=output.value,
            timestamp_ms=int(now * 1000),
            hop=output.hop,
            parsed=output.parsed,
        )
        return stage, output, record

    async def _barrier(
        self,
        stage: Stage,
        partitions: set[int],
        now: float,
        stats: BatchStats,
        outputs: list[Output | Forward],
        offsets: dict[TopicPartition, int],
        starts: dict[TopicPartition, int],
    ) -> bool:
        """Fold every table-input record the cluster holds for `partitions` before deciding,
        or a bounded share of them; returns whether the stage's tables are caught up."""
        if not stage.table_inputs:
            return True
        consumer, client = self.consumer, self.offsets
        assert consumer is not None
        assert client is not None
        entries = {self.settings.topic(topic): topic for topic in stage.table_inputs}

        def fold(tp: TopicPartition, record: ConsumerRecord[bytes, bytes]) -> None:
            starts.setdefault(tp, record.offset)
            outputs.extend(
                self._fold(stage, self._input(tp, entries[tp.topic], record), now, stats)
            )
            offsets[tp] = record.offset + 1

        waited, caught_up = await catch_up(
            consumer,
            client,
            [TopicPartition(name, p) for name in entries for p in partitions],
            timeout_s=self.settings.barrier_timeout_seconds,
            limit=BARRIER_BATCHES * self.settings.batch_max_records,
            on_record=fold,
        )
        self.metrics.barrier_wait_seconds.observe(waited)
        if not caught_up:
            self.metrics.barrier_deferrals.inc()
        return caught_up

    def _defer(
        self, batch: Batch, behind: set[Stage], offsets: dict[TopicPartition, int]
    ) -> dict[TopicPartition, int]:
        """Leave the stream records of the stages in `behind` for a later batch: their
        offsets are not committed and the consumer is sent back to them after the commit.
        Returns those partitions' first offsets."""
        deferred: dict[TopicPartition, int] = {}
        for tp, records in batch.items():
            stage, _, is_table = self._inputs[tp.topic]
            if records and not is_table and stage in behind:
                deferred[tp] = records[0].offset
                offsets.pop(tp, None)
        return deferred

    async def _past_markers(self) -> dict[TopicPartition, int]:
        """Positions of input partitions that moved past what this worker committed.

        Transactional producers (the stages, for the internal topics; any producer of an
        input that uses transactions) write a commit marker after a transaction's records,
        at an offset of its own: committed at its last record + 1, a partition would stay
        one record behind for good (and its lag with it). The consumer's position skips
        the markers it read and never passes a record it has not returned, so committing
        it where it is ahead loses nothing.
        """
        consumer = self.consumer
        assert consumer is not None
        ahead: dict[TopicPartition, int] = {}
        for tp, committed in self._next.items():
            position = await consumer.position(tp)
            if position > committed:
                ahead[tp] = position
        return ahead

    def _fold(
        self, stage: Stage, record: InputRecord, now: float, stats: BatchStats
    ) -> list[Output]:
        """Fold a table-input record, unless it sits on another partition than its key's."""
        key = record.key
        if (
            key is not None
            and record.topic.partitioning == "murmur2"
            and self._hash(key) % self.partition_count != record.origin.partition
        ):
            stats.wrong_partition[record.topic.name] += 1
            stats.dlq[_table_source(record.topic), WRONG_PARTITION.reason] += 1
            log.warning("a %s record is on the wrong partition", record.topic.name)
            return [
                dlq_record(
                    WRONG_PARTITION,
                    data=record.value,
                    key=key,
                    origin=record.origin,
                    received_at=record.timestamp_ms / 1000,
                )
            ]
        return stage.fold(record, now, stats)

    def _input(
        self, tp: TopicPartition, topic: Topic, record: ConsumerRecord[bytes, bytes]
    ) -> InputRecord:
        return InputRecord(
            topic=topic,
            origin=Origin(tp.topic, tp.partition, record.offset),
            key=record.key,
            value=record.value,
            timestamp_ms=record.timestamp,
            headers=record.headers,
        )

    def _check_canaries(self, output: Output, value: bytes) -> None:
        location = self.canaries.location(output.destination, output.key, value, output.record)
        if location is not None:
            self.metrics.pii_canary_hits.labels(location).inc()
            log.error("a PII canary reached %s", location)

    def _restore_after_abort(self, starts: dict[TopicPartition, int]) -> None:
        consumer = self.consumer
        assert consumer is not None
        transaction.abort(self.tables.values())
        for stage in self.stages:
            stage.aborted(self._partitions[stage])
        assigned = consumer.assignment()
        for tp, offset in starts.items():
            if tp in assigned:
                consumer.seek(tp, offset)

    # -- partitions ---------------------------------------------------------------

    async def assign(self, assigned: Iterable[TopicPartition]) -> None:
        """Take the new assignment: close what moved away, recover what is new."""
        assigned = list(assigned)
        started = time.monotonic()
        recovered = 0
        self._classify(assigned)
        for stage in self.stages:
            owned = {tp.partition for tp in assigned if self._owner.get(tp.topic) is stage}
            tables = [self.tables[name] for name in stage.tables]
            gone, new = self._partitions[stage] - owned, owned - self._partitions[stage]
            for partition in gone:
                for table in tables:
                    table.revoke(partition)
            stage.revoked(gone)
            for partition in sorted(new):
                for table in tables:
                    table.assign(partition)
            if new and tables:
                await recover(self.settings, tables, new, alive=self._alive)
            stage.assigned(new, self.partition_count)
            self._partitions[stage] = owned
            recovered += len(new)
        gc.collect()
        gc.freeze()  # recovered state is long-lived: keep it out of later collections
        for stage in self.stages:
            size = stage.table_size()
            if size is not None:
                self.metrics.consent_table_entries.set(size)
        log.info(
            "assigned partitions %s (%d recovered in %.2fs)",
            sorted({tp.partition for tp in assigned}),
            recovered,
            time.monotonic() - started,
        )
        self.ready.set()

    def _classify(self, assigned: list[TopicPartition]) -> None:
        """Sort the assignment into the raw partitions and the internal stream ones."""
        raw, internal = [], []
        for tp in assigned:
            _, topic, is_table = self._inputs[tp.topic]
            if topic.source is not None:
                raw.append(tp)
            elif not is_table:
                internal.append(tp)
        self._raw, self._internal = frozenset(raw), frozenset(internal)
        self._written = {tp: end for tp, end in self._written.items() if tp in self._internal}

    def revoke(self, revoked: Iterable[TopicPartition]) -> None:
        """Forget lag and positions of partitions leaving; their stores stay until `assign`.

        A partition handed back to this worker keeps its store and only replays the
        changelog written since its checkpoint.
        """
        self.routing.forget()
        for tp in revoked:
            self._next.pop(tp, None)
            with contextlib.suppress(KeyError):
                self.metrics.consumer_lag.remove(tp.topic, str(tp.partition))

    def owned(self, stage: Stage) -> frozenset[int]:
        """The partitions whose tables `stage` holds, recovered."""
        return frozenset(self._partitions.get(stage, ()))

    async def folded_to(self, tp: TopicPartition) -> int:
        """The next offset of an input partition that a batch will process: every record
        before it is in the committed tables."""
        position = self._next.get(tp)
        if position is not None:
            return position
        consumer = self.consumer
        committed = None if consumer is None else await consumer.committed(tp)
        return committed or 0

    def _alive(self) -> None:
        self.last_cycle = time.monotonic()  # recovering is alive, not stalled

    # -- lag ----------------------------------------------------------------------

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


def unread(fetched_end: int | None, written_end: int, position: int) -> int:
    """Records of an internal partition not yet read at `position`: up to the end its last
    fetch reported or, when further, the end this worker's own commits reached."""
    return max(0, max(fetched_end or 0, written_end) - position)


async def take_batch(
    consumer: AIOKafkaConsumer, *, limit: int, poll_timeout_ms: int, top_up_ms: int = TOP_UP_MS
) -> Batch:
    """The next batch, of at most `limit` records: what the consumer holds, topped up with
    what reached the broker while the previous batch ran.

    aiokafka fetches a partition again only once its buffered records are taken, so what
    it holds at the start of a batch is what one fetch brought early in the previous
    batch; the records that arrived after that fetch wait on the broker. Taking the held
    records sets off the fetch that finds them there and returns at once: a batch not yet
    full waits up to `top_up_ms` for it, so a record is decided in the batch after the
    one it arrived during, not in the one after that.
    """
    batch: Batch = await consumer.getmany(timeout_ms=poll_timeout_ms, max_records=limit)
    taken = sum(len(records) for records in batch.values())
    if not taken or taken >= limit:
        return batch
    more: Batch = await consumer.getmany(timeout_ms=top_up_ms, max_records=limit - taken)
    for tp, records in more.items():
        batch.setdefault(tp, []).extend(records)
    return batch


def pace_intake(pending: int, batch_max_records: int, held: bool) -> bool:
    """Whether the raw topics should be held back: `pending` internal records are not yet
    processed; `held` says whether they are now (between one batch and two, they stay as
    they are)."""
    if pending > INTAKE_PAUSE_BATCHES * batch_max_records:
        return True
    if pending < batch_max_records:
        return False
    return held


def shorten_prefetch_backoff(consumer: AIOKafkaConsumer) -> bool:
    """Let the consumer fetch again 10 ms after a response, not 100 ms; returns whether it
    could.

    aiokafka sends no fetch to a broker while a partition it leads still holds records the
    application has not taken, for up to its fetcher's `prefetch_backoff` (0.1 s; not an
    option of `AIOKafkaConsumer`). A batch takes at most `batch_max_records` and leaves
    the rest buffered, so the records a batch writes to the internal topics, and the
    consent changes a barrier waits for, would each wait up to 0.1 s more for their fetch.
    The pinned aiokafka keeps the value on the consumer's fetcher (`tests/integration/
    test_barrier.py` checks it is still there).
    """
    fetcher = getattr(consumer, "_fetcher", None)
    if fetcher is None or not hasattr(fetcher, "_prefetch_backoff"):
        log.warning("aiokafka's fetcher has no prefetch backoff to shorten")
        return False
    fetcher._prefetch_backoff = PREFETCH_BACKOFF_S
    return True


def _table_source(topic: Topic) -> str:
    """The DLQ metric's source label of a table input."""
    return "identity" if topic is catalogue.IDENTITY_LINKS else "consent"
