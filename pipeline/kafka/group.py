"""The consumer group as a worker's transactions see it: who may commit, and what is stable.

Exactly-once with one transactional producer per worker rests on Kafka's KIP-447: each
transaction's offset commit names the consumer group member and generation it was made
for, and the group coordinator refuses it once the group has moved on (the worker was
dropped for missing heartbeats, paused past its session timeout, or lost a rebalance).
A new owner of a partition fetches its committed offset with `require_stable`, so it
waits until a transaction the previous owner has left pending is committed or aborted.
aiokafka implements neither, so this module adds them over aiokafka's own client:

- `GroupMetadata`: the member and generation an assignment was given to
  (`group_metadata(consumer)`).
- `FencedOffsetCommits`: makes a transactional producer's `send_offsets_to_transaction`
  send `TxnOffsetCommit` v3 with that metadata; a refusal fails the offsets' future with
  `MemberFenced` and leaves the transaction to be aborted.
- `fetch_stable_offsets`: `OffsetFetch` v7 with `require_stable`.
- `heartbeat`: asks the coordinator whether the member is still in its generation.
- `require_fencing_support`: refuses a cluster older than Kafka 2.5.

Every use of aiokafka's private attributes is in this module, and
`tests/integration/test_fencing.py` checks them against the pinned aiokafka.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.client import ConnectionGroup, CoordinationType
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaError,
    ProducerFenced,
    TransactionalIdAuthorizationFailed,
)
from aiokafka.producer.sender import BaseHandler
from aiokafka.producer.transaction_manager import TransactionState
from aiokafka.protocol.admin import ApiVersionRequest
from aiokafka.protocol.group import HeartbeatRequest

from pipeline.errors import PipelineError
from pipeline.kafka import protocol

log = logging.getLogger(__name__)

NO_GENERATION: Final = -1
NO_MEMBER: Final = ""
STABLE_FETCH_BACKOFF_S: Final = 0.1


class MemberFenced(KafkaError):  # type: ignore[misc]
    """The group coordinator refused a commit: the worker is no longer that group member."""

    retriable = False


class OffsetsUnstable(PipelineError):
    """A previous owner's transaction kept the committed offsets pending for too long."""


class FencingUnsupported(PipelineError):
    """The cluster cannot fence zombie workers (it needs Kafka 2.5 or newer)."""


@dataclass(frozen=True, slots=True)
class GroupMetadata:
    """A consumer group member as one generation of the group knows it."""

    group_id: str
    generation_id: int = NO_GENERATION
    member_id: str = NO_MEMBER
    group_instance_id: str | None = None

    @property
    def joined(self) -> bool:
        """Whether this names a member of some generation (not a consumer between joins)."""
        return self.generation_id != NO_GENERATION and self.member_id != NO_MEMBER


def group_metadata(consumer: AIOKafkaConsumer, group_id: str) -> GroupMetadata:
    """The member and generation `consumer` currently holds in `group_id`."""
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is None or not hasattr(coordinator, "generation"):
        return GroupMetadata(group_id)
    return GroupMetadata(
        group_id,
        coordinator.generation,
        coordinator.member_id,
        getattr(coordinator, "_group_instance_id", None),
    )


def request_rejoin(consumer: AIOKafkaConsumer) -> None:
    """Have the consumer forget its membership and join its group again, as a member its
    coordinator dropped does once its heartbeat is refused."""
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is not None:
        coordinator.reset_generation()


def client_of(consumer: AIOKafkaConsumer | AIOKafkaProducer) -> Any:
    """The aiokafka network client under a started consumer or producer."""
    if isinstance(consumer, AIOKafkaProducer):
        return consumer.client
    return consumer._client


async def group_coordinator(client: Any, group_id: str) -> int:
    """The node id of `group_id`'s coordinator."""
    return int(await client.coordinator_lookup(CoordinationType.GROUP, group_id))


async def heartbeat(client: Any, member: GroupMetadata) -> int:
    """Ask the group coordinator about `member`; returns its error code (0: still a member
    of that generation; `REBALANCE_IN_PROGRESS`: still, until it rejoins)."""
    node = await group_coordinator(client, member.group_id)
    response = await client.send(
        node,
        HeartbeatRequest(member.group_id, member.generation_id, member.member_id),
        group=ConnectionGroup.COORDINATION,
    )
    return int(response.error_code)


async def fetch_stable_offsets(
    client: Any, group_id: str, partitions: Iterable[TopicPartition], *, timeout_s: float
) -> dict[TopicPartition, int | None]:
    """The committed offset of each partition (None: none committed), waiting for any
    transaction that has an offset commit of them pending to commit or abort.

    Raises:
        OffsetsUnstable: some offsets were still pending after `timeout_s`.
        KafkaError: the coordinator refused the request (authorization).
    """
    wanted = set(partitions)
    found: dict[TopicPartition, int | None] = {}
    deadline = time.monotonic() + timeout_s
    while wanted:
        if time.monotonic() > deadline:
            raise OffsetsUnstable(
                f"committed offsets of {len(wanted)} partitions still pending after "
                f"{timeout_s:.0f}s: a previous owner's transaction is neither committed "
                "nor aborted"
            )
        try:
            node = await group_coordinator(client, group_id)
            response = await client.send(
                node,
                protocol.StableOffsetFetchRequest(group_id, _by_topic(wanted)),
                group=ConnectionGroup.COORDINATION,
            )
        except KafkaError as exc:
            if not exc.retriable:
                raise
            await asyncio.sleep(STABLE_FETCH_BACKOFF_S)
            continue
        if response.error_code == protocol.GROUP_AUTHORIZATION_FAILED:
            raise GroupAuthorizationFailedError(group_id)
        if response.error_code != protocol.NONE:
            await asyncio.sleep(STABLE_FETCH_BACKOFF_S)
            continue
        for topic, partitions_of_topic, _ in response.topics:
            for partition, offset, _, _, error_code, _ in partitions_of_topic:
                tp = TopicPartition(topic, partition)
                if tp in wanted and error_code == protocol.NONE:
                    found[tp] = None if offset == protocol.NO_OFFSET else offset
                    wanted.discard(tp)
        if wanted:
            await asyncio.sleep(STABLE_FETCH_BACKOFF_S)
    return found


async def require_fencing_support(client: Any) -> None:
    """Check that the brokers speak the message versions zombie fencing needs.

    Raises:
        FencingUnsupported: they are older than Kafka 2.5.
    """
    node = client.get_random_node()
    response = await client.send(node, ApiVersionRequest())
    supported = {key: high for key, _, high in response.api_versions}
    missing = [
        f"api {key} v{version}"
        for key, version in protocol.REQUIRED_VERSIONS.items()
        if supported.get(key, -1) < version
    ]
    if missing:
        raise FencingUnsupported(
            "the Kafka cluster lacks "
            + ", ".join(missing)
            + " (TxnOffsetCommit v3, OffsetFetch v7): exactly-once needs Kafka 2.5 or newer"
        )


class FencedOffsetCommits:
    """A transactional producer whose offset commits carry the group member's generation.

    aiokafka's sender commits a transaction's offsets through `_do_txn_offset_commit`; this
    replaces it, on one producer, with a commit of `TxnOffsetCommit` v3 naming `member`,
    which `send` sets before each call of `send_offsets_to_transaction`.
    """

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._sender = producer._sender
        self.member: GroupMetadata | None = None
        self._sender._do_txn_offset_commit = self._commit

    async def send(
        self, producer: AIOKafkaProducer, offsets: dict[TopicPartition, int], member: GroupMetadata
    ) -> None:
        """Add `offsets` to the open transaction as committed by `member`.

        Raises:
            MemberFenced: the coordinator no longer counts `member` in its generation.
            ProducerFenced: another producer took over the transactional id.
        """
        self.member = member
        try:
            await producer.send_offsets_to_transaction(offsets, member.group_id)
        except KafkaError:
            # The transaction's own waiter holds the same error; the caller aborts.
            waiter = producer._txn_manager.wait_for_transaction_end()
            if waiter is not None and waiter.done() and not waiter.cancelled():
                waiter.exception()
            raise

    async def _commit(self, offsets: dict[TopicPartition, Any], group_id: str) -> None:
        if not offsets:
            return
        sender = self._sender
        member = self.member
        if member is None or member.group_id != group_id:
            member = GroupMetadata(group_id)
        try:
            node = await sender._find_coordinator(CoordinationType.GROUP, group_id)
        except GroupAuthorizationFailedError as exc:
            _refuse(sender._txn_manager, exc)
            return
        await _CommitHandler(sender, offsets, member).do(node)


class _CommitHandler(BaseHandler):  # type: ignore[misc]
    """One `TxnOffsetCommit` v3 and what its answer means for the open transaction (the
    error handling of the Java client's `TxnOffsetCommitHandler`)."""

    group = ConnectionGroup.COORDINATION

    def __init__(self, sender: Any, offsets: dict[TopicPartition, Any], member: GroupMetadata):
        super().__init__(sender)
        self._offsets = offsets
        self._member = member

    def create_request(self) -> protocol.TxnOffsetCommitRequest:
        txn = self._sender._txn_manager
        member = self._member
        return protocol.TxnOffsetCommitRequest(
            transactional_id=txn.transactional_id,
            group_id=member.group_id,
            producer_id=txn.producer_id,
            producer_epoch=txn.producer_epoch,
            generation_id=member.generation_id,
            member_id=member.member_id,
            group_instance_id=member.group_instance_id,
            topics=_by_topic_offsets({tp: meta.offset for tp, meta in self._offsets.items()}),
        )

    def handle_response(self, response: Any) -> float | None:
        txn = self._sender._txn_manager
        for topic, partitions, _ in response.topics:
            for partition, code, _ in partitions:
                tp = TopicPartition(topic, partition)
                if code == protocol.NONE:
                    txn.offset_committed(tp, self._offsets[tp].offset, self._member.group_id)
                elif code in protocol.COORDINATOR_MOVED:
                    self._sender._coordinator_dead(CoordinationType.GROUP)
                    return float(self._default_backoff)
                elif code in protocol.RETRIABLE:
                    return float(self._default_backoff)
                elif code in protocol.FENCED_MEMBER or code == protocol.REBALANCE_IN_PROGRESS:
                    _refuse(
                        txn,
                        MemberFenced(
                            f"group {self._member.group_id} refused the offset commit of "
                            f"generation {self._member.generation_id} (error {code})"
                        ),
                    )
                    return None
                elif code in (protocol.INVALID_PRODUCER_EPOCH, protocol.PRODUCER_FENCED):
                    raise ProducerFenced()
                elif code == protocol.TRANSACTIONAL_ID_AUTHORIZATION_FAILED:
                    raise TransactionalIdAuthorizationFailed(txn.transactional_id)
                elif code == protocol.GROUP_AUTHORIZATION_FAILED:
                    _refuse(txn, GroupAuthorizationFailedError(self._member.group_id))
                    return None
                else:
                    log.error("transactional offset commit failed with error %d", code)
                    _refuse(txn, KafkaError(f"TxnOffsetCommit error {code}"))
                    return None
        return None

    def handle_error(self) -> float:
        self._sender._coordinator_dead(CoordinationType.GROUP)
        return float(self._default_backoff)


def _refuse(txn: Any, exc: KafkaError) -> None:
    """Fail the transaction's pending offset commit with `exc` and leave the transaction to
    be aborted.

    aiokafka's `error_transaction` would also forget the partitions the transaction wrote
    to, and its abort would then see an empty transaction and end nothing on the broker:
    the records would stay pending and be committed with the producer's next transaction.
    """
    txn._transition_to(TransactionState.ABORTABLE_ERROR)
    for _, _, future in txn._pending_txn_offsets:
        if not future.done():
            future.set_exception(exc)
    txn._pending_txn_offsets.clear()
    waiter = txn._transaction_waiter
    if waiter is not None and not waiter.done():
        waiter.set_exception(exc)


def _by_topic(partitions: Iterable[TopicPartition]) -> protocol.PartitionsByTopic:
    topics: dict[str, list[int]] = collections.defaultdict(list)
    for tp in sorted(partitions):
        topics[tp.topic].append(tp.partition)
    return list(topics.items())


def _by_topic_offsets(offsets: dict[TopicPartition, int]) -> protocol.OffsetsByTopic:
    topics: dict[str, list[tuple[int, int]]] = collections.defaultdict(list)
    for tp, offset in sorted(offsets.items()):
        topics[tp.topic].append((tp.partition, offset))
    return list(topics.items())
