"""The plumbing end to end: an independent producer in, the worker, an independent consumer out."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from pipeline.settings import Settings
from tests.integration.conftest import WorkerProcess

pytestmark = pytest.mark.integration

N_EVENTS = 300


async def produce(settings: Settings, topic: str, n: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
    await producer.start()
    try:
        for i in range(n):
            await producer.send(topic, value=b'{"n": %d}' % i, key=b"user-%d" % (i % 17))
        await producer.flush()
    finally:
        await producer.stop()


async def consume(settings: Settings, topic: str, n: int, wait_s: float) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        enable_auto_commit=False,
    )
    await consumer.start()
    values: list[bytes] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while len(values) < n and loop.time() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            values.extend(m.value for msgs in batches.values() for m in msgs if m.value)
    finally:
        await consumer.stop()
    return values


def test_worker_moves_every_event_from_input_to_output(
    pipeline_settings: Settings, start_worker: Callable[[Settings], WorkerProcess]
) -> None:
    worker = start_worker(pipeline_settings)
    worker.wait_ready()
    asyncio.run(produce(pipeline_settings, pipeline_settings.topic("raw.tag"), N_EVENTS))
    out = asyncio.run(
        consume(pipeline_settings, pipeline_settings.topic("decisions.audit"), N_EVENTS, 60)
    )
    assert len(out) == N_EVENTS
    assert worker.proc.poll() is None
