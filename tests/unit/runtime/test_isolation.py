"""Records that raised in an aborted batch are taken again alone; records raising in numbers
are the worker's fault."""

from __future__ import annotations

import pytest
from aiokafka import ConsumerRecord, TopicPartition

from pipeline.errors import WorkerFault
from pipeline.runtime.isolation import LONE_LIMIT, RecordsRaised, Suspects

A, B = TopicPartition("raw.a", 0), TopicPartition("raw.b", 1)


def records(tp: TopicPartition, *offsets: int) -> list[ConsumerRecord[bytes, bytes]]:
    return [
        ConsumerRecord(tp.topic, tp.partition, o, 0, 0, b"k", b"v", None, 1, 1, ()) for o in offsets
    ]


def offsets(
    batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]],
) -> dict[str, list[int]]:
    return {tp.topic: [r.offset for r in rs] for tp, rs in batch.items()}


def test_without_suspects_a_batch_is_taken_whole() -> None:
    batch = {A: records(A, 1, 2), B: records(B, 7)}

    assert Suspects().cut(batch) == (batch, {})


def test_a_batch_stops_short_of_each_partitions_first_suspect() -> None:
    suspects = Suspects()
    suspects.add(RecordsRaised([("raw.a", 0, 3)]), consumed=100)

    kept, held = suspects.cut({A: records(A, 1, 2, 3, 4), B: records(B, 7, 8)})

    assert offsets(kept) == {"raw.a": [1, 2], "raw.b": [7, 8]}
    assert held == {A: 3}


def test_a_suspect_at_the_head_of_its_partition_is_taken_alone() -> None:
    suspects = Suspects()
    suspects.add(RecordsRaised([("raw.a", 0, 3)]), consumed=100)

    kept, held = suspects.cut({A: records(A, 3, 4), B: records(B, 7, 8)})

    assert offsets(kept) == {"raw.a": [3]}
    assert held == {A: 4, B: 7}
    assert suspects.alone(kept) == ("raw.a", 0, 3)


def test_a_suspect_taken_alone_is_forgotten_whether_it_raised_again_or_not() -> None:
    suspects = Suspects()
    suspects.add(RecordsRaised([("raw.a", 0, 3), ("raw.a", 0, 5)]), consumed=100)

    suspects.taken(("raw.a", 0, 3), raised=True)
    suspects.taken(("raw.a", 0, 5), raised=False)

    assert not suspects
    assert suspects.lone_failures == 0


def test_half_a_batch_raising_is_a_fault_of_the_worker() -> None:
    raised = RecordsRaised([("raw.a", 0, o) for o in range(10)])

    with pytest.raises(WorkerFault):
        Suspects().add(raised, consumed=20)
    Suspects().add(raised, consumed=21)  # fewer than half: the records' own


def test_suspects_raising_alone_in_a_row_are_a_fault_of_the_worker() -> None:
    suspects = Suspects()
    suspects.add(RecordsRaised([("raw.a", 0, o) for o in range(LONE_LIMIT)]), consumed=1000)

    for offset in range(LONE_LIMIT - 1):
        suspects.taken(("raw.a", 0, offset), raised=True)
    with pytest.raises(WorkerFault):
        suspects.taken(("raw.a", 0, LONE_LIMIT - 1), raised=True)


def test_poison_records_spread_among_good_batches_never_add_up_to_a_fault() -> None:
    suspects = Suspects()
    suspects.add(RecordsRaised([("raw.a", 0, o * 10) for o in range(3 * LONE_LIMIT)]), 1000)

    for n in range(3 * LONE_LIMIT):
        suspects.taken(("raw.a", 0, n * 10), raised=True)
        suspects.passed()  # the good records up to the next suspect

    assert not suspects
