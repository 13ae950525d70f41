"""Whether this worker may still process and commit for the partitions it was given.

A worker's assignment belongs to one generation of its consumer group. The group moves on
without it when it misses heartbeats for a session timeout (a process paused or frozen,
a stalled disk, a network cut), and from then on another worker owns its partitions. Every
transaction commits its offsets as that member of that generation (`pipeline.kafka.group`),
so the coordinator refuses a zombie's commit; `Membership` keeps the worker from even
starting a batch it could not commit:

- `take` records the member and generation an assignment came with;
- `current` compares them with what the consumer holds now (a rebalance, or a heartbeat
  the coordinator refused, changes or resets them);
- `confirm` asks the coordinator directly when nothing has confirmed the membership for
  `confirm_after_s` (a commit the coordinator accepts confirms it too): a process that
  was paused past its session timeout learns it is out before it takes another batch;
- `lose` marks the worker out of the group until its next assignment.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Any, Final, Literal

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from pipeline.kafka import protocol
from pipeline.kafka.group import GroupMetadata, group_metadata, heartbeat, request_rejoin

log = logging.getLogger(__name__)

Phase = Literal[
    "starting", "recovering", "processing", "rebalancing", "rejoining", "faulted", "stopping"
]
"""What the worker is doing, as `/ready` reports it; only `processing` is ready.
`rebalancing`: its partitions were revoked for a rebalance; `rejoining`: the group dropped
it (a refused commit or heartbeat), and it joins again as a new member; `faulted`: a fault
of the worker (its state, disk or lock) stopped its input, and it tries again."""
CONFIRM_AFTER_S: Final = 2.0
"""A membership nothing confirmed for this long is checked with the coordinator before the
next batch: well under any session timeout (Kafka's minimum is 6 s)."""
HEARTBEAT_TIMEOUT_S: Final = 5.0


class Membership:
    """The group member this worker's current assignment belongs to."""

    def __init__(
        self, consumer: AIOKafkaConsumer, client: Any, group_id: str, *, confirm_after_s: float
    ) -> None:
        self._consumer = consumer
        self._client = client
        self.group_id = group_id
        self.confirm_after_s = confirm_after_s
        self.member = GroupMetadata(group_id)
        self._confirmed_at = 0.0

    def take(self) -> GroupMetadata:
        """Record the member and generation of the assignment just given."""
        self.member = group_metadata(self._consumer, self.group_id)
        self._confirmed_at = time.monotonic()
        return self.member

    def current(self) -> bool:
        """Whether the consumer still holds the member and generation of the assignment."""
        member = self.member
        return member.joined and group_metadata(self._consumer, self.group_id) == member

    def confirmed(self) -> None:
        """The coordinator just accepted something of this member's (a commit)."""
        self._confirmed_at = time.monotonic()

    async def confirm(self) -> bool:
        """Whether the worker may take a batch: still the member of its assignment, asking the
        coordinator when nothing has confirmed it lately. A refusal `lose`s the membership."""
        if not self.current():
            return False
        if time.monotonic() - self._confirmed_at < self.confirm_after_s:
            return True
        try:
            code = await _bounded(heartbeat(self._client, self.member))
        except (KafkaError, OSError, TimeoutError, asyncio.CancelledError) as exc:
            current = asyncio.current_task()
            if isinstance(exc, asyncio.CancelledError) and current and current.cancelling():
                raise
            log.warning("cannot confirm group membership (%s)", type(exc).__name__)
            return False
        if code in protocol.FENCED_MEMBER:
            self.lose(f"the coordinator no longer knows this member (error {code})")
            return False
        if code not in (protocol.NONE, protocol.REBALANCE_IN_PROGRESS):
            return False  # a coordinator moving or loading: ask again before the next batch
        self.confirmed()
        return True

    def revoked(self) -> None:
        """The partitions were revoked for a rebalance: no batch until the next assignment."""
        self.member = GroupMetadata(self.group_id)

    def lose(self, why: str) -> None:
        """Out of the group: no batch until the next assignment; the consumer rejoins."""
        if self.member.joined:
            log.warning(
                "dropped from group %s (generation %d): %s; rejoining",
                self.group_id,
                self.member.generation_id,
                why,
            )
        self.member = GroupMetadata(self.group_id)
        request_rejoin(self._consumer)


async def _bounded(call: Awaitable[int]) -> int:
    async with asyncio.timeout(HEARTBEAT_TIMEOUT_S):
        return await call
