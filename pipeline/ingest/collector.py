"""The HTTP collector (aiohttp): Conversions-API batches, the pixel beacon, widget events.

- `POST /v1/events`: a Conversions-API batch `{"data": [event, ...]}`, up to
  `collector_max_events` events; the answer has one result per index;
- `GET /v1/tag`: the pixel beacon (query parameters, the DNT and Sec-GPC headers, the
  web opt-out cookie), answered with a 1x1 GIF;
- `POST /v1/widget`: one widget event, or `{"data": [...]}`, with the browser's signals;
- `GET /healthz`: liveness, saying whether Kafka is connected; `GET /ready`: 200 when
  Kafka is connected, else 503.

Every accepted event is acknowledged by Kafka (`acks=all`) before the answer; when Kafka
is unreachable or too slow the answer is 503 with `Retry-After`, never a silent drop.
Errors name the field and the error type, never a value; the access log has the method,
path and status only (no query string, no client address).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Final

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_exceptions import HTTPRequestEntityTooLarge

from pipeline.core.parse import Rejected
from pipeline.errors import KafkaUnavailable
from pipeline.ingest.beacon import beacon_event, events_source, with_browser_signals
from pipeline.ingest.client import EventProducer, Prepared
from pipeline.settings import Settings
from schemas import codec
from schemas.events import Source

log = logging.getLogger(__name__)

PIXEL: Final = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
"""A 1x1 transparent GIF."""
_NO_STORE: Final = {"Cache-Control": "no-store"}
_REQUEST_SOURCES: Final[dict[str, Source]] = {"tag": "tag", "sdk": "sdk"}


class AccessLogger(AbstractAccessLogger):
    """Method, path, status and time: no query string (it can hold ids), no client address."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            "%s %s %s %.1fms", request.method, request.path, response.status, time * 1000
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


class Collector:
    """The collector's handlers and its connection to Kafka."""

    def __init__(
        self,
        settings: Settings,
        *,
        producer: EventProducer | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.producer = producer or EventProducer(
            settings,
            client_id="consent-pipeline-collector",
            request_timeout_ms=int(settings.collector_delivery_timeout_seconds * 1000),
            clock=clock,
        )
        self.counts: Counter[str] = Counter()
        """Requests and events by outcome, for the demo's view and `/healthz`."""
        self._clock = clock
        self._connect_task: asyncio.Task[None] | None = None

    # -- lifecycle -----------------------------------------------------------------

    def app(self) -> web.Application:
        """The aiohttp application; starting it connects to Kafka in the background."""
        app = web.Application(client_max_size=self.settings.collector_max_body_bytes)
        app.router.add_post("/v1/events", self.post_events)
        app.router.add_get("/v1/tag", self.get_tag)
        app.router.add_post("/v1/widget", self.post_widget)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/ready", self.ready)
        app.on_startup.append(self._on_startup)
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def _on_startup(self, _: web.Application) -> None:
        with contextlib.suppress(KafkaUnavailable):
            await self.producer.start()  # at once when Kafka is up; else in the background
        if not self.producer.started:
            self._connect_task = asyncio.create_task(self._connect())

    async def _on_cleanup(self, _: web.Application) -> None:
        if self._connect_task is not None:
            self._connect_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connect_task
        await self.producer.stop()

    async def _connect(self) -> None:
        retry = self.settings.collector_retry_after_seconds
        while not self.producer.started:
            log.warning(
                "cannot reach Kafka at %s; retrying every %ss, answering 503 meanwhile",
                self.settings.kafka_bootstrap_servers,
                retry,
            )
            await asyncio.sleep(retry)
            with contextlib.suppress(KafkaUnavailable):
                await self.producer.start()
        log.info("connected to Kafka at %s", self.settings.kafka_bootstrap_servers)

    @property
    def available(self) -> bool:
        """Whether events can be handed to Kafka now."""
        return self.producer.started

    # -- handlers ------------------------------------------------------------------

    async def post_events(self, request: web.Request) -> web.StreamResponse:
        """A Conversions-API batch: `{"data": [event, ...]}`; `?source=tag|sdk` forces the topic."""
        requested = request.query.get("source")
        if requested is not None and requested not in _REQUEST_SOURCES:
            return _error(400, "source must be tag or sdk")
        forced = _REQUEST_SOURCES.get(requested) if requested else None
        body = await self._read_batch(request)
        if isinstance(body, web.StreamResponse):
            return body
        return await self._collect([(events_source(e, forced), e) for e in body])

    async def post_widget(self, request: web.Request) -> web.StreamResponse:
        """One widget event, or `{"data": [...]}`, sent by the browser it happened in."""
        body = await self._read_batch(request, single_allowed=True)
        if isinstance(body, web.StreamResponse):
            return body
        optout = self.settings.collector_optout_cookie
        items: list[tuple[Source, object]] = [
            (
                "widget",
                with_browser_signals(
                    event,
                    request.headers,
                    request.cookies,
                    remote=request.remote,
                    optout_cookie=optout,
                ),
            )
            for event in body
        ]
        return await self._collect(items)

    async def get_tag(self, request: web.Request) -> web.StreamResponse:
        """The pixel: a tag event from the query string and the browser's signals; a GIF."""
        self.counts["requests"] += 1
        if not self.available:
            return self._unavailable(gif=True)
        event = beacon_event(
            request.query,
            request.headers,
            request.cookies,
            remote=request.remote,
            now=self._clock(),
            new_event_id=lambda: uuid.uuid4().hex,
            optout_cookie=self.settings.collector_optout_cookie,
        )
        prepared = self.producer.prepare("tag", event)
        if isinstance(prepared, Rejected):
            self.counts["events_rejected"] += 1
            headers = {**_NO_STORE, "X-Rejected": f"{prepared.reason}; {prepared.detail}"}
            return web.Response(status=400, body=PIXEL, content_type="image/gif", headers=headers)
        failures = await self._deliver([prepared])
        if failures is None:
            return self._unavailable(gif=True)
        self.counts["events_accepted"] += 1
        return web.Response(body=PIXEL, content_type="image/gif", headers=_NO_STORE)

    async def healthz(self, _: web.Request) -> web.StreamResponse:
        """Liveness: the process answers; says whether Kafka is connected."""
        kafka = "connected" if self.available else "unavailable"
        return web.json_response(
            {"status": "ok", "kafka": kafka, "counts": dict(self.counts)}, dumps=_dumps
        )

    async def ready(self, _: web.Request) -> web.StreamResponse:
        """Readiness: 200 when events can be delivered, else 503."""
        if self.available:
            return web.json_response({"ready": True}, dumps=_dumps)
        return self._unavailable()

    # -- shared --------------------------------------------------------------------

    async def _read_batch(
        self, request: web.Request, *, single_allowed: bool = False
    ) -> list[object] | web.StreamResponse:
        self.counts["requests"] += 1
        if not self.available:
            return self._unavailable()
        limit = self.settings.collector_max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return self._too_large()
        try:
            raw = await request.read()
        except HTTPRequestEntityTooLarge:
            return self._too_large()
        try:
            body = codec.loads(raw)
        except codec.DecodeError:
            return _error(400, "body is not valid JSON (UTF-8)")
        if single_allowed and isinstance(body, dict) and "data" not in body:
            return [body]
        if not isinstance(body, dict) or not isinstance(body.get("data"), list):
            return _error(400, 'expected a JSON object with a "data" list of events')
        events: list[object] = body["data"]
        if not events:
            return _error(400, '"data" is empty')
        if len(events) > self.settings.collector_max_events:
            return _error(
                413,
                f"too many events: at most {self.settings.collector_max_events} per request",
            )
        return events

    async def _collect(self, items: Sequence[tuple[Source, object]]) -> web.StreamResponse:
        results: list[dict[str, Any]] = []
        valid: list[Prepared] = []
        for index, (source, event) in enumerate(items):
            prepared = self.producer.prepare(source, event)
            if isinstance(prepared, Rejected):
                results.append(
                    {
                        "index": index,
                        "status": "rejected",
                        "reason": prepared.reason,
                        "error": prepared.detail,
                    }
                )
            else:
                valid.append(prepared)
                results.append(
                    {
                        "index": index,
                        "status": "accepted",
                        "event_id": prepared.event_id,
                        "topic": prepared.topic.name,
                    }
                )
        if valid and await self._deliver(valid) is None:
            return self._unavailable()
        accepted = len(valid)
        self.counts["events_accepted"] += accepted
        self.counts["events_rejected"] += len(items) - accepted
        body = {
            "events_received": len(items),
            "events_accepted": accepted,
            "events_rejected": len(items) - accepted,
            "results": results,
        }
        return web.json_response(body, dumps=_dumps)

    async def _deliver(self, records: list[Prepared]) -> list[None] | None:
        """None unless Kafka acknowledged every record in time."""
        try:
            outcomes = await self.producer.deliver(
                records, self.settings.collector_delivery_timeout_seconds
            )
        except KafkaUnavailable as exc:
            log.warning("could not hand events to Kafka (%s)", exc)
            return None
        failed = [o for o in outcomes if o is not None]
        if failed:
            errors = Counter(f.error for f in failed)
            log.warning("Kafka did not acknowledge %d records: %s", len(failed), dict(errors))
            return None
        return [None] * len(outcomes)

    def _unavailable(self, *, gif: bool = False) -> web.StreamResponse:
        self.counts["unavailable"] += 1
        retry = str(self.settings.collector_retry_after_seconds)
        headers = {"Retry-After": retry, **_NO_STORE}
        if gif:
            return web.Response(status=503, body=PIXEL, content_type="image/gif", headers=headers)
        return web.json_response(
            {"error": "Kafka is unavailable; retry later", "retry_after": int(retry)},
            status=503,
            headers=headers,
            dumps=_dumps,
        )

    def _too_large(self) -> web.StreamResponse:
        limit = self.settings.collector_max_body_bytes
        return _error(413, f"request body too large: at most {limit} bytes")


def _dumps(obj: Any) -> str:
    return codec.dumps(obj).decode()


def _error(status: int, message: str) -> web.StreamResponse:
    return web.json_response({"error": message}, status=status, dumps=_dumps)


async def serve(settings: Settings, stop: asyncio.Event) -> Collector:
    """Run the collector on `collector_host:collector_port` until `stop` is set."""
    collector = Collector(settings)
    runner = web.AppRunner(collector.app(), access_log_class=AccessLogger)
    await runner.setup()
    site = web.TCPSite(runner, settings.collector_host, settings.collector_port)
    try:
        await site.start()
        log.info(
            "collector listening on http://%s:%d", settings.collector_host, settings.collector_port
        )
        await stop.wait()
    finally:
        await runner.cleanup()
    return collector
