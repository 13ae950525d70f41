"""Recovery: a table's local stores brought up to the committed end of their changelogs.

A store remembers the changelog offset it has applied up to (its checkpoint); recovery
replays each assigned partition's changelog from there, with a `read_committed` reader
(nothing of an aborted transaction is ever restored), in modest fetches (each record is a
Python object until it is written). RocksDB stores keep their checkpoint across restarts,
so a restarted worker replays only what was written since; memory stores start at 0 and
replay everything.

It reads up to the changelog's high watermark as it was when recovery began, so it waits
for every transaction that wrote there before to end. A transaction the previous owner
committed can still lack its commit markers on the changelog when its offsets are already
stable (the coordinator writes the markers of each partition on its own); stopping at the
last stable offset instead would leave that transaction's records out of the store, and
the new owner's own records after them. A transaction a dropped worker still holds open is
aborted once it tries to commit, or by the coordinator after its timeout, and bounds the
wait (`timeout_s`).

Recovery runs outside the rebalance callback, with the group's heartbeats going on, and
applies what it reads in steps under the engine's batch lock (`apply`), each checking
that the assignment it recovers is still the current one: a rebalance that arrives
meanwhile is never held up by it, and ends it. A store whose checkpoint lies beyond its
changelog's end (the topic recreated, or records lost to an unclean leader election) is
not trusted: it is emptied and rebuilt from the changelog's start.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline.errors import PipelineError
from pipeline.kafka.config import client_options
from pipeline.settings import Settings
from pipeline.state.tables import Table

log = logging.getLogger(__name__)

RESTORE_BATCH = 10_000
"""Changelog records restored per store write."""


class RecoveryInterrupted(PipelineError):
    """A rebalance replaced the assignment being recovered."""


class RecoveryStalled(PipelineError):
    """A changelog did not reach its end in time: a transaction there stayed open."""


Apply = Callable[[Callable[[], None]], Awaitable[None]]
"""Runs a step that changes the stores, under the batch lock, if the assignment is still
current; raises `RecoveryInterrupted` otherwise."""


async def recover(
    settings: Settings,
    partitions: Mapping[Table, Iterable[int]],
    *,
    apply: Apply,
    alive: Callable[[], None],
    timeout_s: float,
) -> int:
    """Replay each table's changelog, for its `partitions`, from each store's checkpoint to
    the committed end; returns the number of records restored.

    Args:
        apply: runs each change of the stores (`Apply`).
        alive: called on every fetch, so liveness counts recovery as progress.
        timeout_s: how long a changelog may take to reach its end (its open transactions
            to end).

    Raises:
        RecoveryInterrupted: the assignment changed meanwhile.
        RecoveryStalled: some changelog did not reach its end within `timeout_s`.
    """
    tps = {
        TopicPartition(table.changelog_topic, p): (table, p)
        for table, numbers in partitions.items()
        for p in numbers
    }
    if not tps:
        return 0
    reader = AIOKafkaConsumer(
        **client_options(settings),
        client_id=f"{settings.app_id}-{settings.instance_name}-recovery",
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=1024 * 1024,
        fetch_max_bytes=8 * 1024 * 1024,
    )
    watermarks = AIOKafkaConsumer(
        **client_options(settings),
        client_id=f"{settings.app_id}-{settings.instance_name}-recovery-ends",
        isolation_level="read_uncommitted",
    )
    await reader.start()
    await watermarks.start()
    deadline = time.monotonic() + timeout_s
    restored = 0
    try:
        reader.assign(list(tps))
        ends = await watermarks.end_offsets(list(tps))
        starts: dict[TopicPartition, int] = {}

        def check_checkpoints() -> None:
            for tp, (table, partition) in tps.items():
                checkpoint = table.stores[partition].checkpoint()
                if checkpoint > ends[tp]:
                    log.warning(
                        "%s partition %d: the store is ahead of its changelog (%d > %d); "
                        "rebuilding it from the changelog",
                        table.name,
                        partition,
                        checkpoint,
                        ends[tp],
                    )
                    table.rebuild(partition)
                    checkpoint = 0
                starts[tp] = checkpoint

        await apply(check_checkpoints)
        for tp, start in starts.items():
            reader.seek(tp, start)
        pending = {tp for tp in tps if starts[tp] < ends[tp]}
        while pending:
            alive()
            if time.monotonic() > deadline:
                raise RecoveryStalled(
                    f"{len(pending)} changelog partitions did not reach their end in "
                    f"{timeout_s:.0f}s (a transaction there stayed open)"
                )
            got = await reader.getmany(*pending, timeout_ms=500, max_records=RESTORE_BATCH)

            def write(got: dict[TopicPartition, list] = got) -> None:  # type: ignore[type-arg]
                for tp, records in got.items():
                    table, partition = tps[tp]
                    items = {r.key: r.value for r in records if r.key is not None}
                    table.restore(partition, items, records[-1].offset + 1)

            if got:
                await apply(write)
                restored += sum(len(records) for records in got.values())
            for tp in list(pending):
                if await reader.position(tp) >= ends[tp]:
                    pending.discard(tp)
    finally:
        for client in (reader, watermarks):
            with contextlib.suppress(Exception):
                await client.stop()
    return restored
