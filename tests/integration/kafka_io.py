"""Independent Kafka clients for tests: a producer writing what a tag or SDK backend would,
and a `read_committed` consumer reading what downstream users would."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import NewTopic

from pipeline.core.trust import TRUST_HEADER, trust_signature
from pipeline.kafka.admin import admin_client
from pipeline.settings import Settings
from schemas import codec
from tests.conftest import TRUST_KEY


@dataclass(frozen=True)
class Read:
    """A record read back from an output topic."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()

    def json(self) -> Any:
        return codec.loads(self.value)


def subject_key(event: dict[str, Any]) -> bytes:
    """The subject key, computed independently of the pipeline's code."""
    if event.get("user_id"):
        return str(event["user_id"]).encode()
    device = (event.get("device") or {}).get("device_id")
    cookie = (event.get("browser") or {}).get("cookie_id")
    return f"anon:{device or cookie or event['event_id']}".encode()


Produced = (
    tuple[str, bytes | None, bytes | None]
    | tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]
)
"""(topic, key, value) or (topic, key, value, headers)."""


def signed(topic: str, key: bytes | None, value: bytes) -> Produced:
    """A record a trusted producer writes: its user_id counts."""
    return (topic, key, value, [(TRUST_HEADER, trust_signature(TRUST_KEY, value))])


async def create_topic(settings: Settings, topic: str, partitions: int) -> None:
    """Create `topic` with `partitions` partitions (one replica) on the settings' cluster."""
    admin = admin_client(settings)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(topic, num_partitions=partitions, replication_factor=1)]
        )
    finally:
        await admin.close()


async def produce(
    bootstrap: str, records: Iterable[Produced], *, partitioner: Any = None
) -> list[tuple[str, int, int]]:
    """Write records in order, each acknowledged; returns their positions.

    Args:
        partitioner: aiokafka's `partitioner` option (default: murmur2, as the Java client).
    """
    options: dict[str, Any] = {} if partitioner is None else {"partitioner": partitioner}
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, **options
    )
    await producer.start()
    try:
        positions = []
        for topic, key, value, *rest in records:
            headers = rest[0] if rest else None
            metadata = await (await producer.send(topic, value, key=key, headers=headers))
            positions.append((topic, metadata.partition, metadata.offset))
        return positions
    finally:
        await producer.stop()


def produce_sync(
    bootstrap: str, records: Iterable[Produced], *, partitioner: Any = None
) -> list[tuple[str, int, int]]:
    return asyncio.run(produce(bootstrap, list(records), partitioner=partitioner))


async def read_topics(
    bootstrap: str,
    topics: list[str],
    done: Callable[[dict[str, list[Read]]], bool],
    timeout_s: float = 60.0,
    settle_s: float = 1.0,
) -> dict[str, list[Read]]:
    """Read `topics` from the start (read_committed) until `done` holds, then `settle_s` more.

    The extra time catches records that should not be there (duplicates, leaks).
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        isolation_level="read_committed",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    got: dict[str, list[Read]] = {t: [] for t in topics}
    try:
        partitions = []
        for topic in topics:
            for p in consumer.partitions_for_topic(topic) or await _partitions(consumer, topic):
                partitions.append(TopicPartition(topic, p))
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + timeout_s
        settle_until: float | None = None
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for tp, messages in batches.items():
                got[tp.topic].extend(
                    Read(tp.topic, tp.partition, m.offset, m.key, m.value or b"", tuple(m.headers))
                    for m in messages
                )
            if settle_until is None and done(got):
                settle_until = time.monotonic() + settle_s
            if settle_until is not None and time.monotonic() >= settle_until:
                break
    finally:
        await consumer.stop()
    return got


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()
    return consumer.partitions_for_topic(topic) or set()


def read_sync(
    bootstrap: str,
    topics: list[str],
    done: Callable[[dict[str, list[Read]]], bool],
    timeout_s: float = 60.0,
    settle_s: float = 1.0,
) -> dict[str, list[Read]]:
    return asyncio.run(read_topics(bootstrap, topics, done, timeout_s, settle_s))
