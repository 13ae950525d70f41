"""The barrier: a stage's table inputs caught up before its stream records are processed.

Before a batch's stream records are decided, the table-input partitions they depend on
(`consent.changes`) are read up to their end offsets as of that moment. A change Kafka
acknowledged before an event was produced is therefore applied before that event is
decided. The end offsets come on a connection of their own: on the
consumer's, the request would queue behind a fetch the broker holds for up to
`fetch_max_wait_ms`.

A barrier folds at most `limit` records: a table input far behind (a worker starting on a
large consent topic, or taking over partitions) is caught up over several transactions of
bounded size while the stream records wait, instead of in one transaction that stages the
whole backlog in memory.
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
    limit: int,
    on_record: Callable[[TopicPartition, ConsumerRecord[bytes, bytes]], None],
) -> tuple[float, bool]:
    """Read `partitions` with `consumer` up to their end offsets now, or `limit` records.

    Returns the seconds it took and whether every partition reached its end offset (False:
    `limit` records were read first; the caller processes no stream record this time).

    Args:
        offsets: a client on its own connection, asked for the end offsets.
        limit: the most records read in one call.
        on_record: called for every record read, in offset order.

    Raises:
        BarrierTimeout: not caught up within `timeout_s`.
    """
    started = time.monotonic()
    deadline = started + timeout_s
    tps = sorted(partitions)
    ends = await offsets.end_offsets(tps)
    read = 0
    behind = await _behind(consumer, tps, ends)
    while behind:
        if read >= limit:
            return time.monotonic() - started, False
        if time.monotonic() > deadline:
            raise BarrierTimeout("a table input did not catch up")
        # Every partition still behind in one call, so their fetches are waited for together.
        got = await consumer.getmany(*behind, timeout_ms=FETCH_TIMEOUT_MS, max_records=limit - read)
        for tp, records in got.items():
            for record in records:
                on_record(tp, record)
            read += len(records)
        behind = await _behind(consumer, behind, ends)
    return time.monotonic() - started, True


async def _behind(
    consumer: AIOKafkaConsumer, tps: Iterable[TopicPartition], ends: dict[TopicPartition, int]
) -> list[TopicPartition]:
    """The partitions of `tps` whose position is short of their end offset."""
    return [tp for tp in tps if await consumer.position(tp) < ends[tp]]
