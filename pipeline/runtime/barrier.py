"""The barrier: a stage's table inputs caught up before its stream records are processed.

Before a batch's stream records are decided, the table-input partitions they depend on
(`consent.changes`) are read up to their end offsets as of that moment. A change Kafka
acknowledged before an event was produced is therefore applied before that event is
decided (SPEC §7.2). The end offsets come on a connection of their own: on the
consumer's, the request would queue behind a fetch the broker holds for up to
`fetch_max_wait_ms`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from pipeline.errors import PipelineError

FETCH_TIMEOUT_MS = 100


class BarrierTimeout(PipelineError):
    """A table input could not be caught up in time; the batch is retried."""


async def catch_up(
    consumer: AIOKafkaConsumer,
    offsets: AIOKafkaConsumer,
    partitions: Iterable[TopicPartition],
    *,
    timeout_s: float,
    on_record: Callable[[TopicPartition, ConsumerRecord[bytes, bytes]], None],
) -> float:
    """Read `partitions` with `consumer` up to their end offsets now; returns the seconds.

    Args:
        offsets: a client on its own connection, asked for the end offsets.
        on_record: called for every record read, in offset order.

    Raises:
        BarrierTimeout: not caught up within `timeout_s`.
    """
    started = time.monotonic()
    deadline = started + timeout_s
    tps = sorted(partitions)
    ends = await offsets.end_offsets(tps)
    for tp in tps:
        while await consumer.position(tp) < ends[tp]:
            if time.monotonic() > deadline:
                raise BarrierTimeout("a table input did not catch up")
            got = await consumer.getmany(tp, timeout_ms=FETCH_TIMEOUT_MS)
            for record in got.get(tp, []):
                on_record(tp, record)
    return time.monotonic() - started
