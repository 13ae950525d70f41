"""Bounded reads of committed records: the search under `explain` and `dlq`.

A scan reads one topic's partitions (all of them, or the one a key or a hint names) from
the first offset at or after a time (`offsets_for_times`) up to the end offsets taken when
it starts, with `read_committed`, so it never sees an aborted transaction's records and
always ends. It stops early when its caller has found what it wants, and after a time
budget, saying how far it got; a progress callback is told how many records it has read.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaError

from pipeline.errors import KafkaUnavailable, PipelineError
from pipeline.kafka.config import client_options, unreachable
from pipeline.settings import Settings

FETCH_TIMEOUT_MS: Final = 200
MAX_RECORDS: Final = 2000
PROGRESS_EVERY_S: Final = 1.0


class TopicMissing(PipelineError):
    """The topic to search does not exist on the cluster."""


@dataclass(frozen=True, slots=True)
class Found:
    """One record a scan read."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]


@dataclass(slots=True)
class Progress:
    """How far a scan got: records read, and whether it stopped at its budget."""

    read: int = 0
    out_of_time: bool = False


Reporter = Callable[[str, Progress], None]
"""Told the topic and the progress about once a second while a scan runs."""


class Reader:
    """One `read_committed` consumer, outside any group, for the scans of one command."""

    def __init__(self, settings: Settings, *, client_id: str) -> None:
        self.settings = settings
        self._consumer = AIOKafkaConsumer(
            **client_options(settings),
            client_id=client_id,
            enable_auto_commit=False,
            isolation_level="read_committed",
            request_timeout_ms=15_000,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )

    async def __aenter__(self) -> Reader:
        try:
            await self._consumer.start()
        except KafkaConnectionError as exc:
            await self._consumer.stop()
            raise unreachable(self.settings, exc) from None
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def partitions(self, topic: str) -> list[TopicPartition]:
        """The topic's partitions, in order.

        Raises:
            TopicMissing: the cluster has no such topic.
        """
        found = self._consumer.partitions_for_topic(topic)
        if not found:  # a consumer with an assignment tracks only the topics assigned
            cluster = await self._consumer._client.fetch_all_metadata()
            found = cluster.partitions_for_topic(topic)
        if not found:
            raise TopicMissing(f"no topic {topic!r} on the cluster (was `topics create` run?)")
        return [TopicPartition(topic, p) for p in sorted(found)]

    async def one(self, topic: str, partition: int, offset: int) -> Found | None:
        """The committed record at one offset, or None when there is none (compacted,
        aborted, past the end, or before the log start)."""
        tp = TopicPartition(topic, partition)
        if tp not in await self.partitions(topic):
            return None
        async for record in self.scan([tp], start={tp: offset}, stop_after=offset + 1):
            return record if record.offset == offset else None
        return None

    async def scan(
        self,
        partitions: Iterable[TopicPartition],
        *,
        since_ms: int | None = None,
        start: dict[TopicPartition, int] | None = None,
        stop_after: int | None = None,
        budget_s: float = 30.0,
        progress: Progress | None = None,
        report: Reporter | None = None,
    ) -> AsyncIterator[Found]:
        """Every committed record of `partitions` from `start` (else the first at or after
        `since_ms`, else the beginning) to the end offsets of now.

        Args:
            stop_after: read no offset at or past this one (a single-record read).
            budget_s: stop after this long; `progress.out_of_time` says so.
        """
        tps = list(partitions)
        progress = progress if progress is not None else Progress()
        try:
            ends = await self._consumer.end_offsets(tps)
            firsts = await self._starts(tps, since_ms, start or {})
        except KafkaError as exc:
            raise KafkaUnavailable(
                f"cannot read {tps[0].topic if tps else 'the topic'} ({type(exc).__name__}); "
                "check KAFKA_BOOTSTRAP_SERVERS and that the brokers are up"
            ) from None
        if stop_after is not None:
            ends = {tp: min(end, stop_after) for tp, end in ends.items()}
        pending = {tp for tp in tps if firsts[tp] < ends[tp]}
        if not pending:
            return
        self._consumer.assign(sorted(pending, key=lambda tp: tp.partition))
        for tp in pending:
            self._consumer.seek(tp, firsts[tp])
        deadline = time.monotonic() + budget_s
        told = time.monotonic()
        while pending:
            if time.monotonic() > deadline:
                progress.out_of_time = True
                return
            batches = await self._consumer.getmany(
                *pending, timeout_ms=FETCH_TIMEOUT_MS, max_records=MAX_RECORDS
            )
            for tp, records in batches.items():
                for record in records:
                    if record.offset >= ends[tp]:
                        break
                    progress.read += 1
                    yield _found(record)
            for tp in list(pending):
                if await self._consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
            if report is not None and time.monotonic() - told >= PROGRESS_EVERY_S:
                told = time.monotonic()
                report(tps[0].topic, progress)
            if not pending:
                self._consumer.assign([])

    async def _starts(
        self, tps: list[TopicPartition], since_ms: int | None, start: dict[TopicPartition, int]
    ) -> dict[TopicPartition, int]:
        firsts: dict[TopicPartition, int] = dict(await self._consumer.beginning_offsets(tps))
        if since_ms is not None:
            ends = await self._consumer.end_offsets(tps)
            at = await self._consumer.offsets_for_times({tp: since_ms for tp in tps})
            for tp in tps:
                found = at.get(tp)
                firsts[tp] = ends[tp] if found is None else max(firsts[tp], found.offset)
        for tp, offset in start.items():
            firsts[tp] = max(firsts[tp], offset)
        return firsts


def _found(record: Any) -> Found:
    return Found(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        timestamp_ms=record.timestamp,
        key=record.key,
        value=record.value,
        headers=tuple((name, value) for name, value in (record.headers or ())),
    )
