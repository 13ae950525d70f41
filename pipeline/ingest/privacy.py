"""The consent API's machinery: ask the workers what they hold, save a person's choice.

- `WorkerClient` makes signed requests to the workers' consent pages
  (`pipeline.runtime.privacy`), trying each configured URL in turn; whichever worker
  answers forwards to the one that owns the person's partition.
- `ConsentLog` reads `consent.changes` directly: the end of a partition, and the changes
  for one person in a range of offsets.
- `PrivacyService.save` writes the full record of a save (`pipeline.core.privacy`) once
  the owner's table has folded the person's partition to its end, so the record restates
  the newest profile and device the pipeline holds. Kafka's acknowledgement (partition,
  offset, append time) is the answer, unless a change for the same person landed between
  the state that was read and the record: then the record is written again, from that
  state with those changes folded in, so that a profile or device change made at the
  same moment is never overwritten by an older value.

Errors are `Refusal`s: an HTTP status and a message naming no value.
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.parse
from collections.abc import Callable
from typing import Final, Literal, TypeAlias

import aiohttp
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError
from yarl import URL

from pipeline import catalogue
from pipeline.core.consent import ConsentState, fold
from pipeline.core.errors import ConsentStateError
from pipeline.core.parse import Rejected, parse_consent_change
from pipeline.core.privacy import changed_at_for, chosen_settings, refusals, saved_record
from pipeline.core.trust import REQUEST_HEADER, request_signature
from pipeline.errors import KafkaUnavailable
from pipeline.ingest.client import Acknowledged, EventProducer, prepare_consent_change
from pipeline.kafka.config import client_options
from pipeline.settings import Settings
from schemas import codec
from schemas.consent import ConsentChange
from schemas.privacy import HeldConsent, PrivacySaved, PrivacyUpdate

log = logging.getLogger(__name__)

CATCH_UP_S: Final = 3.0
"""How long a save waits for the owner's table to fold the person's partition to its end."""
CATCH_UP_POLL_S: Final = 0.05
MAX_REWRITES: Final = 3
MAX_SCAN: Final = 100_000
"""Most `consent.changes` records a save reads to find concurrent changes of the person."""

Outcome: TypeAlias = Literal[
    "ok",
    "bad_request",
    "unauthorized",
    "forbidden",
    "not_found",
    "gone",
    "refused",
    "rate_limited",
    "too_large",
    "unavailable",
    "error",
]


class Refusal(Exception):
    """A request the consent API answers with an error: status, message, outcome."""

    def __init__(
        self,
        status: int,
        message: str,
        outcome: Outcome,
        *,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.outcome = outcome
        self.retry_after = retry_after


def unavailable(message: str, retry_after: int) -> Refusal:
    """A 503 with `Retry-After`."""
    return Refusal(503, message, "unavailable", retry_after=retry_after)


def user_path(user_id: str, page: str, query: dict[str, int] | None = None) -> str:
    """The path and query of a worker's consent page for a user (percent-encoded)."""
    path = f"/internal/users/{urllib.parse.quote(user_id, safe='')}/{page}"
    return f"{path}?{urllib.parse.urlencode(query)}" if query else path


class WorkerClient:
    """Signed GETs to the workers' consent pages, each configured URL in turn."""

    def __init__(
        self,
        urls: list[str],
        trust_key: bytes | None,
        *,
        timeout_s: float,
        retry_after: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.urls = urls
        self._key = trust_key
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._retry_after = retry_after
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None

    async def get(self, target: str) -> tuple[int, bytes]:
        """The status and body a worker answered to `target` (path and query).

        Raises:
            Refusal: 503 when no worker is configured, no trust key is set, or none answered.
        """
        if not self.urls or self._key is None:
            raise unavailable(
                "the consent API is not configured (PIPELINE_COLLECTOR_WORKER_URLS, "
                "PIPELINE_TRUST_KEY)",
                self._retry_after,
            )
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        signature = request_signature(self._key, "GET", target, int(self._clock()))
        for url in self.urls:
            try:
                async with self._session.get(
                    URL(url + target, encoded=True),
                    headers={REQUEST_HEADER: signature},
                    allow_redirects=False,
                ) as response:
                    return response.status, await response.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.warning("a worker did not answer the consent API (%s)", type(exc).__name__)
        raise unavailable("no worker answered; retry later", self._retry_after)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class ConsentLog:
    """Reads `consent.changes` partitions directly, one read at a time."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = settings.topic(catalogue.CONSENT_CHANGES)
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()

    async def end(self, partition: int) -> int:
        """The offset after the partition's last record."""
        async with self._lock:
            consumer = await self._started()
            tp = TopicPartition(self.topic, partition)
            ends = await consumer.end_offsets([tp])
            return int(ends[tp])

    async def changes_of(
        self, user_id: str, partition: int, start: int, end: int, *, now: float
    ) -> list[ConsentChange]:
        """The person's valid changes at offsets `start` to `end` (excluded), in order.

        Raises:
            Refusal: 503 when the range is too long to read.
        """
        if end <= start:
            return []
        if end - start > MAX_SCAN:
            raise unavailable("the pipeline is far behind; retry later", 5)
        key = user_id.encode()
        changes: list[ConsentChange] = []
        async with self._lock:
            consumer = await self._started()
            tp = TopicPartition(self.topic, partition)
            consumer.assign([tp])
            consumer.seek(tp, start)
            position = start
            deadline = time.monotonic() + 10.0
            while position < end:
                if time.monotonic() > deadline:
                    raise unavailable("could not read the consent topic in time; retry", 5)
                batch = await consumer.getmany(tp, timeout_ms=200, max_records=1000)
                for record in batch.get(tp, []):
                    if record.offset >= end:
                        break
                    position = record.offset + 1
                    if record.key != key:
                        continue
                    change = parse_consent_change(record.value, now=now, key=record.key)
                    if not isinstance(change, Rejected):
                        changes.append(change)
                if not batch:
                    position = max(position, await consumer.position(tp))
        return changes

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def _started(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                **client_options(self.settings),
                client_id="consent-pipeline-collector-consent",
                enable_auto_commit=False,
            )
            await consumer.start()
            self._consumer = consumer
        return self._consumer


class PrivacyService:
    """Reads and saves people's privacy settings for the consent API."""

    def __init__(
        self,
        settings: Settings,
        producer: EventProducer,
        *,
        workers: WorkerClient | None = None,
        log_reader: ConsentLog | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.producer = producer
        trust_key = settings.trust_key
        self.workers = workers or WorkerClient(
            settings.collector_worker_urls,
            None if trust_key is None else trust_key.get_secret_value().encode(),
            timeout_s=settings.collector_worker_timeout_seconds,
            retry_after=settings.collector_retry_after_seconds,
            clock=clock,
        )
        self.log = log_reader or ConsentLog(settings)
        self.clock = clock
        self.retry_after = settings.collector_retry_after_seconds

    async def close(self) -> None:
        await self.workers.close()
        await self.log.close()

    async def held(self, user_id: str) -> HeldConsent:
        """What the owner of the person's partition holds.

        Raises:
            Refusal: 404 no consent record, 410 deleted, 503 no worker could answer.
        """
        status, body = await self.workers.get(user_path(user_id, "consent"))
        if status == 200:
            try:
                return HeldConsent.model_validate(codec.loads(body))
            except (codec.DecodeError, ValidationError):
                log.error("a worker answered the consent API with an unreadable body")
                raise unavailable("a worker answered unreadably; retry", self.retry_after) from None
        if status == 404:
            raise Refusal(404, "no such user: the pipeline holds no consent record", "not_found")
        if status == 410:
            raise Refusal(410, "this account was deleted", "gone")
        if status == 401:
            log.error("a worker refused the collector's signature: are the trust keys equal?")
        raise unavailable("the pipeline cannot answer for this user now; retry", self.retry_after)

    async def decisions(self, user_id: str, since_ms: int, cursor: int | None) -> bytes:
        """The person's decisions from the audit stream (a `DecisionFeed` as JSON)."""
        query = {"since": since_ms} | ({} if cursor is None else {"cursor": cursor})
        status, body = await self.workers.get(user_path(user_id, "decisions", query))
        if status == 200:
            return body
        raise unavailable("the audit stream cannot be read now; retry", self.retry_after)

    async def save(self, user_id: str, update: PrivacyUpdate) -> PrivacySaved:
        """Write the person's choice as a full consent record; Kafka's acknowledgement.

        Raises:
            Refusal: 404/410 as `held`; 422 a setting turned on that is not offered;
                503 the pipeline is catching up, or Kafka did not acknowledge in time.
        """
        held = await self._caught_up(user_id)
        refused = refusals(held.privacy, update)
        if refused:
            raise Refusal(422, "; ".join(refused), "refused")
        try:
            base = ConsentState.from_dict(held.state)
        except ConsentStateError:
            raise unavailable(
                "the held consent state cannot be read; retry", self.retry_after
            ) from None
        settings = chosen_settings(base, update)
        since, previous, rewrites = held.folded_to, 0, 0
        while True:
            now = self.clock()
            changed_at = max(changed_at_for(base, int(now * 1000)), previous + 1)
            ack = await self._write(saved_record(base, settings, changed_at), now)
            if ack.partition != held.partition:
                log.error("a consent record went to another partition than its owner's")
                raise unavailable("the record was not partitioned as expected", self.retry_after)
            between = await self.log.changes_of(user_id, ack.partition, since, ack.offset, now=now)
            if not between:
                return PrivacySaved(
                    user_id=user_id,
                    changed_at=changed_at,
                    acknowledged_at=ack.timestamp_ms,
                    topic=ack.topic,
                    partition=ack.partition,
                    offset=ack.offset,
                    settings=settings,
                    rewrites=rewrites,
                )
            state = fold(between, base)
            if state is None or state.deleted:
                raise Refusal(410, "this account was deleted", "gone")
            if rewrites == MAX_REWRITES:
                raise unavailable("the person's record kept changing; retry", self.retry_after)
            base, since, previous, rewrites = state, ack.offset + 1, changed_at, rewrites + 1

    async def _caught_up(self, user_id: str) -> HeldConsent:
        """The held state once the owner has folded the person's partition to its end."""
        held = await self.held(user_id)
        try:
            end = await self.log.end(held.partition)
        except (KafkaError, OSError) as exc:
            log.warning("cannot read the consent topic (%s)", type(exc).__name__)
            raise unavailable("Kafka is unavailable; retry later", self.retry_after) from None
        deadline = time.monotonic() + CATCH_UP_S
        while held.folded_to < end:
            if time.monotonic() > deadline:
                raise unavailable("the pipeline is catching up; retry", self.retry_after)
            await asyncio.sleep(CATCH_UP_POLL_S)
            held = await self.held(user_id)
        return held

    async def _write(self, record: dict[str, object], now: float) -> Acknowledged:
        prepared = prepare_consent_change(record, now=now, limits=self.producer.limits)
        if isinstance(prepared, Rejected):
            log.error("a saved consent record did not validate: %s", prepared.detail)
            raise unavailable("the record could not be built; retry", self.retry_after)
        try:
            ack = await self.producer.acknowledged(
                prepared, self.settings.collector_delivery_timeout_seconds
            )
        except KafkaUnavailable as exc:
            log.warning("could not hand a consent record to Kafka (%s)", exc)
            raise unavailable("Kafka is unavailable; retry later", self.retry_after) from None
        if not isinstance(ack, Acknowledged):
            log.warning("Kafka did not acknowledge a consent record (%s)", ack.error)
            raise unavailable("Kafka did not acknowledge the change; retry", self.retry_after)
        return ack
