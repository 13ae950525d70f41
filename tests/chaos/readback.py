"""Read whole topics back as a downstream consumer would: `read_committed`, from the start."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline.errors import KafkaUnavailable
from pipeline.kafka.config import client_options
from pipeline.settings import Settings


@dataclass(frozen=True, slots=True)
class Message:
    """One record read back; `timestamp` is the broker's append time on input topics."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()

    def header(self, name: str) -> bytes | None:
        """The value of the first header called `name`, if any."""
        return next((value for key, value in self.headers if key == name), None)


async def read_topic(
    settings: Settings,
    topic: str,
    handle: Callable[[Message], None],
    *,
    timeout_s: float = 600.0,
) -> int:
    """Hand every committed record of `topic` to `handle`, partition order kept; returns how many.

    Reads until each partition's position reaches the end offset taken at the start (the
    last stable offset: open transactions are waited for).

    Raises:
        KafkaUnavailable: the end was not reached in `timeout_s`.
    """
    consumer = AIOKafkaConsumer(
        **client_options(settings),
        client_id="consent-pipeline-chaos-readback",
        isolation_level="read_committed",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    count = 0
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return 0
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        pending = {tp for tp in tps if ends[tp] > 0}
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise KafkaUnavailable(f"could not read {topic} to its end in {timeout_s:.0f}s")
            batches = await consumer.getmany(*pending, timeout_ms=500, max_records=20_000)
            for tp, records in batches.items():
                for r in records:
                    handle(
                        Message(
                            topic,
                            tp.partition,
                            r.offset,
                            r.timestamp,
                            r.key,
                            r.value,
                            tuple(r.headers),
                        )
                    )
                count += len(records)
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
    finally:
        await consumer.stop()
    return count
