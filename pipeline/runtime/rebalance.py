"""Rebalances: a batch in flight finishes first, and an assignment is recovered before use.

The listener takes the engine's batch lock, so partitions move only between batches, and
bumps the engine's generation, so a batch fetched across a rebalance is dropped rather
than processed (the recovery of the next assignment seeks every partition). Both
callbacks only take note and return: aiokafka sends no heartbeat while the assignment
callback runs, so recovering the tables there would let a long restore cost the worker
its membership. The engine recovers the assignment in its own loop instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable

from aiokafka import TopicPartition
from aiokafka.abc import ConsumerRebalanceListener


class Generation:
    """A counter bumped by every rebalance."""

    def __init__(self) -> None:
        self.value = 0

    def bump(self) -> None:
        self.value += 1


class Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Calls `on_revoked` and `on_assigned` under `lock`, bumping `generation` each time."""

    def __init__(
        self,
        lock: asyncio.Lock,
        generation: Generation,
        on_revoked: Callable[[Iterable[TopicPartition]], None],
        on_assigned: Callable[[Iterable[TopicPartition]], Awaitable[None]],
    ) -> None:
        self._lock = lock
        self._generation = generation
        self._on_revoked = on_revoked
        self._on_assigned = on_assigned

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        async with self._lock:  # the batch in flight commits first
            self._generation.bump()
            self._on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        async with self._lock:  # no batch runs until recovery is complete
            self._generation.bump()
            await self._on_assigned(assigned)
