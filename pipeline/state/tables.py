"""Partitioned tables with a changelog: staged writes become durable with the transaction.

A table has one local store per assigned partition. Writes made while a batch is being
processed are staged: reads see them at once, the engine sends them to the table's
changelog topic inside the batch's Kafka transaction, and only once that transaction has
committed are they written to the local store together with the changelog offset they
reach. An aborted batch discards them, so a local store never holds state Kafka lost.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from pipeline.state.stores import Store

_ABSENT = object()
"""The previous staged value of a key no write of the batch had staged."""


@dataclass(eq=False)
class Table:
    """One table: `name`, its changelog topic, and a store per assigned partition."""

    name: str
    changelog_topic: str
    open_store: Callable[[str, int, bool], Store]
    """Opens the store of (table, partition), emptied first when the flag is set."""
    stores: dict[int, Store] = field(default_factory=dict)
    staged: dict[int, dict[bytes, bytes | None]] = field(default_factory=dict)
    _undo: list[tuple[int, bytes, bytes | object | None]] | None = None
    """While a savepoint is open: each staged write's previous staged value, to undo it."""

    def assign(self, partition: int) -> Store:
        """Open the store of a newly assigned partition."""
        store = self.stores.get(partition)
        if store is None:
            store = self.stores[partition] = self.open_store(self.name, partition, False)
        return store

    def rebuild(self, partition: int) -> Store:
        """Replace a partition's store with an empty one, to be recovered from the start."""
        self.revoke(partition)
        store = self.stores[partition] = self.open_store(self.name, partition, True)
        return store

    def revoke(self, partition: int) -> None:
        """Close the store of a partition this worker no longer owns."""
        self.staged.pop(partition, None)
        store = self.stores.pop(partition, None)
        if store is not None:
            store.close()

    def get(self, partition: int, key: bytes) -> bytes | None:
        staged = self.staged.get(partition)
        if staged is not None and key in staged:
            return staged[key]
        return self.stores[partition].get(key)

    def put(self, partition: int, key: bytes, value: bytes | None) -> None:
        """Stage a write (`None` deletes) for the current batch."""
        staged = self.staged.setdefault(partition, {})
        if self._undo is not None:
            self._undo.append((partition, key, staged.get(key, _ABSENT)))
        staged[key] = value

    def savepoint(self) -> None:
        """Start noting staged writes, so that `rollback` can take back those made since."""
        self._undo = []

    def release_savepoint(self) -> None:
        """Keep the writes made since the savepoint."""
        self._undo = None

    def rollback(self) -> None:
        """Take back the writes staged since the savepoint (a record that failed midway)."""
        for partition, key, before in reversed(self._undo or ()):
            staged = self.staged[partition]
            if before is _ABSENT:
                staged.pop(key, None)
            else:
                staged[key] = before  # type: ignore[assignment]
        self._undo = None

    def changelog_records(self) -> Iterator[tuple[int, bytes, bytes | None]]:
        """The staged writes as (partition, key, value) changelog records."""
        for partition, items in self.staged.items():
            for key, value in items.items():
                yield partition, key, value

    def commit(self, changelog_end: dict[int, int]) -> None:
        """Write the staged batch to the stores; `changelog_end`: next offset per partition."""
        for partition, items in self.staged.items():
            store = self.stores.get(partition)
            if store is not None:
                store.write(items, changelog_end.get(partition))
        self.staged.clear()

    def abort(self) -> None:
        """Forget the staged batch."""
        self.staged.clear()

    def restore(self, partition: int, items: dict[bytes, bytes | None], next_offset: int) -> None:
        """Apply changelog records read during recovery."""
        self.stores[partition].write(items, next_offset)

    def release_persistent(self) -> None:
        """Close the stores that hold a lock on disk; they reopen, and catch up from their
        checkpoints, when their partitions are assigned again. A worker giving partitions
        up this way lets the one taking them open their stores at once."""
        for partition in [p for p, store in self.stores.items() if store.persistent]:
            self.revoke(partition)

    def approximate_len(self) -> int:
        return sum(store.approximate_len() for store in self.stores.values())

    def close(self) -> None:
        for partition in list(self.stores):
            self.revoke(partition)
