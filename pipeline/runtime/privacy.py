"""The worker's consent pages: what its consent table holds for a person, and their decisions.

The collector's consent API (`pipeline.ingest.endpoints.privacy`) asks a worker, over the
worker's web port:

- `GET /internal/users/{user_id}/consent`: the person's row of the consent table, with
  the region defaults applied and the settings their region and age offer
  (`schemas.privacy.HeldConsent`). Only the worker that owns the person's partition
  answers from its table, the committed state only; any other worker forwards the request
  to the owner it knows from the group's routing table (`pipeline.runtime.routing`), as
  Faust's `table_route` does, once: a forwarded request that finds no owner, or a
  partition still recovering, is 503 with `Retry-After`. There is no second copy of the
  state.
- `GET /internal/users/{user_id}/decisions?since=<unix ms>[&cursor=<offset>]`: the
  person's audit records (`decisions.audit`, keyed by the HMAC user key) from `since`, or
  from the cursor an earlier answer gave (`schemas.privacy.DecisionFeed`); any worker
  answers, since it holds the HMAC key.

Both serve personal data, so both require the collector's signature
(`pipeline.core.trust.request_signature`, under `PIPELINE_TRUST_KEY`): 401 without it,
503 on a worker that has no trust key. Errors name no value; nothing here logs a user id.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, Literal, TypeAlias

import aiohttp
import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import CollectorRegistry, Counter
from pydantic import ValidationError
from yarl import URL

from pipeline import catalogue
from pipeline.core import stored
from pipeline.core.errors import ConsentStateError
from pipeline.core.privacy import privacy_settings
from pipeline.core.reasons import PURPOSES, sentence, withheld
from pipeline.core.trust import REQUEST_HEADER, is_signed_request
from pipeline.kafka.config import client_options
from pipeline.kafka.writer import KeyPartitioner
from pipeline.runtime.engine import Engine
from pipeline.settings import Settings
from pipeline.stages.decision import DecisionStage
from schemas import codec
from schemas.privacy import DecisionFeed, DecisionSeen, HeldConsent, ServedBy

log = logging.getLogger(__name__)

ROUTED_HEADER: Final = "X-Pipeline-Routed-By"
"""Set on a request one worker forwarded to another: it is never forwarded again."""
CONSENT_PATH: Final = "/internal/users/{user_id}/consent"
DECISIONS_PATH: Final = "/internal/users/{user_id}/decisions"
RETRY_AFTER_S: Final = 1
FORWARD_TIMEOUT_S: Final = 5.0
AUDIT_READ_BUDGET_S: Final = 1.0
MAX_DECISIONS: Final = 200

Page: TypeAlias = Literal["consent", "decisions"]
Outcome: TypeAlias = Literal[
    "ok",
    "forwarded",
    "not_found",
    "deleted",
    "moving",
    "unauthorized",
    "bad_request",
    "unconfigured",
    "error",
]
PAGES: Final[tuple[Page, ...]] = ("consent", "decisions")


Reply: TypeAlias = tuple[int, bytes, dict[str, str], Outcome]
"""Status, JSON body, extra headers, and the outcome counted."""


class ConsentPageMetrics:
    """Requests to the consent pages, by page and outcome (closed sets)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "pipeline_consent_page_requests_total",
            "Requests to the worker's consent pages: answered from the table (ok), "
            "forwarded to the owner, or refused.",
            ["page", "outcome"],
            registry=registry,
        )


class Answer(Exception):
    """An HTTP answer decided before the end of a handler."""

    def __init__(
        self, status: int, message: str, outcome: Outcome, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.outcome = outcome
        self.headers = headers or {}


class AuditReader:
    """Reads one person's records from `decisions.audit`: one consumer, one read at a time."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = settings.topic(catalogue.AUDIT)
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()
        self._hash = KeyPartitioner()

    async def read(
        self, user_key: str, since_ms: int, cursor: int | None
    ) -> tuple[list[bytes], int, int]:
        """The values of the person's audit records from `cursor` (else from `since_ms`),
        at most `MAX_DECISIONS`; with the partition and the offset to continue from."""
        key = user_key.encode()
        async with self._lock:
            consumer = await self._started()
            partitions = consumer.partitions_for_topic(self.topic)
            if not partitions:
                await consumer._client.force_metadata_update()
                partitions = consumer.partitions_for_topic(self.topic) or set()
            if not partitions:
                raise Answer(503, "the audit topic is not available", "error")
            tp = TopicPartition(self.topic, self._hash(key) % len(partitions))
            consumer.assign([tp])
            end = (await consumer.end_offsets([tp]))[tp]
            if cursor is None:
                found = (await consumer.offsets_for_times({tp: since_ms}))[tp]
                start = end if found is None else found.offset
            else:
                start = min(cursor, end)
            consumer.seek(tp, start)
            position, values = start, list[bytes]()
            deadline = time.monotonic() + AUDIT_READ_BUDGET_S
            while position < end and len(values) < MAX_DECISIONS:
                if time.monotonic() > deadline:
                    break
                batch = await consumer.getmany(tp, timeout_ms=100, max_records=500)
                for record in batch.get(tp, []):
                    position = record.offset + 1
                    if record.key == key and record.value is not None:
                        values.append(record.value)
                        if len(values) >= MAX_DECISIONS:
                            break
                if not batch:
                    position = max(position, await consumer.position(tp))
            return values, tp.partition, position

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def _started(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                **client_options(self.settings),
                client_id=f"{self.settings.app_id}-{self.settings.instance_name}-audit",
                enable_auto_commit=False,
                isolation_level="read_committed",
            )
            await consumer.start()
            self._consumer = consumer
        return self._consumer


class ConsentPages:
    """The handlers of the worker's consent pages."""

    def __init__(self, settings: Settings, engine: Engine, metrics: ConsentPageMetrics) -> None:
        self.settings = settings
        self.engine = engine
        self.metrics = metrics
        self.stage = next(s for s in engine.stages if isinstance(s, DecisionStage))
        self.consent_topic = settings.topic(catalogue.CONSENT_CHANGES)
        self.audit = AuditReader(settings)
        self._hash = KeyPartitioner()
        trust_key = settings.trust_key
        self._key = None if trust_key is None else trust_key.get_secret_value().encode()

    async def consent(self, request: Any, user_id: str) -> Reply:
        """The person's row of the consent table, from the owner of their partition."""
        self._check_signature(request)
        key = user_id.encode()
        partition = self._hash(key) % self.engine.partition_count
        folded_to = await self.engine.folded_to(TopicPartition(self.consent_topic, partition))
        # No await from here on: ownership, the row and the position are read together.
        table = self.stage.consent
        if partition in self.engine.owned(self.stage) and partition in table.stores:
            return self._held(user_id, key, partition, folded_to)
        return await self._forward(request, partition)

    async def decisions(self, request: Any, user_id: str) -> Reply:
        """The person's audit records from `since` or `cursor`."""
        self._check_signature(request)
        since = _int_query(request, "since")
        cursor = _int_query(request, "cursor", required=False)
        if since is None or since < 0 or (cursor is not None and cursor < 0):
            raise Answer(400, "since (unix ms) is required; cursor is an offset", "bad_request")
        user_key = self.stage.config.pseudonymizer.user_key(user_id)
        values, partition, position = await self.audit.read(user_key, since, cursor)
        seen = [seen for value in values if (seen := _decision(value)) is not None]
        feed = DecisionFeed(decisions=seen, partition=partition, cursor=position)
        return 200, codec.dumps(feed.model_dump(mode="json")), {}, "ok"

    def _held(self, user_id: str, key: bytes, partition: int, folded_to: int) -> Reply:
        value = self.stage.consent.stores[partition].get(key)  # committed state only
        if value is None:
            raise Answer(404, "no consent record for this user", "not_found")
        try:
            row = stored.decode_consent_row(value)
        except ConsentStateError:
            log.error("an unreadable consent row in partition %d", partition)
            raise Answer(503, "the stored consent state cannot be read", "error") from None
        if row.state.deleted:
            raise Answer(410, "this account was deleted", "deleted")
        worker = self.settings.instance_name
        privacy = privacy_settings(
            row.state,
            self.stage.config.policy,
            now=time.time(),
            acknowledged_ms=row.acknowledged_ms,
        ).model_copy(update={"served_by": ServedBy(worker=worker, partition=partition)})
        held = HeldConsent(
            user_id=user_id,
            partition=partition,
            worker=worker,
            folded_to=folded_to,
            acknowledged_ms=row.acknowledged_ms,
            state=row.state.to_dict(),
            privacy=privacy,
        )
        return 200, codec.dumps(held.model_dump(mode="json")), {}, "ok"

    async def _forward(self, request: Any, partition: int) -> Reply:
        moving = Answer(
            503,
            "this user's partition is moving between workers; retry",
            "moving",
            {"Retry-After": str(RETRY_AFTER_S)},
        )
        route = self.engine.routing.owner(partition)
        me = self.settings.instance_name
        if route is None or route.worker == me or request.headers.get(ROUTED_HEADER):
            raise moving
        target = URL(route.url + request.raw_path, encoded=True)
        headers = {
            REQUEST_HEADER: request.headers.get(REQUEST_HEADER, ""),
            ROUTED_HEADER: me,
        }
        try:
            async with (
                aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S)
                ) as http,
                http.get(target, headers=headers, allow_redirects=False) as response,
            ):
                body = await response.read()
                status = response.status
                retry = response.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning(
                "could not forward a consent request to %s (%s)", route.worker, type(exc).__name__
            )
            raise moving from None
        return status, body, {"Retry-After": retry} if retry else {}, "forwarded"

    def _check_signature(self, request: Any) -> None:
        if self._key is None:
            raise Answer(503, "this worker has no PIPELINE_TRUST_KEY", "unconfigured")
        if not is_signed_request(
            self._key,
            request.method,
            request.raw_path,
            request.headers.get(REQUEST_HEADER),
            now=time.time(),
        ):
            raise Answer(401, "a valid request signature is required", "unauthorized")


def _int_query(request: Any, name: str, *, required: bool = True) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19:
        raise Answer(400, f"{name} must be a non-negative integer", "bad_request")
    return int(raw)


def _decision(value: bytes) -> DecisionSeen | None:
    """The page's view of an audit record (None: not an event's decision)."""
    try:
        record = codec.loads(value)
        timings = record["timings"]
        return DecisionSeen(
            event_id=record["event_id"],
            source=record["source"],
            advertiser_id=record.get("advertiser_id"),
            event_time=timings["event_time"],
            received_at=timings.get("received_at"),
            decided_at=timings["decided_at"],
            outcomes=record["outcomes"],
            reasons=record["reasons"],
            destinations=record["destinations"],
            duplicate=record["duplicate"],
            consent_version=record.get("consent_version"),
            said={
                purpose: sentence(purpose, record["outcomes"][purpose], record["reasons"])
                for purpose in PURPOSES
            },
            withheld=withheld(record["outcomes"]),
        )
    except (codec.DecodeError, KeyError, TypeError, ValidationError):
        return None


Handler = Callable[[Any, str], Awaitable[Reply]]


def register_consent_pages(
    app: faust.App, settings: Settings, engine: Engine, registry: CollectorRegistry
) -> ConsentPages:
    """Serve the consent pages on the worker's web port."""
    metrics = ConsentPageMetrics(registry)
    pages = ConsentPages(settings, engine, metrics)
    for page in PAGES:
        for outcome in ("ok", "unauthorized"):
            metrics.requests.labels(page, outcome)

    def serve(page: Page, handler: Handler) -> Callable[..., Awaitable[Any]]:
        async def view(web: Any, request: Any, user_id: str) -> Any:
            try:
                status, body, headers, outcome = await handler(request, user_id)
                metrics.requests.labels(page, outcome).inc()
            except Answer as answer:
                metrics.requests.labels(page, answer.outcome).inc()
                status, headers = answer.status, answer.headers
                body = codec.dumps({"error": answer.message})
            except Exception as exc:  # a bug never becomes a 500 with data in it
                log.error("unexpected %s answering a %s page", type(exc).__name__, page)
                metrics.requests.labels(page, "error").inc()
                status, headers = 503, {"Retry-After": str(RETRY_AFTER_S)}
                body = codec.dumps({"error": "unexpected error; retry"})
            return web.bytes(
                body,
                content_type="application/json",
                status=status,
                headers={"Cache-Control": "no-store", **headers},
            )

        return view

    app.page(CONSENT_PATH)(serve("consent", pages.consent))
    app.page(DECISIONS_PATH)(serve("decisions", pages.decisions))

    @app.on_before_shutdown.connect
    async def _stop_audit_reader(sender: Any, /, *_: Any, signal: Any, **__: Any) -> None:
        await pages.audit.stop()

    return pages
