"""Exactly-once: a batch's outputs, table changes and consumed offsets in one transaction.

`begin` opens a transaction and hands back the writer a batch's outputs go to; `commit`
adds the staged table writes as changelog records, waits for every produce
acknowledgement, adds the consumed offsets and commits. Only then are the staged writes
applied to the local stores (with the changelog offsets they reached), so a store never
holds state that an aborted transaction discarded.

The offsets are committed as the consumer group member the batch's partitions were
assigned to (KIP-447): the group coordinator refuses them from a worker the group has
dropped, and the whole transaction (outputs and changelog records with it) is aborted.

Why the acks are awaited before the offsets are sent: a Kafka 3.6+ broker verifies each
transactional produce and offset commit with the transaction coordinator, one at a time
per transactional id; overlapping, one of them fails as NOT_ENOUGH_REPLICAS or
COORDINATOR_NOT_AVAILABLE and the client retries it after a backoff.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from aiokafka import TopicPartition

from pipeline.kafka.group import GroupMetadata
from pipeline.kafka.producer import Producer
from pipeline.kafka.writer import BatchWriter
from pipeline.state.tables import Table


async def begin(producer: Producer) -> BatchWriter:
    """Open a transaction; returns the writer of its records."""
    await producer.begin()
    return producer.writer()


async def commit(
    producer: Producer,
    writer: BatchWriter,
    tables: Iterable[Table],
    offsets: dict[TopicPartition, int],
    member: GroupMetadata,
) -> dict[str, dict[int, int]]:
    """Write the tables' staged changes, the consumed `offsets`, and commit; returns the
    offset after the last record the transaction wrote, by topic and partition.

    Raises:
        MemberFenced: `member` is no longer in its group's generation; the caller aborts.
        KafkaError: the transaction could not commit; the caller aborts and retries.
    """
    tables = list(tables)
    for table in tables:
        for partition, key, value in table.changelog_records():
            writer.add(table.changelog_topic, key, value, partition)
    sent = await writer.flush()
    await asyncio.gather(*(handed.future for handed in sent))
    if offsets:
        await producer.send_offsets(offsets, member)
    await producer.commit()
    ends: dict[str, dict[int, int]] = {}
    for handed in sent:
        topic_ends = ends.setdefault(handed.topic, {})
        topic_ends[handed.partition] = max(
            topic_ends.get(handed.partition, 0), handed.next_offset()
        )
    for table in tables:
        table.commit(ends.get(table.changelog_topic, {}))
    return ends


def abort(tables: Iterable[Table]) -> None:
    """Forget the tables' staged changes (the caller aborts the Kafka transaction)."""
    for table in tables:
        table.abort()
