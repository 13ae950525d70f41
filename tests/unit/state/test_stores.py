"""Local stores: the same behaviour in memory and in RocksDB, and RocksDB's memory budget."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.errors import StoreLocked, WorkerFault
from pipeline.settings import Settings
from pipeline.state.folder import FolderInUse, StateFolder, holder
from pipeline.state.stores import MemoryStore, RocksMemory, Store, StoreCorrupted, open_store
from pipeline.state.tables import Table


@pytest.fixture(params=["memory", "rocksdb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    return open_store(request.param, tmp_path, "consent", 0, RocksMemory(16 * 1024 * 1024))


def test_writes_deletes_and_checkpoint_apply_together(store: Store) -> None:
    assert store.checkpoint() == 0
    store.write({b"a": b"1", b"b": b"2"}, 5)
    store.write({b"a": None, b"c": b"3"}, None)
    assert (store.get(b"a"), store.get(b"b"), store.get(b"c")) == (None, b"2", b"3")
    assert store.checkpoint() == 5
    assert sorted(store.scan()) == [b"b", b"c"]
    store.close()


def test_rocksdb_state_survives_reopening(tmp_path: Path) -> None:
    memory = RocksMemory(16 * 1024 * 1024)
    first = open_store("rocksdb", tmp_path, "consent", 3, memory)
    first.write({b"user-1": b"state"}, 42)
    first.close()
    again = open_store("rocksdb", tmp_path, "consent", 3, memory)
    assert again.get(b"user-1") == b"state"
    assert again.checkpoint() == 42
    again.close()


def test_rocksdb_stores_share_one_bounded_write_budget(tmp_path: Path) -> None:
    limit = 16 * 1024 * 1024
    memory = RocksMemory(limit)
    stores = [open_store("rocksdb", tmp_path, "consent", p, memory) for p in range(6)]
    value = b"x" * 400
    for round_ in range(20):
        for p, store in enumerate(stores):
            store.write({b"%d-%d-%d" % (p, round_, i): value for i in range(2000)}, round_)
    # Every store's memtables are charged to the one manager (usage 0 if they were not),
    # which flushes them when they pass half of the budget.
    assert memory.write_buffers.enabled()
    assert memory.write_buffers.get_buffer_size() == limit // 2
    assert memory.write_buffers.get_usage() > 0
    assert all(s.get(b"%d-19-1999" % p) == value for p, s in enumerate(stores))
    for store in stores:
        store.close()


def test_memory_store_keeps_exact_copies() -> None:
    store = MemoryStore()
    buffer = bytearray(b"value")
    store.write({b"k": bytes(buffer)}, None)
    buffer[:] = b"other"
    assert store.get(b"k") == b"value"


def test_rocksdb_memory_setting_is_validated() -> None:
    with pytest.raises(ValueError, match="rocksdb_memory_mb"):
        Settings(rocksdb_memory_mb=1)


def test_a_store_whose_lock_another_holds_is_a_worker_fault_naming_it(tmp_path: Path) -> None:
    memory = RocksMemory(16 * 1024 * 1024)
    holding = open_store("rocksdb", tmp_path, "dedup", 2, memory)

    with pytest.raises(StoreLocked) as refused:
        open_store("rocksdb", tmp_path, "dedup", 2, memory)

    assert "the dedup store of partition 2" in str(refused.value)
    assert refused.value.store == ("dedup", 2)
    holding.close()


def test_a_file_in_the_way_of_the_state_folder_is_a_worker_fault(tmp_path: Path) -> None:
    (tmp_path / "consent").write_text("not a folder")

    with pytest.raises(WorkerFault) as refused:
        open_store("rocksdb", tmp_path, "consent", 0, RocksMemory(16 * 1024 * 1024))

    assert "PIPELINE_DATA_DIR" in str(refused.value)
    assert "not a directory" in str(refused.value)


def test_corrupt_files_are_told_apart_and_an_emptied_store_opens(tmp_path: Path) -> None:
    memory = RocksMemory(16 * 1024 * 1024)
    store = open_store("rocksdb", tmp_path, "consent", 1, memory)
    store.write({b"user": b"state"}, 7)
    store.close()
    for manifest in (tmp_path / "consent" / "1").glob("MANIFEST-*"):
        manifest.write_bytes(b"garbage" * 100)

    with pytest.raises(StoreCorrupted):
        open_store("rocksdb", tmp_path, "consent", 1, memory)
    rebuilt = open_store("rocksdb", tmp_path, "consent", 1, memory, empty=True)

    assert rebuilt.checkpoint() == 0
    assert rebuilt.get(b"user") is None
    rebuilt.close()


def test_a_savepoint_takes_back_what_a_failed_record_staged() -> None:
    table = Table("consent", "changes", lambda _t, _p, _e: MemoryStore())
    table.assign(0)
    table.put(0, b"kept", b"1")
    table.put(0, b"changed", b"before")

    table.savepoint()
    table.put(0, b"changed", b"after")
    table.put(0, b"new", b"2")
    table.rollback()
    table.savepoint()
    table.put(0, b"also-kept", b"3")
    table.release_savepoint()

    assert table.staged == {0: {b"kept": b"1", b"changed": b"before", b"also-kept": b"3"}}


def test_one_worker_at_a_time_holds_a_state_folder(tmp_path: Path) -> None:
    first, second = StateFolder(tmp_path / "app"), StateFolder(tmp_path / "app")
    first.lock()

    with pytest.raises(FolderInUse) as refused:
        second.lock()

    assert f"pid {os.getpid()}" in str(refused.value)
    assert holder(tmp_path / "app") == os.getpid()
    first.unlock()
    second.lock()
    second.unlock()


def test_a_state_folder_that_cannot_be_made_is_a_worker_fault(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")

    with pytest.raises(WorkerFault) as refused:
        StateFolder(tmp_path / "file" / "app").lock()

    assert "PIPELINE_DATA_DIR" in str(refused.value)
