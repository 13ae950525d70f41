"""The worker's data path: consume in batches, run the stages, commit: one transaction each.

One aiokafka consumer in the worker's group reads every input of every stage,
co-partitioned (range assignment gives a member the same partition numbers of every
topic). Each batch runs in one Kafka transaction (`pipeline.runtime.transaction`): its
outputs, the tables' changelog records and the consumed offsets commit together or not
at all, so every input offset ends in exactly one audit or DLQ record (exactly-once).
Before a stage's stream records are processed, its table inputs are caught up for their
partitions (`pipeline.runtime.barrier`). The stages run in order, and a record forwarded
to a partition this worker owns is processed by its stage in the same batch; only hops to
another worker's partitions are written to the internal topics.

Each transaction commits its offsets as the consumer group member and generation the
worker's partitions were assigned to (KIP-447, `pipeline.kafka.group`), so a worker the
group has dropped can never commit again: its transaction is aborted, and nothing it did
after losing its partitions is kept. Every transaction carries an offset of each table
partition it may write (`_fencing`), so a new owner that fetches its committed offsets with
`require_stable` waits for any transaction of the previous owner that touched its state.
Before each batch the worker checks that it is still that member (`Membership`). Every
assignment, including partitions held before, is recovered from the changelogs to their
committed end in the main loop, outside the rebalance callback (`_recover_pending`), and
nothing is processed until it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError, ProducerFenced
from mode import Service

from pipeline import catalogue
from pipeline.catalogue import TableName, Topic
from pipeline.core.parse import Rejected
from pipeline.core.route import Origin, Output, dlq_record
from pipeline.errors import PipelineError, StoreLocked, TopicLayoutError, WorkerFault, where
from pipeline.kafka.admin import changelog_specs, ensure_topics
from pipeline.kafka.config import client_options
from pipeline.kafka.group import (
    MemberFenced,
    OffsetsUnstable,
    client_of,
    fetch_stable_offsets,
    require_fencing_support,
)
from pipeline.kafka.producer import Producer
from pipeline.kafka.writer import KeyPartitioner
from pipeline.runtime import transaction
from pipeline.runtime.barrier import BarrierTimeout, catch_up
from pipeline.runtime.canary import CanaryScanner
from pipeline.runtime.isolation import Position, RecordsRaised, Suspects
from pipeline.runtime.logs import quiet_expected_stops
from pipeline.runtime.membership import CONFIRM_AFTER_S, Membership, Phase
from pipeline.runtime.metrics import Metrics
from pipeline.runtime.rebalance import Generation, Rebalance
from pipeline.runtime.recovery import RecoveryInterrupted, RecoveryStalled, recover
from pipeline.runtime.reporting import BatchStats, report
from pipeline.runtime.routing import Route, assignors
from pipeline.runtime.stage import Forward, InputRecord, Stage
from pipeline.settings import Settings
from pipeline.state.folder import StateFolder
from pipeline.state.stores import RocksMemory, Store, StoreCorrupted, open_store
from pipeline.state.tables import Table
from schemas import codec

log = logging.getLogger(__name__)

WRONG_PARTITION = Rejected("wrong_partition", "key: wrong_partition")
"""A table-input record on another partition than murmur2 of its key."""
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
WAIT_S = 0.1
"""How long the loop waits before it looks again while it may not process."""
RETRY_RECOVERY_S = 1.0
STOP_WAIT_S = 30.0
"""How long stopping waits for the batch in flight before it closes the clients anyway."""
ABORT_TIMEOUT_S = 15.0
FAULT_RETRIES = 5
FAULT_BACKOFF_MAX_S = 30.0
"""A worker fault is retried after 1, 2, 4, 8 and 16 s, then the worker exits."""
LOCK_WAIT_S = 30.0
"""How long a store whose lock another process holds is waited for."""
LOCK_RETRY_S = 0.5
FENCED_WINDOW_S = 300.0
FENCED_MAX = 3
"""More fenced producers than this within `FENCED_WINDOW_S`: another process has the id."""
METADATA_MAX_AGE_MS = 30_000
MAX_POLL_INTERVAL_MS = 900_000
"""How long the consumer may go without taking records before it leaves its group: long
enough for a large recovery, which takes none (`/healthz` reports a loop that stalls)."""
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
        folder: StateFolder | None = None,
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
        self.folder = folder or StateFolder(root)
        """The lock on the state folder, held while the worker runs (RocksDB stores only)."""
        memory = RocksMemory(settings.rocksdb_memory_mb * 1024 * 1024)

        def store(table: str, partition: int, empty: bool) -> Store:
            return open_store(settings.store, root, table, partition, memory, empty=empty)

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
        self._held: dict[Stage, set[int]] = {stage: set() for stage in self.stages}
        """Partitions whose stores are open: those of the latest assignment."""
        self._pending: list[TopicPartition] | None = None
        """An assignment not yet recovered: nothing is processed until it is."""
        self._fencing: frozenset[TopicPartition] = frozenset()
        """The table partitions this worker owns, by their stage's `partitioned_by` topic:
        every transaction commits an offset of each, so that a new owner's stable offset
        fetch waits for any transaction of this worker that may have written their state."""
        self.generation = Generation()
        """Bumped by every rebalance; a batch fetched in an older generation is not processed."""
        self.phase: Phase = "starting"
        self._out_since: float | None = None
        """When this worker last found itself out of its group (None: it is a member)."""
        self.membership: Membership | None = None
        self._listener: Rebalance | None = None
        self._layout_error: str | None = None
        """Set when partitions were added to a co-partitioned topic: the worker stops."""
        self.last_cycle = time.monotonic()
        self.consumer: AIOKafkaConsumer | None = None
        self.transactional_id = f"{settings.app_id}.{settings.instance_name}"
        self.producer = self._new_producer()
        self._fenced_at: list[float] = []
        self._assigned: list[TopicPartition] = []
        self._faults = 0
        """Worker faults since the last committed batch (`_stand_down`)."""
        self.fault: str | None = None
        """The worker fault it stands down for, as `/ready` reports it."""
        self._rebuild: set[tuple[str, int]] = set()
        """Stores found corrupt, to be rebuilt from their changelogs when opened again."""
        self._suspects = Suspects()
        """Records that raised in an aborted batch, to be taken again alone (`isolation`)."""
        self._raised: list[Position] = []
        """Consumed records whose processing raised in the batch in flight."""
        self._roots: dict[int, Origin] = {}
        """A record handed over in process (by id) -> the consumed record it comes from."""
        """When the producer was last fenced and replaced (`_replace_producer`)."""
        self.batch_deadline_s = settings.transaction_timeout_seconds - 5
        """A batch not committed in this time is aborted, before its transaction times out."""
        self.offsets: AIOKafkaConsumer | None = None
        me = Route(settings.instance_name, settings.canonical_url)
        (self.routing,) = assignors(me, settings.topic(catalogue.CONSENT_CHANGES))
        """Which worker owns each partition: for the web pages that answer from a table."""

    def _new_producer(self) -> Producer:
        settings = self.settings
        return Producer(
            settings,
            client_id=f"{settings.app_id}-{settings.instance_name}",
            transactional_id=self.transactional_id,
            transaction_timeout_ms=int(settings.transaction_timeout_seconds * 1000),
            retry_backoff_ms=20,  # e.g. CONCURRENT_TRANSACTIONS right after a commit
        )

    # -- lifecycle ----------------------------------------------------------------

    async def on_start(self) -> None:
        # The tables hold many long-lived objects; the default thresholds would have the
        # cyclic collector walk all of them every few thousand allocations.
        gc.set_threshold(GC_THRESHOLD, 20, 100)
        quiet_expected_stops()
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
            max_poll_interval_ms=MAX_POLL_INTERVAL_MS,
            # Partitions added to a topic are noticed this soon (the group then rebalances,
            # and `assign` refuses co-partitioned topics whose count changed).
            metadata_max_age_ms=METADATA_MAX_AGE_MS,
        )
        self.offsets = AIOKafkaConsumer(
            **client_options(settings),
            client_id=f"{settings.app_id}-{settings.instance_name}-offsets",
            enable_auto_commit=False,
            isolation_level="read_committed",
        )
        await self.offsets.start()
        await require_fencing_support(client_of(self.offsets))
        await self.producer.start()
        self.membership = Membership(
            self.consumer, client_of(self.offsets), self.group_id, confirm_after_s=CONFIRM_AFTER_S
        )
        self._listener = Rebalance(self._lock, self.generation, self.revoke, self.assign)
        self.consumer.subscribe(topics=list(self._inputs), listener=self._listener)
        await self.consumer.start()
        shorten_prefetch_backoff(self.consumer)
        log.info("engine started as %s in group %s", settings.instance_name, self.group_id)

    async def on_stop(self) -> None:
        self.phase = "stopping"
        try:
            async with asyncio.timeout(STOP_WAIT_S):
                await self._lock.acquire()
        except TimeoutError:
            log.error("the batch in flight did not end in %.0fs; stopping anyway", STOP_WAIT_S)
        else:
            self._lock.release()
        self._stopping = True
        if self.consumer is not None:
            await self.consumer.stop()
        await self.producer.stop()
        if self.offsets is not None:
            await self.offsets.stop()
        for table in self.tables.values():
            table.close()
        self.folder.unlock()
        log.info("engine stopped")

    @Service.task
    async def _run(self) -> None:
        """Turn until stopped. A fault the turn could not handle (a Kafka request cancelled
        under it by a closing connection, a broker out of reach) pauses it and is retried;
        faults that last `PIPELINE_REJOIN_TIMEOUT_SECONDS` stop the worker."""
        faulty_since: float | None = None
        while not self.should_stop and not self._stopping:
            try:
                await self._turn()
            except asyncio.CancelledError:
                if cancelled_from_outside():
                    raise
                cause = "a Kafka request was cancelled (its connection closed)"
            except WorkerFault as fault:
                if await self._stand_down(fault):
                    continue
                return
            except (KafkaError, OSError) as exc:
                cause = type(exc).__name__
            except Exception as exc:  # a bug of the worker's own: stand down, never guess
                failure = WorkerFault(
                    f"the worker failed: {type(exc).__name__} at {where(exc)}",
                    setting="the worker's log",
                )
                if await self._stand_down(failure):
                    continue
                return
            else:
                faulty_since = None
                continue
            now = time.monotonic()
            faulty_since = faulty_since or now
            if now - faulty_since > self.settings.rejoin_timeout_seconds:
                log.error(
                    "the worker has failed for %.0fs (%s): exiting so that it is started again",
                    now - faulty_since,
                    cause,
                )
                self._stopping = True
                await self.crash(PipelineError(cause))
                return
            log.warning("the worker's loop failed (%s); retrying", cause)
            await asyncio.sleep(RETRY_RECOVERY_S)

    async def _stand_down(self, fault: WorkerFault) -> bool:
        """Stop taking input for a fault of the worker: close every store, leave the group
        (its partitions go to the other workers), and join again after a backoff, recovering
        whatever it is given; returns False when the worker exits instead (after
        `FAULT_RETRIES`), with one log line naming the cause and the setting."""
        consumer = self.consumer
        assert consumer is not None
        self._faults += 1
        self.phase, self.fault = "faulted", str(fault)
        if isinstance(fault, StoreCorrupted) and fault.store is not None:
            self._rebuild.add(fault.store)
        async with self._lock:
            for stage in self.stages:
                stage.revoked(self._partitions[stage])
                self._partitions[stage] = set()
            for table in self.tables.values():
                table.abort()
                table.close()
            self._pending = None
            if self.membership is not None:
                self.membership.revoked()
        # Out of the group while it stands down: its partitions go to the other workers.
        consumer.unsubscribe()
        self.metrics.worker_faults.inc()
        if self._faults > FAULT_RETRIES:
            log.error(
                "stopping: %s (see %s); exiting so that the worker is started again",
                fault,
                fault.setting,
            )
            self._stopping = True
            await self.crash(fault)
            return False
        delay = min(FAULT_BACKOFF_MAX_S, 2.0 ** (self._faults - 1))
        log.warning(
            "worker fault: %s (see %s); taking no input, trying again in %.0fs (%d of %d)",
            fault,
            fault.setting,
            delay,
            self._faults,
            FAULT_RETRIES,
        )
        await asyncio.sleep(delay)
        consumer.subscribe(topics=list(self._inputs), listener=self._listener)
        return True

    @property
    def unrecoverable(self) -> bool:
        """Whether the worker has stood down for a fault as often as it may: `/healthz` fails."""
        return self.phase == "faulted" and self._faults >= FAULT_RETRIES

    async def _turn(self) -> None:
        """One turn of the loop: recover a new assignment, or wait for one, or one batch."""
        consumer = self.consumer
        assert consumer is not None
        if self._layout_error is not None:
            log.error("refusing to process: %s", self._layout_error)
            self._stopping = True
            await self.crash(TopicLayoutError(self._layout_error))
            return
        if self._pending is not None:
            await self._recover_pending()
            return
        if not await self._may_process():
            await self._wait_for_assignment()
            return
        generation = self.generation.value
        batch = await take_batch(
            consumer,
            limit=self.settings.batch_max_records,
            poll_timeout_ms=self.settings.poll_timeout_ms,
        )
        self.last_cycle = time.monotonic()
        async with self._lock:
            if self._stopping or generation != self.generation.value:
                return  # a new assignment's recovery seeks every partition it is given
            await self._cycle(batch)
            await self._pace_intake()

    async def _may_process(self) -> bool:
        """Whether this worker is still the group member its partitions were assigned to
        (asking the coordinator when nothing confirmed it lately)."""
        membership, consumer = self.membership, self.consumer
        assert membership is not None
        assert consumer is not None
        if not await membership.confirm():
            return False
        if self._out_since is not None:
            self._out_since = None
            held = consumer.paused() & consumer.assignment()
            if held:
                consumer.resume(*held)  # `_pace_intake` holds the raw ones back again if due
        return True

    async def _wait_for_assignment(self) -> None:
        """Out of the group: take nothing, keep the consumer alive while it rejoins, and exit
        for a restart when it cannot rejoin."""
        consumer = self.consumer
        assert consumer is not None
        now = time.monotonic()
        if self._out_since is None:
            self._out_since = now
            if self.phase == "processing":
                self.phase = "rejoining"  # dropped by the group, not told by a rebalance
        elif now - self._out_since > self.settings.rejoin_timeout_seconds:
            log.error(
                "not a member of group %s for %.0fs (PIPELINE_REJOIN_TIMEOUT_SECONDS): "
                "exiting so that the worker is started again",
                self.group_id,
                now - self._out_since,
            )
            self._stopping = True
            await self.crash(PipelineError("could not rejoin the consumer group"))
            return
        assigned = consumer.assignment()
        if assigned:
            consumer.pause(*assigned)
        self.last_cycle = now  # waiting for the group is alive, not stalled
        await consumer.getmany(timeout_ms=int(WAIT_S * 1000))  # no records: all paused

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
        batch, held = self._suspects.cut(batch)
        starts = {tp: records[0].offset for tp, records in batch.items() if records}
        try:
            async with asyncio.timeout(self.batch_deadline_s):
                await self._transaction(batch, now, sweep, starts, markers)
        except RecordsRaised as raised:
            await self._abort(starts | {tp: o for tp, o in held.items() if tp not in starts})
            self._suspects.add(raised, sum(len(records) for records in batch.values()))
            log.warning("%s; each is taken again alone", raised)
            return
        except WorkerFault:
            await self._abort(starts)
            raise
        except ProducerFenced:
            self._restore_after_abort(starts)
            await self._replace_producer(fenced=True)
        except MemberFenced as exc:
            await self._abort(starts)
            assert self.membership is not None
            self.membership.lose(f"its batch was aborted: {exc}")
            self.metrics.fenced_commits.inc()
            self.phase = "rejoining"
        except (KafkaError, BarrierTimeout, OSError, TimeoutError, asyncio.CancelledError) as exc:
            if isinstance(exc, asyncio.CancelledError) and cancelled_from_outside():
                raise
            log.warning(
                "batch failed (%s); it will be read and processed again", type(exc).__name__
            )
            await self._abort(starts)
            await asyncio.sleep(0.5)
        except Exception as exc:  # a bug of the worker's own: nothing of the batch is kept
            await self._abort(starts)
            raise WorkerFault(
                f"the worker failed in a batch: {type(exc).__name__} at {where(exc)}",
                setting="the worker's log",
            ) from exc
        else:
            if sweep:
                self._last_sweep = monotonic
            self._seek(held)
        self._report_lag(monotonic)

    def _seek(self, positions: dict[TopicPartition, int]) -> None:
        consumer = self.consumer
        assert consumer is not None
        assigned = consumer.assignment()
        for tp, offset in positions.items():
            if tp in assigned:
                consumer.seek(tp, offset)

    async def _abort(self, starts: dict[TopicPartition, int]) -> None:
        """Abort the batch's transaction and forget what it staged; its records are read again.

        An abort that cannot end (the producer still retrying writes the cluster refuses,
        say too few in-sync replicas) is left to the transaction coordinator: a new
        producer with the same transactional id has it abort the open transaction.
        """
        self._restore_after_abort(starts)
        try:
            async with asyncio.timeout(ABORT_TIMEOUT_S):
                aborted = await self.producer.abort()
        except TimeoutError:
            log.warning(
                "the batch's transaction did not abort in %.0fs (the cluster takes no writes); "
                "replacing the producer",
                ABORT_TIMEOUT_S,
            )
            await self._replace_producer(fenced=False)
            return
        if not aborted:
            await self._replace_producer(fenced=self.producer.fenced)

    async def _replace_producer(self, *, fenced: bool) -> None:
        """Replace the producer with a new one of the same transactional id; its start has
        the transaction coordinator abort whatever the old one left open (it waits until
        the coordinator can). Exit when the producer keeps being fenced (another process
        has the id), or the new one cannot start within `PIPELINE_REJOIN_TIMEOUT_SECONDS`.

        Args:
            fenced: the coordinator fenced the old producer (counted), rather than it
                being stuck.
        """
        now = time.monotonic()
        if fenced:
            self._fenced_at = [at for at in self._fenced_at if now - at < FENCED_WINDOW_S]
            self._fenced_at.append(now)
            if len(self._fenced_at) > FENCED_MAX:
                log.error(
                    "this worker's producer was fenced %d times in %.0fs: another process runs "
                    "with transactional id %s (PIPELINE_WORKER_ID must be unique); exiting",
                    len(self._fenced_at),
                    FENCED_WINDOW_S,
                    self.transactional_id,
                )
                self._stopping = True
                await self.crash(PipelineError("producer fenced"))
                return
            log.warning(
                "the transaction coordinator fenced this worker's producer (a transaction "
                "outlived PIPELINE_TRANSACTION_TIMEOUT_SECONDS, or another process took its "
                "transactional id); starting a new one"
            )
        old, self.producer = self.producer, self._new_producer()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(ABORT_TIMEOUT_S):
                await old.stop()
        try:
            async with asyncio.timeout(self.settings.rejoin_timeout_seconds):
                await self.producer.start()
        except (PipelineError, TimeoutError) as exc:
            log.error(
                "cannot start a new producer (%s) within PIPELINE_REJOIN_TIMEOUT_SECONDS; exiting",
                type(exc).__name__,
            )
            self._stopping = True
            await self.crash(PipelineError("no producer"))

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
        self._raised, self._roots = [], {}
        behind = await self._process(streams, waiting, now, stats, outputs, offsets, starts)
        alone = self._suspects.alone(batch)
        if self._raised and alone is None:
            raise RecordsRaised(self._raised)
        if alone is not None:
            self._suspects.taken(alone, raised=bool(self._raised))
        elif batch:
            self._suspects.passed()
        deferred = self._defer(batch, behind, offsets) if behind else {}
        for tp in self._fencing:
            offsets.setdefault(tp, self._next[tp])
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
        membership = self.membership
        assert membership is not None
        if not membership.current():
            raise MemberFenced("the group rebalanced or dropped this worker during the batch")
        ends = await transaction.commit(
            self.producer, writer, self.tables.values(), offsets, membership.member
        )
        membership.confirmed()
        self._faults = 0
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
                roots = self._roots
                for record in (*todo, *(record for _, record in extra)):
                    root = roots.pop(id(record), None) or record.origin
                    try:
                        produced = stage.process(record, now, stats)
                    except WorkerFault:
                        raise
                    except Exception as exc:  # retried alone before it is the record's fault
                        log.warning("processing_error: %s at %s", type(exc).__name__, where(exc))
                        produced = [stage.raised(record, exc, stats)]
                        self._raised.append((root.topic, root.partition, root.offset))
                    for output in produced:
                        target = self._in_process(output, index, now)
                        if target is None:
                            outputs.append(output)
                        else:
                            handed.setdefault(target[0], []).append(target[1:])
                            roots[id(target[2])] = root
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
        tables = [self.tables[name] for name in stage.tables]
        for table in tables:
            table.savepoint()
        try:
            outputs = stage.fold(record, now, stats)
        except WorkerFault:
            raise
        except Exception as exc:  # the record's own failure: what it staged is taken back
            for table in tables:
                table.rollback()
            log.warning("processing_error: %s at %s", type(exc).__name__, where(exc))
            return [stage.raised(record, exc, stats)]
        for table in tables:
            table.release_savepoint()
        return outputs

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
        """Take a new assignment (the rebalance callback): note the member and generation it
        belongs to, close the stores of partitions that moved away, and hold every assigned
        partition paused until `_recover_pending` has recovered it."""
        consumer, membership = self.consumer, self.membership
        assert consumer is not None
        assert membership is not None
        assigned = list(assigned)
        self._assigned = assigned
        self._suspects.forget()
        member = membership.take()
        self._layout_error = self._partition_counts_changed(consumer)
        self._classify(assigned)
        consumer.pause(*assigned)
        for stage in self.stages:
            owned = {tp.partition for tp in assigned if self._owner.get(tp.topic) is stage}
            for partition in self._held[stage] - owned:
                for name in stage.tables:
                    self.tables[name].revoke(partition)
            stage.revoked(self._partitions[stage])
            self._partitions[stage] = set()
            self._held[stage] = owned
        self._fencing = frozenset()
        self._next = {}
        self._pending = assigned
        self.phase = "recovering"
        log.info(
            "assigned partitions %s in generation %d; recovering them",
            sorted({tp.partition for tp in assigned}),
            member.generation_id,
        )

    async def _recover_pending(self) -> None:
        """Recover the pending assignment, then resume its partitions.

        First the committed offsets of every assigned partition, fetched with
        `require_stable`: a transaction the previous owner left open is committed or
        aborted before this worker reads anything of it. Then every table partition,
        including those this worker held before, replayed from its store's checkpoint to
        the end of its changelog. A rebalance meanwhile ends the attempt (the next
        assignment starts over); a failure is retried after a pause.
        """
        assigned = self._pending
        consumer, client = self.consumer, self.offsets
        assert assigned is not None
        assert consumer is not None
        assert client is not None
        generation = self.generation.value
        started = time.monotonic()

        async def apply(step: Callable[[], None]) -> None:
            async with self._lock:
                if self.generation.value != generation or self._stopping:
                    raise RecoveryInterrupted("the assignment changed")
                step()

        try:
            if self.settings.store == "rocksdb":
                self.folder.lock()
            committed = await fetch_stable_offsets(
                client_of(client),
                self.group_id,
                assigned,
                timeout_s=self.settings.transaction_timeout_seconds * 2,
            )
            missing = [tp for tp, offset in committed.items() if offset is None]
            first = await client.beginning_offsets(missing) if missing else {}
            positions = {
                tp: first[tp] if offset is None else offset for tp, offset in committed.items()
            }
            for stage in self.stages:
                for partition in sorted(self._held[stage]):
                    for name in stage.tables:
                        await self._open_store(self.tables[name], partition, apply)
            restored = await recover(
                self.settings,
                {
                    self.tables[name]: self._held[stage]
                    for stage in self.stages
                    for name in stage.tables
                },
                apply=apply,
                alive=self._alive,
                timeout_s=self.settings.transaction_timeout_seconds * 2,
            )
            await apply(lambda: self._resume(assigned, positions))
        except RecoveryInterrupted:
            return
        except (
            OffsetsUnstable,
            RecoveryStalled,
            KafkaError,
            OSError,
            asyncio.CancelledError,
        ) as exc:
            if isinstance(exc, asyncio.CancelledError) and cancelled_from_outside():
                raise
            log.warning(
                "recovering the assignment failed (%s: %s); retrying", type(exc).__name__, exc
            )
            await asyncio.sleep(RETRY_RECOVERY_S)
            return
        gc.collect()
        gc.freeze()  # recovered state is long-lived: keep it out of later collections
        for stage in self.stages:
            size = stage.table_size()
            if size is not None:
                self.metrics.consent_table_entries.set(size)
        log.info(
            "assigned partitions %s (%d records recovered in %.2fs)",
            sorted({tp.partition for tp in assigned}),
            restored,
            time.monotonic() - started,
        )

    async def _open_store(
        self, table: Table, partition: int, apply: Callable[[Callable[[], None]], Awaitable[None]]
    ) -> None:
        """Open a partition's store: wait (bounded) for a lock another process holds, and
        rebuild a store whose files are corrupt from its changelog.

        Raises:
            WorkerFault: the store cannot be opened (`StoreLocked` past `LOCK_WAIT_S`).
        """
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            rebuild = (table.name, partition) in self._rebuild

            def open_it(rebuild: bool = rebuild) -> None:
                if rebuild:
                    table.rebuild(partition)
                else:
                    table.assign(partition)

            try:
                await apply(open_it)
            except StoreCorrupted as exc:
                log.warning("%s; rebuilding it from its changelog", exc)
                self._rebuild.add((table.name, partition))
                continue
            except StoreLocked:
                if time.monotonic() > deadline:
                    raise
                self._alive()
                await asyncio.sleep(LOCK_RETRY_S)
                continue
            self._rebuild.discard((table.name, partition))
            return

    def _resume(self, assigned: list[TopicPartition], positions: dict[TopicPartition, int]) -> None:
        """The assignment is recovered: start each partition at its committed offset."""
        consumer, membership = self.consumer, self.membership
        assert consumer is not None
        assert membership is not None
        for tp, offset in positions.items():
            consumer.seek(tp, offset)
        self._next = dict(positions)
        fencing = []
        for stage in self.stages:
            stage.assigned(self._held[stage], self.partition_count)
            self._partitions[stage] = set(self._held[stage])
            if stage.tables and stage.partitioned_by is not None:
                name = self.settings.topic(stage.partitioned_by)
                fencing += [TopicPartition(name, p) for p in self._held[stage]]
        self._fencing = frozenset(fencing)
        consumer.resume(*assigned)
        membership.confirmed()
        self._pending = None
        self.phase, self.fault = "processing", None

    def _partition_counts_changed(self, consumer: AIOKafkaConsumer) -> str | None:
        """Why the tables' topics are no longer co-partitioned, if partitions were added."""
        changed = []
        for name, (_, topic, _) in self._inputs.items():
            count = len(consumer.partitions_for_topic(name) or ())
            if topic in catalogue.COPARTITIONED and count and count != self.partition_count:
                changed.append(f"{name}={count}")
        if not changed:
            return None
        return (
            f"partitions were added to {', '.join(changed)}: the tables were built for "
            f"{self.partition_count} and every key would now map elsewhere; restore the "
            "partition count (the tables' topics are never repartitioned in place)"
        )

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
        """Forget lag and positions of partitions leaving; their stores stay until `assign`
        (a partition given back keeps its store and replays its changelog from the store's
        checkpoint). No batch runs until the next assignment is recovered."""
        self.routing.forget()
        self._pending = None
        for table in self.tables.values():
            table.release_persistent()  # the worker taking a partition finds its store free
        for stage in self.stages:
            stage.revoked(self._partitions[stage])
            self._partitions[stage] = set()
        if self.membership is not None:
            self.membership.revoked()
        if self.phase != "stopping":
            self.phase = "rebalancing"
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


def cancelled_from_outside() -> bool:
    """Whether the current task itself is being cancelled (the worker stopping), rather than
    a future it awaited (aiokafka cancels a request's future when its connection closes)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


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
