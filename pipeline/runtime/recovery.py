"""Recovery: a table's local stores brought up to the end of their changelogs.

A store remembers the changelog offset it has applied up to (its checkpoint); recovery
replays each newly assigned partition's changelog from there to the end, in modest
fetches (each record is a Python object until it is written). RocksDB stores keep their
checkpoint across restarts, so a restarted worker replays only what was written since;
memory stores start at 0 and replay everything.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline.kafka.config import client_options
from pipeline.settings import Settings
from pipeline.state.tables import Table

RESTORE_BATCH = 10_000
"""Changelog records restored per store write."""


async def recover(
    settings: Settings,
    tables: Iterable[Table],
    partitions: set[int],
    *,
    alive: Callable[[], None],
) -> None:
    """Replay each table's changelog, for `partitions`, from its store's checkpoint.

    Args:
        alive: called on every fetch, so liveness counts recovery as progress.
    """
    reader = AIOKafkaConsumer(
        **client_options(settings),
        client_id=f"{settings.app_id}-{settings.instance_name}-recovery",
        enable_auto_commit=False,
        isolation_level="read_committed",
        max_partition_fetch_bytes=1024 * 1024,
        fetch_max_bytes=8 * 1024 * 1024,
    )
    await reader.start()
    try:
        tps = {
            TopicPartition(table.changelog_topic, p): (table, p)
            for table in tables
            for p in partitions
        }
        reader.assign(list(tps))
        ends = await reader.end_offsets(list(tps))
        for tp, (table, partition) in tps.items():
            reader.seek(tp, table.stores[partition].checkpoint())
        pending = {tp for tp in tps if await reader.position(tp) < ends[tp]}
        while pending:
            alive()
            got = await reader.getmany(*pending, timeout_ms=500, max_records=RESTORE_BATCH)
            for tp, records in got.items():
                table, partition = tps[tp]
                items = {r.key: r.value for r in records if r.key is not None}
                table.restore(partition, items, records[-1].offset + 1)
            for tp in list(pending):
                if await reader.position(tp) >= ends[tp]:
                    pending.discard(tp)
    finally:
        await reader.stop()
