"""The batch writer: records reach their partition in the order they were added."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import UnknownTopicOrPartitionError
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch

from pipeline.kafka.writer import BatchWriter, KeyPartitioner

BATCH_BYTES = 1024


class Recorder:
    """The part of an aiokafka producer a writer uses: real record batches, kept in the
    order they are handed over instead of sent, for a topic of `partitions` partitions."""

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self.handed: list[tuple[str, int, list[bytes]]] = []

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(BATCH_BYTES, 0, is_transactional=True)

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(self.partitions)) if topic == "out" else set()

    async def send_batch(self, batch: BatchBuilder, topic: str, *, partition: int) -> Any:
        records = DefaultRecordBatch(bytes(batch._build()))
        self.handed.append((topic, partition, [record.value for record in records]))
        future = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


def by_partition(handed: list[tuple[str, int, list[bytes]]]) -> dict[int, list[bytes]]:
    values: dict[int, list[bytes]] = {}
    for _, partition, batch in handed:
        values.setdefault(partition, []).extend(batch)
    return values


async def test_added_records_reach_their_keys_partitions_in_order_across_full_batches() -> None:
    producer = Recorder(partitions=3)
    writer = BatchWriter(producer, {}, KeyPartitioner())
    await writer.prepare(["out"])
    keys = [f"user-{i % 7}".encode() for i in range(300)]
    for i, key in enumerate(keys):
        writer.add("out", key, b"%d:%s" % (i, b"x" * 40))
    assert producer.handed == []  # adding waits for nothing, hands over nothing

    sent = await writer.flush()

    assert sum(s.records for s in sent) == 300
    assert len(producer.handed) > 3  # the batches filled up: more than one per partition
    expected: dict[int, list[bytes]] = {}
    for i, key in enumerate(keys):
        partition = KeyPartitioner()(key) % 3
        expected.setdefault(partition, []).append(b"%d:%s" % (i, b"x" * 40))
    assert by_partition(producer.handed) == expected


async def test_write_looks_up_the_partition_count_and_hands_over_full_batches() -> None:
    producer = Recorder(partitions=2)
    writer = BatchWriter(producer, {}, KeyPartitioner())
    for i in range(100):
        await writer.write("out", b"k", b"%d:%s" % (i, b"x" * 40))
    handed_while_writing = len(producer.handed)
    await writer.flush()

    assert handed_while_writing > 0
    [values] = by_partition(producer.handed).values()
    assert values == [b"%d:%s" % (i, b"x" * 40) for i in range(100)]


async def test_a_topic_without_partitions_is_refused() -> None:
    writer = BatchWriter(Recorder(partitions=2), {}, KeyPartitioner())
    with pytest.raises(UnknownTopicOrPartitionError):
        await writer.prepare(["missing"])
    with pytest.raises(KeyError):
        writer.add("missing", b"k", b"v")
