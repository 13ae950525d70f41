"""Membership: a worker takes a batch only as the group member its partitions were assigned
to, and asks the coordinator when nothing has confirmed that lately."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from pipeline.kafka import protocol
from pipeline.runtime.membership import Membership


@dataclass
class Coordinator:
    """The part of aiokafka's group coordinator membership reads."""

    generation: int = 5
    member_id: str = "member-1"
    _group_instance_id: str | None = None
    rejoins: int = 0

    def reset_generation(self) -> None:
        self.generation, self.member_id = -1, ""
        self.rejoins += 1


@dataclass
class Consumer:
    _coordinator: Coordinator = field(default_factory=Coordinator)


@dataclass
class Client:
    """A coordinator that answers heartbeats with `code`."""

    code: int = protocol.NONE
    heartbeats: int = 0

    async def coordinator_lookup(self, kind: Any, key: str) -> int:
        return 1

    async def send(self, node: int, request: Any, **_: Any) -> Any:
        self.heartbeats += 1
        return type("Answer", (), {"error_code": self.code})()


def membership(client: Client, consumer: Consumer, confirm_after_s: float = 60.0) -> Membership:
    member = Membership(consumer, client, "app", confirm_after_s=confirm_after_s)
    member.take()
    return member


async def test_a_member_confirmed_lately_takes_its_batch_without_asking() -> None:
    client, consumer = Client(), Consumer()
    member = membership(client, consumer)

    assert await member.confirm()
    assert client.heartbeats == 0


async def test_a_rebalance_since_the_assignment_holds_the_next_batch_back() -> None:
    client, consumer = Client(), Consumer()
    member = membership(client, consumer)
    consumer._coordinator.generation = 6

    assert not member.current()
    assert not await member.confirm()


@pytest.mark.parametrize(
    "code", [protocol.UNKNOWN_MEMBER_ID, protocol.ILLEGAL_GENERATION, protocol.FENCED_INSTANCE_ID]
)
async def test_a_worker_woken_after_its_session_expired_learns_it_was_dropped(code: int) -> None:
    client, consumer = Client(code=code), Consumer()
    member = membership(client, consumer, confirm_after_s=0.0)

    assert not await member.confirm()
    assert client.heartbeats == 1
    assert consumer._coordinator.rejoins == 1  # it joins again as a new member
    assert not member.member.joined


async def test_a_rebalance_in_progress_still_counts_as_a_member() -> None:
    member = membership(Client(code=protocol.REBALANCE_IN_PROGRESS), Consumer(), 0.0)

    assert await member.confirm()


async def test_a_coordinator_that_cannot_answer_holds_the_batch_without_dropping_the_member() -> (
    None
):
    consumer = Consumer()
    member = membership(Client(code=protocol.COORDINATOR_LOAD_IN_PROGRESS), consumer, 0.0)

    assert not await member.confirm()
    assert consumer._coordinator.rejoins == 0
    assert member.member.joined


async def test_revoked_partitions_hold_batches_back_until_the_next_assignment() -> None:
    client, consumer = Client(), Consumer()
    member = membership(client, consumer)

    member.revoked()
    assert not await member.confirm()
    consumer._coordinator.generation = 6
    member.take()
    assert await member.confirm()
