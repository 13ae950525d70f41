"""The group's routing table: range assignment, and every partition's owner known to all."""

from __future__ import annotations

from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)

from pipeline import catalogue
from pipeline.runtime.routing import ASSIGNOR_NAME, Route, RoutingAssignor, assignors

ROUTED = f"t.{catalogue.CONSENT_CHANGES.name}"
OTHER = "t.app.by-subject"


class Cluster:
    """What the assignors read of the cluster's metadata: partitions per topic."""

    def __init__(self, partitions: dict[str, int]) -> None:
        self.partitions = partitions

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        count = self.partitions.get(topic)
        return None if count is None else set(range(count))


def member(name: str) -> tuple[RoutingAssignor, ConsumerProtocolMemberMetadata]:
    assignor = RoutingAssignor(Route(name, f"http://{name}:6066"), ROUTED)
    return assignor, assignor.metadata([OTHER, ROUTED])


def test_every_member_learns_the_owner_of_every_partition() -> None:
    a, a_meta = member("worker-a")
    b, b_meta = member("worker-b")
    cluster = Cluster({ROUTED: 5, OTHER: 5})

    assignments = a.assign(cluster, {"m-a": a_meta, "m-b": b_meta})
    a.on_assignment(assignments["m-a"])
    b.on_assignment(assignments["m-b"])

    owned = {
        member_id: {t: p for t, p in assignment.assignment}
        for member_id, assignment in assignments.items()
    }
    assert owned["m-a"] == {OTHER: [0, 1, 2], ROUTED: [0, 1, 2]}
    assert owned["m-b"] == {OTHER: [3, 4], ROUTED: [3, 4]}
    expected = {p: Route("worker-a", "http://worker-a:6066") for p in (0, 1, 2)} | {
        p: Route("worker-b", "http://worker-b:6066") for p in (3, 4)
    }
    assert a.routes == b.routes == expected
    assert b.owner(1) == Route("worker-a", "http://worker-a:6066")
    assert b.owner(9) is None


def test_a_member_without_a_url_leaves_its_partitions_unrouted() -> None:
    a, a_meta = member("worker-a")
    silent = ConsumerProtocolMemberMetadata(0, [OTHER, ROUTED], b"not json")

    assignments = a.assign(Cluster({ROUTED: 2, OTHER: 2}), {"m-a": a_meta, "m-z": silent})
    a.on_assignment(assignments["m-a"])

    assert a.routes == {0: Route("worker-a", "http://worker-a:6066")}


def test_an_assignment_without_a_table_and_a_rebalance_forget_the_routes() -> None:
    a, a_meta = member("worker-a")
    assignments = a.assign(Cluster({ROUTED: 1}), {"m-a": a_meta})
    a.on_assignment(assignments["m-a"])
    assert a.routes

    a.forget()
    assert a.routes == {}
    a.on_assignment(ConsumerProtocolMemberAssignment(0, [(ROUTED, [0])], b""))
    assert a.routes == {}


def test_one_strategy_under_the_range_name_so_a_plain_range_member_can_join() -> None:
    # aiokafka sends a JoinGroup per strategy, each a different protocol list, which the
    # coordinator takes as changed metadata: a second strategy would rebalance forever.
    (routed,) = assignors(Route("w", "http://w:1"), ROUTED)
    assert routed.name == ASSIGNOR_NAME == RangePartitionAssignor.name

    a, a_meta = member("worker-a")
    plain = RangePartitionAssignor.metadata([OTHER, ROUTED])
    members = {"m-a": a_meta, "m-p": plain}
    cluster = Cluster({ROUTED: 4, OTHER: 4})
    assignments = a.assign(cluster, members)

    ranged = RangePartitionAssignor.assign(cluster, members)
    for member_id, assignment in assignments.items():
        assert assignment.assignment == ranged[member_id].assignment
    a.on_assignment(assignments["m-a"])
    assert a.routes == {p: Route("worker-a", "http://worker-a:6066") for p in (0, 1)}
