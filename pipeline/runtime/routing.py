"""Which worker owns which partition, known to every worker: the group's routing table.

Faust's `table_route` sends a web request for a table key to the worker that holds the
key's partition: each member puts its web URL in its group metadata, and the leader hands
the whole map to every member with the assignment. The engine runs its own consumer
group, so it does the same with its own assignor: `RoutingAssignor` assigns like Kafka's
range assignor (a member gets the same partition numbers of every co-partitioned topic)
and adds to each member's assignment the owner of every partition of the routed topic
(`consent.changes`, whose partitions the consent table follows).

A worker that does not own a key's partition forwards the request to the owner
(`pipeline.runtime.privacy`).

The assignor is the consumer's only strategy and goes by the protocol name `range`:
aiokafka sends one JoinGroup per configured strategy, each listing one more protocol, and
the coordinator takes each as a member's changed metadata and starts another rebalance,
so a group of two or more members with two strategies never settles. Under the `range`
name it stays compatible with a worker running plain range (a rolling upgrade from a
version without it): what it assigns is range's assignment, whose extra user data plain
range ignores; a plain-range leader sends no routes, and the routed pages then answer
503 until every member runs this one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)

from schemas import codec

log = logging.getLogger(__name__)

ASSIGNOR_NAME: Final = RangePartitionAssignor.name
"""Kafka's range protocol: the same assignment, with the routing table as user data."""
VERSION: Final = 0


@dataclass(frozen=True, slots=True)
class Route:
    """A worker: its stable name and the URL of its web server."""

    worker: str
    url: str


class RoutingAssignor(AbstractPartitionAssignor):  # type: ignore[misc]
    """Range assignment, plus every member's web URL for every partition of `routed_topic`.

    One instance per consumer: it announces this worker (`metadata`), assigns when this
    worker leads the group (`assign`), and keeps the table the leader sent (`on_assignment`).
    """

    name = ASSIGNOR_NAME
    version = VERSION

    def __init__(self, me: Route, routed_topic: str) -> None:
        self.me = me
        self.routed_topic = routed_topic
        self._routes: dict[int, Route] = {}

    @property
    def routes(self) -> Mapping[int, Route]:
        """The owner of each partition of the routed topic, as of the last assignment."""
        return self._routes

    def forget(self) -> None:
        """Drop the table: partitions are moving (a new one comes with the next assignment)."""
        self._routes = {}

    def owner(self, partition: int) -> Route | None:
        """The worker that owns `partition`, if the last assignment said."""
        return self._routes.get(partition)

    def metadata(self, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
        user_data = codec.dumps({"worker": self.me.worker, "url": self.me.url})
        return ConsumerProtocolMemberMetadata(self.version, sorted(topics), user_data)

    def assign(
        self, cluster: ClusterMetadata, members: Mapping[str, ConsumerProtocolMemberMetadata]
    ) -> dict[str, ConsumerProtocolMemberAssignment]:
        ranged = RangePartitionAssignor.assign(cluster, members)
        routes: dict[str, list[str]] = {}
        for member_id, assignment in ranged.items():
            route = _announced(members[member_id].user_data)
            if route is None:
                log.warning("a group member announced no web URL; its partitions are unrouted")
                continue
            for topic, partitions in assignment.assignment:
                if topic == self.routed_topic:
                    for partition in partitions:
                        routes[str(partition)] = [route.worker, route.url]
        user_data = codec.dumps({"routes": routes})
        return {
            member_id: ConsumerProtocolMemberAssignment(
                self.version, assignment.assignment, user_data
            )
            for member_id, assignment in ranged.items()
        }

    def on_assignment(self, assignment: ConsumerProtocolMemberAssignment) -> None:
        self._routes = _routes(assignment.user_data)


def _announced(user_data: bytes | None) -> Route | None:
    try:
        announced: Any = codec.loads(user_data or b"")
        worker, url = announced["worker"], announced["url"]
    except (codec.DecodeError, KeyError, TypeError):
        return None
    if not isinstance(worker, str) or not isinstance(url, str):
        return None
    return Route(worker, url)


def _routes(user_data: bytes | None) -> dict[int, Route]:
    try:
        table: Any = codec.loads(user_data or b"")
        items = table["routes"].items()
        return {int(partition): Route(str(worker), str(url)) for partition, (worker, url) in items}
    except (codec.DecodeError, KeyError, TypeError, ValueError, AttributeError):
        log.warning("the group's assignment carried no routing table")
        return {}


def assignors(me: Route, routed_topic: str) -> tuple[RoutingAssignor]:
    """The consumer's assignment strategies: the routed range assignor alone (see above)."""
    return (RoutingAssignor(me, routed_topic),)
