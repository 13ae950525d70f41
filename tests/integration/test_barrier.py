"""The barrier against a real broker: it reads table inputs up to their end offsets, and
never more than its limit in one call."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from pipeline.runtime.barrier import catch_up
from pipeline.runtime.engine import PREFETCH_BACKOFF_S, shorten_prefetch_backoff
from pipeline.settings import Settings
from tests.integration.kafka_io import create_topic, produce

pytestmark = pytest.mark.integration

RECORDS = 1_000
LIMIT = 300


async def _fill(settings: Settings, topic: str) -> None:
    await create_topic(settings, topic, 2)
    records = [(topic, f"k{i}".encode(), f"v{i}".encode()) for i in range(RECORDS)]
    await produce(settings.kafka_bootstrap_servers, records)


async def _catch_up_in_steps(settings: Settings, topic: str) -> list[tuple[int, bool]]:
    bootstrap = settings.kafka_bootstrap_servers
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    offsets = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    await offsets.start()
    tps = [TopicPartition(topic, p) for p in range(2)]
    consumer.assign(tps)
    steps: list[tuple[int, bool]] = []
    seen: list[tuple[int, int]] = []

    def on_record(tp: TopicPartition, record: ConsumerRecord[bytes, bytes]) -> None:
        seen.append((tp.partition, record.offset))

    try:
        while len(steps) < 10 and not (steps and steps[-1][1]):
            before = len(seen)
            _, caught_up = await catch_up(
                consumer, offsets, tps, timeout_s=30, limit=LIMIT, on_record=on_record
            )
            steps.append((len(seen) - before, caught_up))
        ends = await offsets.end_offsets(tps)
        assert [await consumer.position(tp) for tp in tps] == [ends[tp] for tp in tps]
    finally:
        await consumer.stop()
        await offsets.stop()
    assert len(seen) == len(set(seen)) == RECORDS
    for partition in range(2):
        offsets_read = [o for p, o in seen if p == partition]
        assert offsets_read == sorted(offsets_read) == list(range(len(offsets_read)))
    return steps


def test_a_backlog_is_caught_up_in_calls_of_at_most_the_limit(
    settings_factory: Callable[..., Settings], unique_name: Callable[[str], str]
) -> None:
    settings = settings_factory()
    topic = unique_name("barrier")
    asyncio.run(_fill(settings, topic))

    steps = asyncio.run(_catch_up_in_steps(settings, topic))

    assert [n for n, _ in steps] == [300, 300, 300, 100]
    assert [done for _, done in steps] == [False, False, False, True]


async def _prefetch_backoff(settings: Settings, topic: str) -> float:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False
    )
    await consumer.start()
    consumer.assign([TopicPartition(topic, 0)])
    try:
        await consumer.getmany(timeout_ms=200)  # its routines settle before it stops
        assert shorten_prefetch_backoff(consumer)
        backoff: float = consumer._fetcher._prefetch_backoff
        return backoff
    finally:
        await consumer.stop()


def test_the_engine_shortens_aiokafkas_prefetch_backoff(
    settings_factory: Callable[..., Settings], unique_name: Callable[[str], str]
) -> None:
    """The setting lives on a private attribute of aiokafka's fetcher: a new aiokafka
    without it fails here, not silently in the latency of every hop."""
    settings = settings_factory()
    topic = unique_name("prefetch")
    asyncio.run(_fill(settings, topic))
    assert asyncio.run(_prefetch_backoff(settings, topic)) == PREFETCH_BACKOFF_S
