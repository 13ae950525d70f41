"""What the fault suite asks the cluster that aiokafka's admin client cannot: a transaction's
state (`DescribeTransactions`, Kafka 3.0+), client quotas (`AlterClientQuotas`), and which
broker coordinates a group or a transactional id, or leads a partition.

The messages are written field for field from Apache Kafka's definitions
(`clients/src/main/resources/common/message/DescribeTransactions*.json`,
`AlterClientQuotas*.json`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.client import CoordinationType
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    Boolean,
    CompactArray,
    CompactString,
    Float64,
    Int16,
    Int32,
    Int64,
    Schema,
    TaggedFields,
)

from pipeline.kafka.config import client_options
from pipeline.kafka.group import client_of
from pipeline.settings import Settings


class DescribeTransactionsResponse_v0(Response):  # type: ignore[misc]
    API_KEY = 65
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "transaction_states",
            CompactArray(
                ("error_code", Int16),
                ("transactional_id", CompactString("utf-8")),
                ("transaction_state", CompactString("utf-8")),
                ("transaction_timeout_ms", Int32),
                ("transaction_start_time_ms", Int64),
                ("producer_id", Int64),
                ("producer_epoch", Int16),
                (
                    "topic_partitions",
                    CompactArray(
                        ("name", CompactString("utf-8")),
                        ("partition_indexes", CompactArray(Int32)),
                        ("tags", TaggedFields),
                    ),
                ),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class DescribeTransactionsRequest_v0(RequestStruct):  # type: ignore[misc]
    FLEXIBLE_VERSION = True
    API_KEY = 65
    API_VERSION = 0
    RESPONSE_TYPE = DescribeTransactionsResponse_v0
    SCHEMA = Schema(
        ("transactional_ids", CompactArray(CompactString("utf-8"))), ("tags", TaggedFields)
    )


class DescribeTransactionsRequest(Request[DescribeTransactionsRequest_v0]):  # type: ignore[misc]
    API_KEY = 65

    def __init__(self, transactional_ids: list[str]) -> None:
        self.transactional_ids = transactional_ids

    def build(
        self, request_struct_class: type[DescribeTransactionsRequest_v0]
    ) -> DescribeTransactionsRequest_v0:
        return request_struct_class(self.transactional_ids, {})


class AlterClientQuotasResponse_v1(Response):  # type: ignore[misc]
    API_KEY = 49
    API_VERSION = 1
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "entries",
            CompactArray(
                ("error_code", Int16),
                ("error_message", CompactString("utf-8")),
                (
                    "entity",
                    CompactArray(
                        ("entity_type", CompactString("utf-8")),
                        ("entity_name", CompactString("utf-8")),
                        ("tags", TaggedFields),
                    ),
                ),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class AlterClientQuotasRequest_v1(RequestStruct):  # type: ignore[misc]
    FLEXIBLE_VERSION = True
    API_KEY = 49
    API_VERSION = 1
    RESPONSE_TYPE = AlterClientQuotasResponse_v1
    SCHEMA = Schema(
        (
            "entries",
            CompactArray(
                (
                    "entity",
                    CompactArray(
                        ("entity_type", CompactString("utf-8")),
                        ("entity_name", CompactString("utf-8")),
                        ("tags", TaggedFields),
                    ),
                ),
                (
                    "ops",
                    CompactArray(
                        ("key", CompactString("utf-8")),
                        ("value", Float64),
                        ("remove", Boolean),
                        ("tags", TaggedFields),
                    ),
                ),
                ("tags", TaggedFields),
            ),
        ),
        ("validate_only", Boolean),
        ("tags", TaggedFields),
    )


class AlterClientQuotasRequest(Request[AlterClientQuotasRequest_v1]):  # type: ignore[misc]
    API_KEY = 49

    def __init__(self, client_id: str, key: str, value: float | None) -> None:
        self.client_id = client_id
        self.key = key
        self.value = value

    def build(
        self, request_struct_class: type[AlterClientQuotasRequest_v1]
    ) -> AlterClientQuotasRequest_v1:
        op: tuple[str, float, bool, dict[int, bytes]] = (
            self.key,
            self.value or 0.0,
            self.value is None,
            {},
        )
        return request_struct_class([([("client-id", self.client_id, {})], [op], {})], False, {})


@dataclass(frozen=True)
class Transaction:
    """A transactional id's transaction as its coordinator sees it."""

    state: str
    """`Empty`, `Ongoing`, `PrepareCommit`, `CompleteCommit`, ... (Kafka's names)."""
    partitions: frozenset[tuple[str, int]]

    @property
    def offsets_added(self) -> bool:
        """Whether the transaction already holds a consumer group's offsets."""
        return any(topic == "__consumer_offsets" for topic, _ in self.partitions)


class ClusterProbe:
    """One admin connection to the cluster of `settings`, for the fault suite's questions."""

    def __init__(self, settings: Settings) -> None:
        self._consumer = AIOKafkaConsumer(
            **client_options(settings), client_id="consent-pipeline-chaos-probe"
        )
        self._client: Any = None

    async def __aenter__(self) -> ClusterProbe:
        await self._consumer.start()
        self._client = client_of(self._consumer)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._consumer.stop()

    async def transaction(self, transactional_id: str) -> Transaction | None:
        """The open or last transaction of `transactional_id` (None: the id is unknown)."""
        node = await self._client.coordinator_lookup(CoordinationType.TRANSACTION, transactional_id)
        response = await self._client.send(node, DescribeTransactionsRequest([transactional_id]))
        for code, _, state, _, _, _, _, topics, _ in response.transaction_states:
            if code != 0:
                return None
            partitions = frozenset((name, p) for name, indexes, _ in topics for p in indexes)
            return Transaction(state, partitions)
        return None

    async def transaction_coordinator(self, transactional_id: str) -> int:
        return int(
            await self._client.coordinator_lookup(CoordinationType.TRANSACTION, transactional_id)
        )

    async def group_coordinator(self, group_id: str) -> int:
        return int(await self._client.coordinator_lookup(CoordinationType.GROUP, group_id))

    async def leaders(self, topics: list[str]) -> dict[tuple[str, int], int]:
        """The broker leading each partition of `topics`, from fresh metadata."""
        await self._client.force_metadata_update()
        cluster = self._client.cluster
        leaders: dict[tuple[str, int], int] = {}
        for topic in topics:
            for partition in cluster.partitions_for_topic(topic) or ():
                leader = cluster.leader_for_partition(_tp(topic, partition))
                if leader is not None and leader >= 0:
                    leaders[(topic, partition)] = leader
        return leaders

    async def set_client_quota(self, client_id: str, key: str, value: float | None) -> None:
        """Set (or with None remove) a quota such as `consumer_byte_rate` of a client id."""
        node = self._client.get_random_node()
        response = await self._client.send(node, AlterClientQuotasRequest(client_id, key, value))
        for code, message, _, _ in response.entries:
            if code != 0:
                raise RuntimeError(f"AlterClientQuotas failed with error {code}: {message}")


def _tp(topic: str, partition: int) -> Any:
    from aiokafka import TopicPartition

    return TopicPartition(topic, partition)
