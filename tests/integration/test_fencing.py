"""Zombie fencing against the real broker (KIP-447): a transaction's offset commit names its
group member and generation; the coordinator refuses it once the group has moved on, and a
new owner's stable offset fetch waits for a commit still pending."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.producer.sender import Sender

from pipeline.kafka import group
from pipeline.kafka.group import GroupMetadata, MemberFenced
from pipeline.kafka.producer import Producer
from pipeline.runtime import transaction
from pipeline.settings import Settings
from tests.integration.kafka_io import create_topic

pytestmark = pytest.mark.integration


@pytest.fixture
async def topic(
    settings_factory: Callable[..., Settings], unique_name: Callable[[str], str]
) -> str:
    name = unique_name("fenced")
    await create_topic(settings_factory(), name, 2)
    return name


@pytest.fixture
async def producer(
    settings_factory: Callable[..., Settings], unique_name: Callable[[str], str]
) -> AsyncIterator[Producer]:
    settings = settings_factory()
    async with Producer(
        settings, client_id="fencing-test", transactional_id=unique_name("txn")
    ) as started:
        yield started


async def joined(bootstrap: str, topic: str, group_id: str) -> AIOKafkaConsumer:
    """A consumer of `topic` that has joined `group_id` and holds an assignment."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group_id,
        enable_auto_commit=False,
        session_timeout_ms=6_000,
        heartbeat_interval_ms=500,
    )
    await consumer.start()
    for _ in range(200):
        await consumer.getmany(timeout_ms=100)
        if consumer.assignment() and group.group_metadata(consumer, group_id).joined:
            return consumer
    raise AssertionError("the consumer never joined its group")


async def committed(bootstrap: str, group_id: str, tp: TopicPartition) -> int | None:
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await reader.start()
    try:
        offsets = await group.fetch_stable_offsets(
            group.client_of(reader), group_id, [tp], timeout_s=30
        )
    finally:
        await reader.stop()
    return offsets[tp]


async def visible(bootstrap: str, topic: str) -> list[bytes]:
    """What a `read_committed` consumer of `topic` sees."""
    reader = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await reader.start()
    tps = [TopicPartition(topic, p) for p in range(2)]
    reader.assign(tps)
    try:
        got = await reader.getmany(timeout_ms=2_000)
        return [r.value for records in got.values() for r in records if r.value is not None]
    finally:
        await reader.stop()


async def commit_batch(
    producer: Producer, topic: str, value: bytes, offset: int, member: GroupMetadata
) -> None:
    """One batch as the engine commits it: a record, then its consumed offset, then commit."""
    writer = await transaction.begin(producer)
    writer.add(topic, None, value, 0)
    await transaction.commit(producer, writer, [], {TopicPartition(topic, 0): offset}, member)


async def test_a_member_of_an_older_generation_has_its_commit_refused_and_its_batch_aborted(
    kafka_bootstrap: str, topic: str, producer: Producer, unique_name: Callable[[str], str]
) -> None:
    group_id = unique_name("group")
    first = await joined(kafka_bootstrap, topic, group_id)
    try:
        member = group.group_metadata(first, group_id)
        await commit_batch(producer, topic, b"current", 1, member)
        second = await joined(kafka_bootstrap, topic, group_id)  # the group rebalances
        try:
            for _ in range(100):
                if group.group_metadata(first, group_id).generation_id > member.generation_id:
                    break
                await first.getmany(timeout_ms=100)
            with pytest.raises(MemberFenced):
                await commit_batch(producer, topic, b"zombie", 2, member)
            await producer.abort()
            await commit_batch(
                producer, topic, b"rejoined", 3, group.group_metadata(first, group_id)
            )
        finally:
            await second.stop()
    finally:
        await first.stop()

    assert await visible(kafka_bootstrap, topic) == [b"current", b"rejoined"]
    assert await committed(kafka_bootstrap, group_id, TopicPartition(topic, 0)) == 3


async def test_a_member_the_group_no_longer_knows_cannot_commit(
    kafka_bootstrap: str, topic: str, producer: Producer, unique_name: Callable[[str], str]
) -> None:
    group_id = unique_name("group")
    other = await joined(kafka_bootstrap, topic, group_id)
    leaving = await joined(kafka_bootstrap, topic, group_id)
    member = group.group_metadata(leaving, group_id)
    await leaving.stop()  # gone from the group, as a worker its session timed out
    try:
        with pytest.raises(MemberFenced):
            await commit_batch(producer, topic, b"zombie", 5, member)
        await producer.abort()
    finally:
        await other.stop()

    assert await visible(kafka_bootstrap, topic) == []
    assert await committed(kafka_bootstrap, group_id, TopicPartition(topic, 0)) is None


async def test_a_new_owner_waits_for_a_pending_offset_commit_to_end(
    kafka_bootstrap: str, topic: str, producer: Producer, unique_name: Callable[[str], str]
) -> None:
    group_id = unique_name("group")
    consumer = await joined(kafka_bootstrap, topic, group_id)
    tp = TopicPartition(topic, 0)
    try:
        member = group.group_metadata(consumer, group_id)
        writer = await transaction.begin(producer)
        writer.add(topic, None, b"pending", 0)
        await writer.flush()
        await producer.send_offsets({tp: 7}, member)  # pending until the transaction ends
        fetch = asyncio.ensure_future(committed(kafka_bootstrap, group_id, tp))
        await asyncio.sleep(1.5)
        assert not fetch.done()
        await producer.commit()
        assert await fetch == 7
    finally:
        await consumer.stop()


async def test_the_heartbeat_says_whether_a_member_is_still_in_its_generation(
    kafka_bootstrap: str, topic: str, unique_name: Callable[[str], str]
) -> None:
    group_id = unique_name("group")
    consumer = await joined(kafka_bootstrap, topic, group_id)
    try:
        member = group.group_metadata(consumer, group_id)
        client = group.client_of(consumer)
        assert await group.heartbeat(client, member) == 0
        stale = GroupMetadata(group_id, member.generation_id, "gone-member")
        assert await group.heartbeat(client, stale) != 0
    finally:
        await consumer.stop()


async def test_the_cluster_supports_fencing_and_aiokafka_still_has_what_it_is_built_on(
    kafka_bootstrap: str,
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, transactional_id="fence-probe")
    await producer.start()
    try:
        await group.require_fencing_support(group.client_of(producer))
        sender = producer._sender
        assert isinstance(sender, Sender)
        for name in ("_do_txn_offset_commit", "_find_coordinator", "_coordinator_dead"):
            assert callable(getattr(sender, name))
        txn = producer._txn_manager
        for name in ("offset_committed", "_transition_to", "wait_for_transaction_end"):
            assert callable(getattr(txn, name))
        for name in ("_pending_txn_offsets", "_transaction_waiter", "transactional_id"):
            assert hasattr(txn, name)
    finally:
        await producer.stop()
