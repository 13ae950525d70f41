"""Records that raised, taken again alone: one poison record never takes its batch with it.

When processing a record raises unexpectedly, the worker cannot tell from that batch
whether the record is at fault or something it shares with its batch: it aborts the batch,
so nothing of it is kept, and remembers the position of the record it consumed that
failed (`Suspects`). From then on each batch is cut before the first suspect of every
partition (`cut`): what precedes it commits as usual; a batch that starts with a suspect
holds that record alone. A record that raises again alone is the record's fault and goes
to the DLQ as `processing_error`; one that passes alone was the victim of something else.

Records raising in numbers are not the records' fault: a batch in which at least half of
the records (and `SYSTEMIC_MIN` or more) raised, or `LONE_LIMIT` suspects in a row that
raised alone with no other batch passing between them, are a fault of the worker
(`pipeline.errors.WorkerFault`): nothing is dead-lettered and the worker stops (see
`pipeline.runtime.engine`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from aiokafka import ConsumerRecord, TopicPartition

from pipeline.errors import WorkerFault

SYSTEMIC_MIN: Final = 10
LONE_LIMIT: Final = 20
Batch = dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
Position = tuple[str, int, int]
"""Topic, partition and offset of a record the worker consumed."""


class RecordsRaised(Exception):
    """Records of a batch raised while being processed: the batch is aborted and each of
    them is taken again alone."""

    def __init__(self, positions: Iterable[Position]) -> None:
        self.positions = sorted(set(positions))
        super().__init__(f"{len(self.positions)} records raised")


@dataclass
class Suspects:
    """Positions of records that raised in an aborted batch, still to be taken alone."""

    offsets: dict[TopicPartition, set[int]] = field(default_factory=dict)
    lone_failures: int = 0
    """Suspects in a row that raised again alone, no other batch passing between them."""

    def __bool__(self) -> bool:
        return any(self.offsets.values())

    def add(self, raised: RecordsRaised, consumed: int) -> None:
        """Remember the records of an aborted batch of `consumed` records that raised.

        Raises:
            WorkerFault: so many of them raised that the worker, not they, is at fault.
        """
        if len(raised.positions) >= SYSTEMIC_MIN and 2 * len(raised.positions) >= consumed:
            raise WorkerFault(
                f"{len(raised.positions)} of {consumed} records of a batch raised: a fault of "
                "the worker, not of the records",
                setting="the worker's log (the exceptions' types and places)",
            )
        for topic, partition, offset in raised.positions:
            self.offsets.setdefault(TopicPartition(topic, partition), set()).add(offset)

    def cut(self, batch: Batch) -> tuple[Batch, dict[TopicPartition, int]]:
        """The part of `batch` to process now, and where each partition it leaves out (or
        stops short in) starts again: a suspect alone when a partition starts with one, else
        every partition up to its first suspect."""
        if not self:
            return batch, {}
        for tp, records in batch.items():
            if records and records[0].offset in self.offsets.get(tp, ()):
                held = {other: rest[0].offset for other, rest in batch.items() if rest}
                if len(records) > 1:
                    held[tp] = records[1].offset
                else:
                    del held[tp]
                return {tp: records[:1]}, held
        kept: Batch = {}
        held = {}
        for tp, records in batch.items():
            marks = self.offsets.get(tp)
            first = next((i for i, r in enumerate(records) if marks and r.offset in marks), None)
            if first is None:
                kept[tp] = records
            else:
                kept[tp] = records[:first]
                held[tp] = records[first].offset
        return kept, held

    def alone(self, batch: Batch) -> Position | None:
        """The suspect `batch` holds alone, if it is one."""
        if len(batch) != 1:
            return None
        ((tp, records),) = batch.items()
        if len(records) == 1 and records[0].offset in self.offsets.get(tp, ()):
            return tp.topic, tp.partition, records[0].offset
        return None

    def taken(self, position: Position, *, raised: bool) -> None:
        """A suspect was processed alone and committed: it raised again (dead-lettered) or not.

        Raises:
            WorkerFault: `LONE_LIMIT` suspects in a row raised alone.
        """
        topic, partition, offset = position
        tp = TopicPartition(topic, partition)
        self.lone_failures = self.lone_failures + 1 if raised else 0
        if self.lone_failures >= LONE_LIMIT:
            raise WorkerFault(
                f"{self.lone_failures} records in a row raised, each processed alone: a fault of "
                "the worker, not of the records",
                setting="the worker's log (the exceptions' types and places)",
            )
        marks = self.offsets.get(tp)
        if marks is not None:
            marks.discard(offset)
            if not marks:
                del self.offsets[tp]

    def passed(self) -> None:
        """A batch of other records was processed without raising: the worker works."""
        self.lone_failures = 0

    def forget(self) -> None:
        """A new assignment: every partition starts again from its committed offset."""
        self.offsets.clear()
        self.lone_failures = 0
