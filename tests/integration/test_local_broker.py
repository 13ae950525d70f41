"""The local broker keeps topics and their data across a stop and a start."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.conftest import KAFKA_SH, TEST_KAFKA_PORT

pytestmark = pytest.mark.integration


async def _write(bootstrap: str, topic: str, n: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, 2, 1)])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(n):
            await producer.send(topic, b"record-%d" % i, key=b"k%d" % i)
    finally:
        await producer.stop()


async def _read_all(
    bootstrap: str, topic: str, expected: int, timeout_s: float = 60
) -> list[bytes]:
    """Read `topic` from the start until `expected` values arrived or `timeout_s` passed
    (right after a restart, partition leaders may take a while to be elected)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    values: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(values) < expected and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=1000)
            values.extend(m.value for msgs in batches.values() for m in msgs if m.value)
    finally:
        await consumer.stop()
    return values


@pytest.mark.skipif(
    bool(os.environ.get("KAFKA_BOOTSTRAP_SERVERS")), reason="the broker is not the local one"
)
def test_restart_keeps_topics_and_data(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    topic = unique_name("restart")
    asyncio.run(_write(kafka_bootstrap, topic, 50))
    env = {**os.environ, "KAFKA_PORT": TEST_KAFKA_PORT}
    subprocess.run([str(KAFKA_SH), "down"], env=env, check=True)
    subprocess.run([str(KAFKA_SH), "down"], env=env, check=True)  # idempotent
    subprocess.run([str(KAFKA_SH), "up"], env=env, check=True)
    subprocess.run([str(KAFKA_SH), "up"], env=env, check=True)  # idempotent
    values = asyncio.run(_read_all(kafka_bootstrap, topic, 50))
    assert sorted(values) == sorted(b"record-%d" % i for i in range(50))
