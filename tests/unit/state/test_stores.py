"""Local stores: the same behaviour in memory and in RocksDB, and RocksDB's memory budget."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.settings import Settings
from pipeline.state.stores import MemoryStore, RocksMemory, Store, open_store


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
