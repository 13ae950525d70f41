"""Recovery against the real broker: a store is brought to the end of its changelog as the
cluster had it, waiting for a transaction still open there, never restoring an aborted one,
and rebuilt when it claims more than the changelog holds; partitions added to a table's
topic stop a running worker."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import NewPartitions

from pipeline import catalogue
from pipeline.kafka.admin import admin_client
from pipeline.runtime.recovery import recover
from pipeline.settings import Settings
from pipeline.state.stores import RocksMemory, Store, open_store
from pipeline.state.tables import Table
from tests.integration.conftest import WorkerProcess
from tests.integration.kafka_io import create_topic, produce

pytestmark = pytest.mark.integration


def rocks_table(root: Path, topic: str) -> Table:
    memory = RocksMemory(16 * 1024 * 1024)

    def store(name: str, partition: int, empty: bool) -> Store:
        return open_store("rocksdb", root, name, partition, memory, empty=empty)

    table = Table("consent", topic, store)
    table.assign(0)
    return table


async def apply_now(step: Callable[[], None]) -> None:
    step()


async def test_a_store_claiming_more_than_its_changelog_is_rebuilt_from_it(
    settings_factory: Callable[..., Settings], unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    settings = settings_factory()
    topic = unique_name("changelog")
    await create_topic(settings, topic, 1)
    await produce(
        settings.kafka_bootstrap_servers, [(topic, f"k{i}".encode(), b"v") for i in range(3)]
    )
    table = rocks_table(tmp_path, topic)
    table.stores[0].write({b"stale": b"from another cluster"}, 1_000)

    restored = await recover(
        settings, {table: [0]}, apply=apply_now, alive=lambda: None, timeout_s=30
    )

    store = table.stores[0]
    assert restored == 3
    assert store.get(b"stale") is None
    assert [store.get(f"k{i}".encode()) for i in range(3)] == [b"v"] * 3
    assert store.checkpoint() == 3
    table.close()


async def test_recovery_waits_for_an_open_transaction_and_never_restores_an_aborted_one(
    settings_factory: Callable[..., Settings], unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    settings = settings_factory()
    topic = unique_name("changelog")
    await create_topic(settings, topic, 1)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, transactional_id=unique_name("txn")
    )
    await producer.start()
    try:
        async with producer.transaction():
            await producer.send_and_wait(topic, b"committed", key=b"a", partition=0)
        await producer.begin_transaction()
        await producer.send_and_wait(topic, b"aborted", key=b"b", partition=0)
        table = rocks_table(tmp_path, topic)
        recovery = asyncio.ensure_future(
            recover(settings, {table: [0]}, apply=apply_now, alive=lambda: None, timeout_s=30)
        )
        await asyncio.sleep(1.5)
        assert not recovery.done()  # the open transaction's records may yet be committed
        await producer.abort_transaction()
        await recovery
        async with producer.transaction():
            await producer.send_and_wait(topic, b"later", key=b"c", partition=0)
        await recover(settings, {table: [0]}, apply=apply_now, alive=lambda: None, timeout_s=30)
    finally:
        await producer.stop()

    store = table.stores[0]
    assert store.get(b"a") == b"committed"
    assert store.get(b"b") is None
    assert store.get(b"c") == b"later"
    table.close()


def test_partitions_added_to_consent_changes_stop_a_running_worker(
    pipeline_settings: Settings, start_worker: Callable[[Settings], WorkerProcess]
) -> None:
    worker = start_worker(pipeline_settings)
    worker.wait_ready()
    consent = pipeline_settings.topic(catalogue.CONSENT_CHANGES)

    async def grow() -> None:
        admin = admin_client(pipeline_settings)
        await admin.start()
        try:
            await admin.create_partitions(
                {consent: NewPartitions(pipeline_settings.topic_partitions + 1)}
            )
        finally:
            await admin.close()

    asyncio.run(grow())
    code = worker.proc.wait(timeout=120)

    assert code != 0
    assert f"partitions were added to {consent}" in worker.output()
