"""The product's one Kafka producer: acks from every in-sync replica, idempotent, batched.

Every component that writes to Kafka builds on `Producer`: the worker (transactional, one
transaction per batch), the collector and the producer library (`send`, one record at a
time, each delivery awaited or tracked), the synthetic traffic and the fault suite's load
(`writer()`, whole per-partition batches). It owns the aiokafka client, maps connection
failures to `KafkaUnavailable`, and keeps the partition counts and murmur2 hashes its
writers share.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.producer.transaction_manager import TransactionState

from pipeline.errors import KafkaUnavailable
from pipeline.kafka.config import client_options, unreachable
from pipeline.kafka.group import FencedOffsetCommits, GroupMetadata
from pipeline.kafka.writer import BatchWriter, KeyPartitioner
from pipeline.settings import Settings

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 4 * 1024 * 1024


class Producer:
    """One aiokafka producer for the cluster in `settings`; start it before writing.

    Args:
        client_id: how the broker's logs and quotas name this client.
        transactional_id: makes the producer transactional (`begin`, `commit`, ...); its
            offset commits name the group member they are made for (`send_offsets`).
        transaction_timeout_ms: how long the transaction coordinator lets a transaction
            stay open before it aborts it.
        linger_ms: how long aiokafka waits to fill a batch of single `send`s.
        kafka_factory: builds the client (a test can pass a stand-in).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        client_id: str,
        transactional_id: str | None = None,
        transaction_timeout_ms: int = 60_000,
        linger_ms: int = 0,
        request_timeout_ms: int = 30_000,
        retry_backoff_ms: int = 100,
        max_batch_size: int = 256 * 1024,
        kafka_factory: Callable[..., Any] = AIOKafkaProducer,
    ) -> None:
        self.settings = settings
        self._options: dict[str, Any] = {
            **client_options(settings),
            "client_id": client_id,
            "acks": "all",
            "enable_idempotence": True,
            "linger_ms": linger_ms,
            "request_timeout_ms": request_timeout_ms,
            "retry_backoff_ms": retry_backoff_ms,
            "max_batch_size": max_batch_size,
            "max_request_size": MAX_REQUEST_BYTES,
        }
        if transactional_id is not None:
            self._options["transactional_id"] = transactional_id
            self._options["transaction_timeout_ms"] = transaction_timeout_ms
        self._factory = kafka_factory
        self._kafka: Any | None = None
        self._fenced: FencedOffsetCommits | None = None
        self._partition_counts: dict[str, int] = {}
        self._hasher = KeyPartitioner()

    @property
    def started(self) -> bool:
        """Whether the producer is connected."""
        return self._kafka is not None

    @property
    def kafka(self) -> Any:
        """The aiokafka client.

        Raises:
            KafkaUnavailable: the producer is not started.
        """
        if self._kafka is None:
            raise KafkaUnavailable("the producer is not started")
        return self._kafka

    async def start(self) -> None:
        """Connect (a second call does nothing).

        Raises:
            KafkaUnavailable: no bootstrap server answered.
        """
        if self._kafka is not None:
            return
        kafka = self._factory(**self._options)
        try:
            await kafka.start()
        except (KafkaError, OSError) as exc:
            with contextlib.suppress(Exception):
                await kafka.stop()
            raise unreachable(self.settings, exc) from exc
        self._kafka = kafka
        if "transactional_id" in self._options:
            self._fenced = FencedOffsetCommits(kafka)

    async def stop(self) -> None:
        """Deliver what is queued, then close; errors while closing are logged, not raised."""
        kafka, self._kafka = self._kafka, None
        self._fenced = None
        if kafka is None:
            return
        try:
            await kafka.stop()
        except (KafkaError, OSError) as exc:
            log.warning("error while closing a Kafka producer (%s)", type(exc).__name__)

    async def __aenter__(self) -> Producer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> Any:
        """Queue one record, partitioned by its key; returns the delivery future.

        Args:
            headers: Kafka record headers (name, value), e.g. the trust signature.

        Raises:
            KafkaUnavailable: not started, or Kafka refused the record at once (unknown
                topic, no metadata in time).
        """
        try:
            return await self.kafka.send(topic, value, key=key, headers=list(headers) or None)
        except (KafkaError, OSError) as exc:
            raise KafkaUnavailable(f"cannot queue a record ({type(exc).__name__})") from exc

    async def flush(self) -> None:
        """Hand over everything queued by `send` and wait for it to be sent."""
        if self._kafka is not None:
            await self._kafka.flush()

    def writer(self, *, tolerate_errors: bool = False) -> BatchWriter:
        """A batch writer over this producer (one unit of work: a transaction, a chunk)."""
        return BatchWriter(
            self.kafka, self._partition_counts, self._hasher, tolerate_errors=tolerate_errors
        )

    # -- transactions (a producer made with `transactional_id`) ---------------------

    @property
    def fenced(self) -> bool:
        """Whether the transactional producer can no longer be used: the coordinator gave
        its transactional id to a newer producer, or aborted a transaction that outlived
        its timeout. A new producer with the same id (`start` of another `Producer`) can."""
        kafka = self._kafka
        txn = None if kafka is None else getattr(kafka, "_txn_manager", None)
        return txn is not None and bool(txn.is_fatal_error())

    async def begin(self) -> None:
        await self.kafka.begin_transaction()

    async def send_offsets(self, offsets: dict[TopicPartition, int], member: GroupMetadata) -> None:
        """Commit `offsets` with the open transaction, as `member` of its consumer group.

        Raises:
            MemberFenced: the group coordinator no longer counts `member` in its generation;
                the transaction must be aborted.
        """
        if self._fenced is None:
            raise KafkaUnavailable("the producer is not started, or not transactional")
        await self._fenced.send(self.kafka, offsets, member)

    async def commit(self) -> None:
        await self.kafka.commit_transaction()

    async def abort(self) -> bool:
        """Abort the open transaction, if any; returns whether the producer can begin
        another (False: the abort failed, and the producer should be replaced)."""
        kafka = self.kafka
        txn = kafka._txn_manager
        if txn.state is TransactionState.READY:
            return True  # nothing open: the batch failed before its transaction began
        if txn.is_fatal_error():
            return False
        try:
            await kafka.abort_transaction()
        except Exception as exc:  # the broker away, or the producer fenced meanwhile
            log.warning("aborting the transaction failed (%s)", type(exc).__name__)
            return False
        return not self.fenced
