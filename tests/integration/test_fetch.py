"""How the engine takes a batch from a real broker: what the consumer holds, topped up with
what reached the broker meanwhile."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline.runtime.engine import Batch, take_batch
from pipeline.settings import Settings
from tests.integration.kafka_io import create_topic, produce

pytestmark = pytest.mark.integration

TOP_UP_MS = 5_000
"""The test's top-up bound: generous on a loaded machine (the top-up returns once its fetch
does); the engine's own is `pipeline.runtime.engine.TOP_UP_MS`."""
DEADLINE_S = 30.0


async def _held_one_then_nine(
    bootstrap: str, consumer: AIOKafkaConsumer, tp: TopicPartition, start: int
) -> None:
    """One record the consumer's fetch brings and holds, then nine left on the broker."""
    await produce(bootstrap, [(tp.topic, b"k", f"v{start}".encode())])
    # A fetch that brought the record moved the consumer's high watermark past it.
    deadline = time.monotonic() + DEADLINE_S
    while (consumer.highwater(tp) or 0) <= start:
        assert time.monotonic() < deadline, "the consumer never fetched the held record"
        await asyncio.sleep(0.01)
    await produce(bootstrap, [(tp.topic, b"k", f"v{start + i}".encode()) for i in range(1, 10)])
    await asyncio.sleep(0.3)  # past aiokafka's prefetch backoff (0.1 s)


async def _batches(settings: Settings, topic: str) -> list[list[bytes]]:
    await create_topic(settings, topic, 1)
    bootstrap = settings.kafka_bootstrap_servers
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    taken: list[list[bytes]] = []

    def values(batch: Batch) -> list[bytes]:
        return [record.value for record in batch.get(tp, [])]

    async def take(limit: int, top_up_ms: int = TOP_UP_MS) -> Batch:
        return await take_batch(consumer, limit=limit, poll_timeout_ms=50, top_up_ms=top_up_ms)

    try:
        assert await consumer.getmany(timeout_ms=200) == {}
        # aiokafka alone: a partition is fetched again only once its records are taken.
        await _held_one_then_nine(bootstrap, consumer, tp, 0)
        taken.append(values(await consumer.getmany(timeout_ms=50, max_records=100)))
        taken.append(values(await consumer.getmany(timeout_ms=TOP_UP_MS, max_records=100)))
        # The engine's batch takes both at once, and never more than its limit.
        await _held_one_then_nine(bootstrap, consumer, tp, 10)
        taken.append(values(await take(limit=100)))
        await _held_one_then_nine(bootstrap, consumer, tp, 20)
        taken.append(values(await take(limit=4)))
        taken.append(values(await take(limit=100, top_up_ms=50)))  # nothing more comes
        return taken
    finally:
        await consumer.stop()


def test_a_batch_takes_what_reached_the_broker_while_the_consumer_held_records(
    settings_factory: Callable[..., Settings], unique_name: Callable[[str], str]
) -> None:
    taken = asyncio.run(_batches(settings_factory(), unique_name("fetch")))

    def v(*numbers: int) -> list[bytes]:
        return [f"v{n}".encode() for n in numbers]

    assert taken[0] == v(0)
    assert taken[1] == v(*range(1, 10))
    assert taken[2] == v(*range(10, 20))
    assert taken[3] == v(20, 21, 22, 23)
    assert taken[4] == v(*range(24, 30))
