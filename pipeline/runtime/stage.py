"""A stage: its input topics, its tables, its processing function and its outputs.

The engine (`pipeline.runtime.engine`) runs one or more stages in a worker over one
consumer and one transactional producer. Per batch, for each stage it

1. folds the records of the stage's *table inputs* (`consent.changes`) into its tables,
2. brings those table inputs up to their end offsets for every partition the batch has
   stream records of (the barrier: what Kafka acknowledged before an event was produced
   governs that event),
3. processes each record of the stage's *stream inputs* (the raw topics), and the
   records earlier stages of the same batch forwarded to partitions this worker owns,
4. lets the stage emit what time makes due (`tick`: closed aggregation hours),

then commits every output, every staged table write (as changelog records) and the
consumed offsets in one Kafka transaction. A stage never sees Kafka: it gets records and
returns outputs (`Output` records for the output topics, `Forward` records to the
internal topic the next stage reads); the tables it writes are staged until the
transaction commits.

A table-input record on another partition than murmur2 of its key cannot be joined: the
engine sends it to the DLQ as `wrong_partition` instead of folding it. A record whose
processing raises unexpectedly is the engine's to handle (`raised`): a fault of the worker
(`pipeline.errors.WorkerFault`) passes through the stages untouched.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from pipeline.catalogue import TableName, Topic
from pipeline.core.route import Origin, Output
from pipeline.runtime.reporting import BatchStats
from pipeline.state.tables import Table
from schemas import fast
from schemas.audience import AudienceMember
from schemas.events import Event
from schemas.internal import HOP_HEADER, Hop

Headers = Sequence[tuple[str, bytes]]
Parsed = Event | AudienceMember
"""A raw record's value as intake decoded and checked it."""


@dataclass(slots=True)
class InputRecord:
    """A consumed Kafka record, as the engine hands it to a stage; never changed once made
    (not frozen: a frozen dataclass costs a `__setattr__` call per field, and the engine
    makes one per record and hop)."""

    topic: Topic
    """The catalogue entry of the topic it was read from."""
    origin: Origin
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    headers: Headers = ()
    hop: Hop | None = None
    """The hop of a record handed over in process (`Forward`), as the stage made it; a
    record read from an internal topic carries it encoded in its headers instead."""
    parsed: Parsed | None = None
    """The raw value as intake decoded it, for a record handed over in process; a record
    read from an internal topic has only its bytes, decoded again where needed."""

    def header(self, name: str) -> bytes | None:
        """The value of the first header called `name`, if any."""
        for key, value in self.headers:
            if key == name:
                return value
        return None


class Forward(NamedTuple):
    """A record for an internal topic: the next stage's input, partitioned by its key."""

    topic: Topic
    key: bytes
    value: bytes | None
    hop: Hop
    """What the journey has learned so far; written as the `pipeline-hop` header."""
    parsed: Parsed | None = None
    """`value` decoded (`InputRecord.parsed`): handed over in process, never written."""

    def headers(self) -> Headers:
        """The record's headers on its internal topic."""
        return ((HOP_HEADER, fast.dumps(self.hop)),)


class Stage(ABC):
    """One processing stage: what it reads, what state it keeps, what it does, what it writes.

    Every topic a stage reads must be co-partitioned with the others (same partition
    count, keys partitioned the same way), so partition `p` of each table and input is
    owned by one worker at a time.
    """

    name: str
    table_inputs: tuple[Topic, ...]
    """Topics folded into tables; the barrier catches them up before stream records."""
    stream_inputs: tuple[Topic, ...]
    """Topics whose records are processed one by one."""
    tables: tuple[TableName, ...]
    outputs: tuple[Topic, ...]
    partitioned_by: Topic | None
    """The topic whose partitions the stage's tables follow (None: the stage has none)."""

    @abstractmethod
    def bind(self, tables: Mapping[TableName, Table]) -> None:
        """Take the engine's tables (called once, before any record)."""

    @abstractmethod
    def fold(self, record: InputRecord, now: float, stats: BatchStats) -> list[Output]:
        """Fold a table-input record; the outputs of a record that cannot be folded (DLQ)."""

    @abstractmethod
    def process(self, record: InputRecord, now: float, stats: BatchStats) -> list[Output | Forward]:
        """The outputs of a stream-input record: every record yields at least one."""

    @abstractmethod
    def raised(self, record: InputRecord, exc: Exception, stats: BatchStats) -> Output:
        """The DLQ record (`processing_error`) of a record whose processing raised `exc`: a
        fault of the record. The engine calls it once the record has failed on its own:
        what it staged is taken back, or it failed again processed alone."""

    def tick(self, now: float, stats: BatchStats, *, sweep: bool) -> list[Output]:
        """What time makes due at `now` (run once per batch); `sweep`: expire old state."""
        return []

    def due(self, now: float) -> bool:
        """Whether `tick` has work at `now` even without new records."""
        return False

    def assigned(self, partitions: set[int], partition_count: int) -> None:
        """Partitions whose stores were just opened and recovered, of `partition_count`."""
        return None

    def revoked(self, partitions: set[int]) -> None:
        """Partitions this worker no longer owns."""
        return None

    def aborted(self, partitions: set[int]) -> None:
        """The batch's transaction aborted: rebuild in-memory state from the stores."""
        return None

    def table_size(self) -> int | None:
        """The size of the stage's main table, for a gauge (None: none)."""
        return None
