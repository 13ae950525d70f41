"""Kafka protocol messages aiokafka lacks, for fencing zombie workers (KIP-447).

aiokafka sends `TxnOffsetCommit` v0, which carries no consumer-group generation, so a group
coordinator cannot tell a current member's transactional offset commit from one sent by a
worker the group has already dropped. It fetches committed offsets with `OffsetFetch`
v1-v3, which cannot ask the coordinator to wait for offsets a transaction has not yet
committed. The two messages here are the versions that can, written field for field from
Apache Kafka's message definitions (`clients/src/main/resources/common/message/
TxnOffsetCommitRequest.json`, `OffsetFetchRequest.json` and their responses):

- `TxnOffsetCommit` v3 (Kafka 2.5+, flexible): adds `generation_id`, `member_id` and
  `group_instance_id`; the coordinator answers `ILLEGAL_GENERATION`, `UNKNOWN_MEMBER_ID`
  or `FENCED_INSTANCE_ID` to a member it no longer knows in that generation.
- `OffsetFetch` v7 (Kafka 2.5+, flexible): adds `require_stable`; the coordinator answers
  `UNSTABLE_OFFSET_COMMIT` for a partition with a transactional commit still pending.

Both are built on aiokafka's own struct types, and sent over an aiokafka client.
"""

from __future__ import annotations

from typing import Final, TypeAlias

from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    Boolean,
    CompactArray,
    CompactString,
    Int16,
    Int32,
    Int64,
    Schema,
    TaggedFields,
)

TXN_OFFSET_COMMIT: Final = 28
OFFSET_FETCH: Final = 9
TXN_OFFSET_COMMIT_FENCING_VERSION: Final = 3
OFFSET_FETCH_STABLE_VERSION: Final = 7

# Error codes (Kafka's `Errors` enum) that aiokafka names differently or not at all.
NONE: Final = 0
UNKNOWN_TOPIC_OR_PARTITION: Final = 3
REQUEST_TIMED_OUT: Final = 7
COORDINATOR_LOAD_IN_PROGRESS: Final = 14
COORDINATOR_NOT_AVAILABLE: Final = 15
NOT_COORDINATOR: Final = 16
ILLEGAL_GENERATION: Final = 22
UNKNOWN_MEMBER_ID: Final = 25
REBALANCE_IN_PROGRESS: Final = 27
GROUP_AUTHORIZATION_FAILED: Final = 30
INVALID_PRODUCER_EPOCH: Final = 47
CONCURRENT_TRANSACTIONS: Final = 51
TRANSACTIONAL_ID_AUTHORIZATION_FAILED: Final = 53
FENCED_INSTANCE_ID: Final = 82
UNSTABLE_OFFSET_COMMIT: Final = 88
PRODUCER_FENCED: Final = 90

FENCED_MEMBER: Final = frozenset({ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID, FENCED_INSTANCE_ID})
"""The coordinator no longer counts the sender as a member of the group in that generation."""
COORDINATOR_MOVED: Final = frozenset(
    {COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR, REQUEST_TIMED_OUT}
)
"""Ask again, after looking the coordinator up again."""
RETRIABLE: Final = frozenset(
    {COORDINATOR_LOAD_IN_PROGRESS, UNKNOWN_TOPIC_OR_PARTITION, CONCURRENT_TRANSACTIONS}
)
"""Ask the same coordinator again after a backoff."""
NO_OFFSET: Final = -1
"""`CommittedOffset` of a partition the group has no committed offset for."""


class TxnOffsetCommitResponse_v3(Response):  # type: ignore[misc]
    API_KEY = TXN_OFFSET_COMMIT
    API_VERSION = 3
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "topics",
            CompactArray(
                ("name", CompactString("utf-8")),
                (
                    "partitions",
                    CompactArray(
                        ("partition_index", Int32),
                        ("error_code", Int16),
                        ("tags", TaggedFields),
                    ),
                ),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class TxnOffsetCommitRequest_v3(RequestStruct):  # type: ignore[misc]
    FLEXIBLE_VERSION = True
    API_KEY = TXN_OFFSET_COMMIT
    API_VERSION = 3
    RESPONSE_TYPE = TxnOffsetCommitResponse_v3
    SCHEMA = Schema(
        ("transactional_id", CompactString("utf-8")),
        ("group_id", CompactString("utf-8")),
        ("producer_id", Int64),
        ("producer_epoch", Int16),
        ("generation_id", Int32),
        ("member_id", CompactString("utf-8")),
        ("group_instance_id", CompactString("utf-8")),
        (
            "topics",
            CompactArray(
                ("name", CompactString("utf-8")),
                (
                    "partitions",
                    CompactArray(
                        ("partition_index", Int32),
                        ("committed_offset", Int64),
                        ("committed_leader_epoch", Int32),
                        ("committed_metadata", CompactString("utf-8")),
                        ("tags", TaggedFields),
                    ),
                ),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


OffsetsByTopic: TypeAlias = list[tuple[str, list[tuple[int, int]]]]
"""(topic, [(partition, offset), ...]), ..."""


class TxnOffsetCommitRequest(Request[TxnOffsetCommitRequest_v3]):  # type: ignore[misc]
    """A transactional offset commit that names the member and generation committing."""

    API_KEY = TXN_OFFSET_COMMIT

    def __init__(
        self,
        *,
        transactional_id: str,
        group_id: str,
        producer_id: int,
        producer_epoch: int,
        generation_id: int,
        member_id: str,
        group_instance_id: str | None,
        topics: OffsetsByTopic,
    ) -> None:
        self.transactional_id = transactional_id
        self.group_id = group_id
        self.producer_id = producer_id
        self.producer_epoch = producer_epoch
        self.generation_id = generation_id
        self.member_id = member_id
        self.group_instance_id = group_instance_id
        self.topics = topics

    def build(
        self, request_struct_class: type[TxnOffsetCommitRequest_v3]
    ) -> TxnOffsetCommitRequest_v3:
        return request_struct_class(
            self.transactional_id,
            self.group_id,
            self.producer_id,
            self.producer_epoch,
            self.generation_id,
            self.member_id,
            self.group_instance_id,
            [
                (topic, [(partition, offset, -1, "", {}) for partition, offset in partitions], {})
                for topic, partitions in self.topics
            ],
            {},
        )


class OffsetFetchResponse_v7(Response):  # type: ignore[misc]
    API_KEY = OFFSET_FETCH
    API_VERSION = 7
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "topics",
            CompactArray(
                ("name", CompactString("utf-8")),
                (
                    "partitions",
                    CompactArray(
                        ("partition_index", Int32),
                        ("committed_offset", Int64),
                        ("committed_leader_epoch", Int32),
                        ("metadata", CompactString("utf-8")),
                        ("error_code", Int16),
                        ("tags", TaggedFields),
                    ),
                ),
                ("tags", TaggedFields),
            ),
        ),
        ("error_code", Int16),
        ("tags", TaggedFields),
    )


class OffsetFetchRequest_v7(RequestStruct):  # type: ignore[misc]
    FLEXIBLE_VERSION = True
    API_KEY = OFFSET_FETCH
    API_VERSION = 7
    RESPONSE_TYPE = OffsetFetchResponse_v7
    SCHEMA = Schema(
        ("group_id", CompactString("utf-8")),
        (
            "topics",
            CompactArray(
                ("name", CompactString("utf-8")),
                ("partition_indexes", CompactArray(Int32)),
                ("tags", TaggedFields),
            ),
        ),
        ("require_stable", Boolean),
        ("tags", TaggedFields),
    )


PartitionsByTopic: TypeAlias = list[tuple[str, list[int]]]


class StableOffsetFetchRequest(Request[OffsetFetchRequest_v7]):  # type: ignore[misc]
    """The group's committed offsets of some partitions, none of them left pending."""

    API_KEY = OFFSET_FETCH

    def __init__(self, group_id: str, topics: PartitionsByTopic) -> None:
        self.group_id = group_id
        self.topics = topics

    def build(self, request_struct_class: type[OffsetFetchRequest_v7]) -> OffsetFetchRequest_v7:
        return request_struct_class(
            self.group_id,
            [(topic, partitions, {}) for topic, partitions in self.topics],
            True,
            {},
        )


REQUIRED_VERSIONS: Final = {
    TXN_OFFSET_COMMIT: TXN_OFFSET_COMMIT_FENCING_VERSION,
    OFFSET_FETCH: OFFSET_FETCH_STABLE_VERSION,
}
"""API key -> the version the fencing needs the brokers to support."""
