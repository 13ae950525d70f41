"""The producer library for tag and SDK backends: validate, normalize, key, batch, deliver.

```python
async with EventProducer(settings) as producer:
    result = await producer.send("tag", event)      # Accepted | Rejected, at once
    if isinstance(result, Rejected):
        ...                                          # result.reason, result.detail
    failures = await producer.flush()                # what Kafka did not acknowledge
```

Events go through the pipeline's own parser (`pipeline.core.parse`), so a record this
library accepts is one the workers accept, with the same limits and value-free error
details. Raw emails and phones in `user_data.em` / `user_data.ph` are normalized and
hashed before anything leaves the process. Records are keyed by the subject key
and written with `acks=all` and idempotence; aiokafka batches them (`linger_ms`), and
every delivery is tracked so `flush()` reports the ones Kafka did not acknowledge.
Nothing here logs an event, a key or a value.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from pipeline import catalogue
from pipeline.catalogue import Topic
from pipeline.core.parse import (
    ParseLimits,
    Rejected,
    parse_audience_member,
    parse_consent_change,
    parse_event,
    processing_error,
)
from pipeline.core.route import list_key, subject_key
from pipeline.core.trust import TRUST_HEADER, trust_signature
from pipeline.errors import DeliveryError
from pipeline.kafka.producer import Producer
from pipeline.settings import Settings
from schemas import codec, normalize
from schemas.events import EVENT_MODELS, Source

_CONTACT_POINTS: Final = ("em", "ph")

__all__ = [
    "Accepted",
    "Acknowledged",
    "DeliveryFailure",
    "EventProducer",
    "Prepared",
    "Rejected",
    "prepare_consent_change",
    "prepare_event",
    "prepare_member",
]


@dataclass(frozen=True, slots=True)
class Prepared:
    """A validated, normalized record ready for Kafka: its topic, key and value."""

    topic: Topic
    key: bytes
    value: bytes
    event_id: str | None
    headers: tuple[tuple[str, bytes], ...] = ()
    """Kafka record headers, e.g. `pipeline-trust` for a record naming a trusted user."""
    user_id: str | None = None
    """The `user_id` the record names, if any (only a trusted producer may set one)."""

    def signed(self, trust_key: bytes) -> Prepared:
        """This record marked as from a trusted producer (`pipeline.core.trust`)."""
        signature = (TRUST_HEADER, trust_signature(trust_key, self.value))
        return dataclasses.replace(self, headers=(*self.headers, signature))


@dataclass(frozen=True, slots=True)
class Accepted:
    """An event handed to Kafka; `delivery` completes when Kafka acknowledges it."""

    event_id: str | None
    topic: str
    delivery: asyncio.Future[Any] = field(repr=False, compare=False)

    async def delivered(self) -> None:
        """Wait for Kafka's acknowledgement.

        Raises:
            DeliveryError: Kafka did not acknowledge the record.
        """
        try:
            await self.delivery
        except (KafkaError, OSError) as exc:
            raise DeliveryError(f"{self.topic}: {type(exc).__name__}") from exc


@dataclass(frozen=True, slots=True)
class Acknowledged:
    """Where Kafka appended a record, and when (its timestamp: the broker's append time on
    topics that keep `LogAppendTime`, as the inputs do)."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class DeliveryFailure:
    """A record Kafka did not acknowledge: which event, where, and the error type only."""

    event_id: str | None
    topic: str
    error: str


def prepare_event(
    source: Source, event: object, *, now: float, limits: ParseLimits | None = None
) -> Prepared | Rejected:
    """Validate and normalize one raw event exactly as ingest will, or say why not.

    Raw emails and phones are hashed in a copy; `event` itself is not changed. The value
    keeps the caller's field order and unknown fields (the pipeline ignores them).
    """
    if source not in EVENT_MODELS:
        return Rejected("schema_violation", "source: literal_error")
    if not isinstance(event, Mapping):
        return Rejected("schema_violation", "body: model_type")
    document = _with_contact_points_hashed(event)
    try:
        value = codec.dumps(document)
    except codec.EncodeError:
        return Rejected("schema_violation", "body: not_json_serializable")
    limits = dataclasses.replace(limits or ParseLimits(), require_key=False)
    parsed = parse_event(source, value, now=now, limits=limits)
    if isinstance(parsed, Rejected):
        return parsed
    try:
        key = subject_key(parsed).encode()
    except Exception as exc:  # a bug must not escape to the caller as a traceback with data
        return processing_error(exc, "key")
    return Prepared(catalogue.RAW[source], key, value, parsed.event_id, user_id=parsed.user_id)


def prepare_consent_change(
    change: object, *, now: float, limits: ParseLimits | None = None
) -> Prepared | Rejected:
    """Validate one `consent.changes` record (keyed by its user id), or say why not."""
    if not isinstance(change, Mapping):
        return Rejected("schema_violation", "body: model_type")
    try:
        value = codec.dumps(dict(change))
    except codec.EncodeError:
        return Rejected("schema_violation", "body: not_json_serializable")
    limits = dataclasses.replace(limits or ParseLimits(), require_key=False)
    parsed = parse_consent_change(value, now=now, limits=limits)
    if isinstance(parsed, Rejected):
        return parsed
    return Prepared(catalogue.CONSENT_CHANGES, parsed.user_id.encode(), value, None)


def prepare_member(member: object, *, limits: ParseLimits | None = None) -> Prepared | Rejected:
    """Validate one `raw.audience` record, keyed by its list, or say why not.

    Its match keys must already be hashed (`pipeline.ingest.dialects.members`)."""
    if not isinstance(member, Mapping):
        return Rejected("schema_violation", "body: model_type")
    try:
        value = codec.dumps(dict(member))
    except codec.EncodeError:
        return Rejected("schema_violation", "body: not_json_serializable")
    limits = dataclasses.replace(limits or ParseLimits(), require_key=False)
    parsed = parse_audience_member(value, limits=limits)
    if isinstance(parsed, Rejected):
        return parsed
    return Prepared(
        catalogue.RAW_AUDIENCE,
        list_key(parsed.advertiser_id, parsed.audience_id).encode(),
        value,
        None,
    )


def _with_contact_points_hashed(event: Mapping[str, Any]) -> dict[str, Any]:
    document = dict(event)
    user_data = document.get("user_data")
    if isinstance(user_data, Mapping):
        copied = dict(user_data)
        for name in _CONTACT_POINTS:
            if isinstance(copied.get(name), list):
                copied[name] = list(copied[name])
        normalize.hash_raw_contact_points(copied)
        document["user_data"] = copied
    return document


APPEND_MARGIN_S = 5
"""Beyond the request timeout, how late Kafka may append what `EventProducer` hands it."""


class EventProducer:
    """Validates, normalizes and writes events for one cluster; start it before sending.

    An event it accepts is one a worker decides: it is checked with the worker's models and
    limits, and no older than the worker allows at the latest moment Kafka may append it.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        client_id: str = "consent-pipeline-producer",
        request_timeout_ms: int = 30_000,
        linger_ms: int = 5,
        max_pending: int = 10_000,
        clock: Callable[[], float] = time.time,
        kafka_factory: Callable[..., Any] = AIOKafkaProducer,
    ) -> None:
        self.settings = settings
        self.limits = ParseLimits(
            max_bytes=settings.max_event_bytes,
            require_key=False,
            age_margin_s=request_timeout_ms // 1000 + APPEND_MARGIN_S,
        )
        self._producer = Producer(
            settings,
            client_id=client_id,
            linger_ms=linger_ms,
            request_timeout_ms=request_timeout_ms,
            kafka_factory=kafka_factory,
        )
        self._max_pending = max_pending
        self._clock = clock
        self._pending: set[asyncio.Future[Any]] = set()
        self._failures: list[DeliveryFailure] = []

    async def __aenter__(self) -> EventProducer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def started(self) -> bool:
        """Whether the producer is connected and accepting records."""
        return self._producer.started

    async def start(self) -> None:
        """Connect to the cluster.

        Raises:
            KafkaUnavailable: no bootstrap server answered.
        """
        await self._producer.start()

    async def stop(self) -> None:
        """Flush what is in flight (failures stay readable through `flush`), then close."""
        if not self._producer.started:
            return
        try:
            await self._producer.flush()
            if self._pending:
                await asyncio.wait(list(self._pending))
        finally:
            await self._producer.stop()

    def prepare(self, source: Source, event: object) -> Prepared | Rejected:
        """`prepare_event` with this producer's clock and size limit."""
        return prepare_event(source, event, now=self._clock(), limits=self.limits)

    async def send(self, source: Source, event: object) -> Accepted | Rejected:
        """Validate `event` and hand it to Kafka without waiting for the acknowledgement.

        Returns `Rejected` (a DLQ reason and a detail naming the field, never the value)
        when the pipeline would reject the event; nothing is sent then.

        Raises:
            KafkaUnavailable: the producer is not started, or Kafka refused the record
                at once (unknown topic, no metadata in time).
        """
        prepared = self.prepare(source, event)
        if isinstance(prepared, Rejected):
            return prepared
        return await self.send_prepared(prepared)

    async def send_consent_change(self, change: object) -> Accepted | Rejected:
        """Validate a `consent.changes` record and hand it to Kafka, keyed by its user id."""
        prepared = prepare_consent_change(change, now=self._clock(), limits=self.limits)
        if isinstance(prepared, Rejected):
            return prepared
        return await self.send_prepared(prepared)

    async def send_prepared(self, prepared: Prepared) -> Accepted:
        """Hand a prepared record to Kafka; its delivery is tracked for `flush`."""
        future = await self._enqueue(prepared)
        self._pending.add(future)
        future.add_done_callback(self._on_delivery(prepared))
        if len(self._pending) >= self._max_pending:
            await asyncio.wait(list(self._pending), return_when=asyncio.FIRST_COMPLETED)
        return Accepted(prepared.event_id, prepared.topic.name, future)

    async def deliver(
        self, records: Sequence[Prepared], within_s: float
    ) -> list[DeliveryFailure | None]:
        """Send `records` and wait up to `within_s` seconds for every acknowledgement.

        Returns, per record, None when Kafka acknowledged it, else the failure. These
        deliveries are not tracked for `flush`: the caller has their outcome.

        Raises:
            KafkaUnavailable: the producer is not started, or Kafka refused a record at once.
        """
        futures: list[asyncio.Future[Any]] = []
        for prepared in records:
            future = await self._enqueue(prepared)
            future.add_done_callback(_retrieve)  # a late failure is not an unhandled error
            futures.append(future)
        if not futures:
            return []
        done, _ = await asyncio.wait(futures, timeout=within_s)
        results: list[DeliveryFailure | None] = []
        for prepared, future in zip(records, futures, strict=True):
            if future not in done:
                results.append(DeliveryFailure(prepared.event_id, prepared.topic.name, "Timeout"))
            elif future.cancelled() or future.exception() is not None:
                error = "Cancelled" if future.cancelled() else type(future.exception()).__name__
                results.append(DeliveryFailure(prepared.event_id, prepared.topic.name, error))
            else:
                results.append(None)
        return results

    async def acknowledged(
        self, prepared: Prepared, within_s: float
    ) -> Acknowledged | DeliveryFailure:
        """Send one record and wait up to `within_s` seconds for Kafka to acknowledge it.

        Raises:
            KafkaUnavailable: the producer is not started, or Kafka refused the record at once.
        """
        future = await self._enqueue(prepared)
        future.add_done_callback(_retrieve)
        done, _ = await asyncio.wait([future], timeout=within_s)
        if future not in done:
            return DeliveryFailure(prepared.event_id, prepared.topic.name, "Timeout")
        if future.cancelled() or future.exception() is not None:
            error = "Cancelled" if future.cancelled() else type(future.exception()).__name__
            return DeliveryFailure(prepared.event_id, prepared.topic.name, error)
        metadata = future.result()
        return Acknowledged(
            prepared.topic.name, metadata.partition, metadata.offset, metadata.timestamp
        )

    async def flush(self) -> list[DeliveryFailure]:
        """Wait for every tracked delivery; return (and forget) the failures so far."""
        await self._producer.flush()
        if self._pending:
            await asyncio.wait(list(self._pending))
        failures, self._failures = self._failures, []
        return failures

    async def _enqueue(self, prepared: Prepared) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = await self._producer.send(
            self.settings.topic(prepared.topic), prepared.value, prepared.key, prepared.headers
        )
        return future

    def _on_delivery(self, prepared: Prepared) -> Callable[[asyncio.Future[Any]], None]:
        def done(future: asyncio.Future[Any]) -> None:
            self._pending.discard(future)
            if future.cancelled():
                error: str | None = "Cancelled"
            else:
                exc = future.exception()
                error = None if exc is None else type(exc).__name__
            if error is not None:
                self._failures.append(
                    DeliveryFailure(prepared.event_id, prepared.topic.name, error)
                )

        return done


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
