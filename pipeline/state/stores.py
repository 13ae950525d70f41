"""Local key-value stores for the worker's tables: one per table and partition.

`rocksdb` (rocksdict) keeps state on disk across restarts, so recovery only replays the
changelog written since the store's checkpoint; `memory` starts empty and replays it all.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from rocksdict import BlockBasedOptions, Cache, Options, Rdict, WriteBatch, WriteBufferManager

from pipeline.errors import StoreLocked, WorkerFault

CHECKPOINT_KEY = b"\x00checkpoint"
"""Where a store keeps the next changelog offset it has not applied yet."""
MEMTABLE_BYTES = 4 * 1024 * 1024
"""One store's write buffer: small, because a worker opens one store per table and
partition, and RocksDB's default (64 MiB, two of them) would cost gigabytes."""
BLOOM_BITS_PER_KEY = 10
"""Bloom filter size: a lookup of a key the store lacks (most match keys link nobody) skips
the data blocks of all but about 1% of the files it would otherwise read."""
DEFAULT_ROCKSDB_MEMORY = 128 * 1024 * 1024
"""The default of `PIPELINE_ROCKSDB_MEMORY_MB`."""


class Store(Protocol):
    """A partition's local state: bytes to bytes, with a changelog checkpoint."""

    def get(self, key: bytes) -> bytes | None: ...

    def write(self, items: dict[bytes, bytes | None], checkpoint: int | None) -> None:
        """Apply puts (a value) and deletes (None) and move the checkpoint, atomically."""

    def checkpoint(self) -> int:
        """The next changelog offset to apply (0 for a new store)."""

    def scan(self) -> Iterator[bytes]: ...

    def approximate_len(self) -> int: ...

    def close(self) -> None: ...

    @property
    def persistent(self) -> bool:
        """Whether the store lives on disk (and holds a lock there while it is open)."""


class MemoryStore:
    """A store in a dict: for tests and stateless runs."""

    persistent = False

    def __init__(self) -> None:
        self._data: dict[bytes, bytes] = {}
        self._checkpoint = 0

    def get(self, key: bytes) -> bytes | None:
        return self._data.get(key)

    def write(self, items: dict[bytes, bytes | None], checkpoint: int | None) -> None:
        for key, value in items.items():
            if value is None:
                self._data.pop(key, None)
            else:
                # orjson's output keeps a 4 KiB allocation however short it is: keep a copy
                # of exactly the value's size, or small values would cost 4 KiB each.
                self._data[key] = bytes(memoryview(value))
        if checkpoint is not None:
            self._checkpoint = checkpoint

    def checkpoint(self) -> int:
        return self._checkpoint

    def scan(self) -> Iterator[bytes]:
        return iter(list(self._data))

    def approximate_len(self) -> int:
        return len(self._data)

    def close(self) -> None:
        self._data.clear()


class RocksMemory:
    """One memory budget for every RocksDB store of a process: a block cache that the
    stores' write buffers are charged to, so memtables and cached blocks together stay
    near `limit_bytes` however many partitions the worker owns."""

    def __init__(self, limit_bytes: int = DEFAULT_ROCKSDB_MEMORY) -> None:
        self.cache = Cache(limit_bytes)
        self.write_buffers = WriteBufferManager.new_write_buffer_manager_with_cache(
            limit_bytes // 2, False, self.cache
        )

    def options(self) -> Options:
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        options.set_write_buffer_size(MEMTABLE_BYTES)
        options.set_max_write_buffer_number(2)
        options.set_write_buffer_manager(self.write_buffers)
        table = BlockBasedOptions()
        table.set_block_cache(self.cache)
        table.set_cache_index_and_filter_blocks(True)
        table.set_bloom_filter(BLOOM_BITS_PER_KEY, False)
        options.set_block_based_table_factory(table)
        return options


class RocksStore:
    """A store in RocksDB (rocksdict), surviving restarts.

    Whatever RocksDB or the file system refuses (a lock another process holds, a file in
    the way, a full or read-only disk, corrupt files) is a `WorkerFault` naming the store
    and the cause, never a record's failure.
    """

    persistent = True

    def __init__(self, path: Path, memory: RocksMemory | None = None) -> None:
        self._path = path
        self._memory = memory or RocksMemory()  # the cache must outlive the store
        try:
            path.mkdir(parents=True, exist_ok=True)
            self._db = Rdict(str(path), self._memory.options())
        except Exception as exc:
            raise fault("open", path, exc) from exc

    def get(self, key: bytes) -> bytes | None:
        try:
            value = self._db.get(key)
        except Exception as exc:
            raise fault("read", self._path, exc) from exc
        return None if value is None else bytes(value)

    def write(self, items: dict[bytes, bytes | None], checkpoint: int | None) -> None:
        batch = WriteBatch(raw_mode=True)
        for key, value in items.items():
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        if checkpoint is not None:
            batch.put(CHECKPOINT_KEY, str(checkpoint).encode())
        try:
            self._db.write(batch)
        except Exception as exc:
            raise fault("write", self._path, exc) from exc

    def checkpoint(self) -> int:
        try:
            value = self._db.get(CHECKPOINT_KEY)
        except Exception as exc:
            raise fault("read", self._path, exc) from exc
        return 0 if value is None else int(bytes(value))

    def scan(self) -> Iterator[bytes]:
        try:
            for key in self._db.keys():  # noqa: SIM118 - Rdict is not a dict
                if key != CHECKPOINT_KEY:
                    yield key if isinstance(key, bytes) else str(key).encode()
        except Exception as exc:
            raise fault("read", self._path, exc) from exc

    def approximate_len(self) -> int:
        estimate = self._db.property_int_value("rocksdb.estimate-num-keys")
        return max(0, (estimate or 0) - 1)

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a store the disk failed under
            self._db.close()


class StoreCorrupted(WorkerFault):
    """A local store's files are damaged: it can be rebuilt from its changelog."""


def fault(doing: str, path: Path, exc: BaseException) -> WorkerFault:
    """The `WorkerFault` of a store RocksDB or the file system refused: the store (table and
    partition, from its path), what was refused, and why in a few words."""
    lowered = str(exc).lower()
    where = f"the {path.parent.name} store of partition {path.name}"
    store = (path.parent.name, int(path.name)) if path.name.isdigit() else None
    if "/lock:" in lowered:  # RocksDB's "While lock file: <path>/LOCK: ..."
        return StoreLocked(f"cannot {doing} {where}: another process holds its lock", store=store)
    if "corruption" in lowered:
        return StoreCorrupted(f"cannot {doing} {where}: its files are corrupt", store=store)
    if isinstance(exc, OSError) and exc.errno is not None:
        reason = os.strerror(exc.errno).lower()
    elif "no space left" in lowered:
        reason = "no space left on the device"
    elif "read-only" in lowered:
        reason = "the file system is read-only"
    elif "permission denied" in lowered or "operation not permitted" in lowered:
        reason = "permission denied"
    elif "not a directory" in lowered:
        reason = "a file is in the way of its folder"
    else:
        reason = type(exc).__name__
    return WorkerFault(f"cannot {doing} {where} under PIPELINE_DATA_DIR: {reason}", store=store)


def open_store(
    kind: str,
    root: Path,
    table: str,
    partition: int,
    memory: RocksMemory | None = None,
    *,
    empty: bool = False,
) -> Store:
    """Open the store of `table`'s `partition` under `root`; RocksDB stores share `memory`.

    Args:
        empty: delete what a RocksDB store holds first (a memory store starts empty).
    """
    if kind == "memory":
        return MemoryStore()
    path = root / table / str(partition)
    if empty:
        shutil.rmtree(path, ignore_errors=True)
    return RocksStore(path, memory)
