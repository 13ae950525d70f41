"""The native endpoints: `POST /v1/events` and `POST /v1/widget` (Bearer token).

- `POST /v1/events`: `{"data": [event, ...]}`, up to `collector_max_events`; `?source=
  tag|sdk` forces the raw topic. The answer has one result per index:
  `{"events_received", "events_accepted", "events_rejected", "results": [{"index",
  "status": "accepted"|"rejected", ...}]}`, and `events_accepted` counts only events Kafka
  acknowledged;
- `POST /v1/widget`: one widget event, or `{"data": [...]}`, with the signals of the
  browser that sent it.

Errors are `{"error": message}`: 401 without a valid token (`WWW-Authenticate: Bearer`),
403 for another advertiser's `advertiser_id`, 429 and 503 with `Retry-After`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from aiohttp import web

from pipeline.core.parse import Rejected
from pipeline.ingest.client import Prepared
from pipeline.ingest.collector import NO_STORE, Collector, bearer, dumps
from pipeline.ingest.dialects import Invalid
from pipeline.ingest.dialects.native import (
    Forbidden,
    events_source,
    for_advertiser,
    with_browser_signals,
)
from pipeline.ingest.metrics import Dialect
from pipeline.ingest.registry import Credential
from schemas import codec
from schemas.events import Source

_REQUEST_SOURCES: Final[dict[str, Source]] = {"tag": "tag", "sdk": "sdk"}


def register(router: web.UrlDispatcher, collector: Collector) -> None:
    """Add `/v1/events` and `/v1/widget`."""
    endpoints = NativeEndpoints(collector)
    router.add_post(
        "/v1/events", collector.guarded("native", endpoints.post_events, endpoints.failure)
    )
    router.add_post(
        "/v1/widget", collector.guarded("widget", endpoints.post_widget, endpoints.failure)
    )


def error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """A native error answer."""
    return web.json_response({"error": message}, status=status, headers=headers, dumps=dumps)


class NativeEndpoints:
    """The handlers of the native endpoints."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector

    async def post_events(self, request: web.Request) -> web.StreamResponse:
        """A Conversions-API batch of raw records."""
        requested = request.query.get("source")
        if requested is not None and requested not in _REQUEST_SOURCES:
            self.collector.count("native", "bad_request")
            return error(400, "source must be tag or sdk")
        forced = _REQUEST_SOURCES.get(requested) if requested else None
        admitted = await self._admit("native", request, single_allowed=False)
        if isinstance(admitted, web.StreamResponse):
            return admitted
        credential, events = admitted
        return await self._collect(
            "native",
            credential,
            [(events_source(event, forced), event) for event in events],
            advertiser_optional=False,
        )

    async def post_widget(self, request: web.Request) -> web.StreamResponse:
        """Widget events sent by the browser they happened in (through the widget backend)."""
        admitted = await self._admit("widget", request, single_allowed=True)
        if isinstance(admitted, web.StreamResponse):
            return admitted
        credential, events = admitted
        cookie = self.collector.settings.collector_optout_cookie
        items: list[tuple[Source, object]] = [
            (
                "widget",
                with_browser_signals(
                    event,
                    request.headers,
                    request.cookies,
                    remote=request.remote,
                    optout_cookie=cookie,
                ),
            )
            for event in events
        ]
        return await self._collect("widget", credential, items, advertiser_optional=True)

    def failure(self) -> web.StreamResponse:
        """The answer to an unexpected error: 503, retry later (nothing was answered 2xx)."""
        return self._unavailable()

    async def _admit(
        self, dialect: Dialect, request: web.Request, *, single_allowed: bool
    ) -> tuple[Credential, list[object]] | web.StreamResponse:
        collector = self.collector
        credential = collector.authenticate(bearer(request.headers.get("Authorization")))
        if credential is None:
            collector.count(dialect, "unauthorized")
            return error(
                401,
                "a valid token is required: Authorization: Bearer <token>",
                {"WWW-Authenticate": 'Bearer realm="consent-pipeline"'},
            )
        wait = collector.throttle(dialect, credential)
        if wait is not None:
            return error(429, f"too many requests; retry in {wait}s", {"Retry-After": str(wait)})
        if not collector.available:
            collector.count(dialect, "unavailable")
            return self._unavailable()
        body = await collector.read_body(request)
        limits = collector.settings
        if body is None:
            collector.count(dialect, "too_large")
            return error(
                413, f"request body too large: at most {limits.collector_max_body_bytes} bytes"
            )
        try:
            document = codec.loads(body)
        except codec.DecodeError:
            collector.count(dialect, "bad_request")
            return error(400, "body is not valid JSON (UTF-8)")
        if single_allowed and isinstance(document, dict) and "data" not in document:
            return credential, [document]
        if not isinstance(document, dict) or not isinstance(document.get("data"), list):
            collector.count(dialect, "bad_request")
            return error(400, 'expected a JSON object with a "data" list of events')
        events: list[object] = document["data"]
        if not events:
            collector.count(dialect, "bad_request")
            return error(400, '"data" is empty')
        if len(events) > limits.collector_max_events:
            collector.count(dialect, "too_large")
            return error(413, f"too many events: at most {limits.collector_max_events} per request")
        return credential, events

    async def _collect(
        self,
        dialect: Dialect,
        credential: Credential,
        items: Sequence[tuple[Source, object]],
        *,
        advertiser_optional: bool,
    ) -> web.StreamResponse:
        collector = self.collector
        results: list[dict[str, Any]] = []
        valid: list[Prepared] = []
        for index, (source, event) in enumerate(items):
            owned = for_advertiser(
                event,
                credential.advertiser_id,
                trusted=credential.trusted,
                advertiser_optional=advertiser_optional,
            )
            if isinstance(owned, Forbidden):
                collector.count(dialect, "forbidden")
                return error(
                    403,
                    f"event {index}: {owned.detail}: a token writes for its own advertiser only",
                )
            if isinstance(owned, Invalid):
                prepared: Prepared | Rejected = collector.rejected(
                    dialect, Rejected("schema_violation", owned.detail)
                )
            else:
                prepared = collector.prepare(dialect, source, owned, credential)
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
        if not await collector.deliver(dialect, valid):
            collector.count(dialect, "unavailable")
            return self._unavailable()
        collector.count(dialect, "ok")
        body = {
            "events_received": len(items),
            "events_accepted": len(valid),
            "events_rejected": len(items) - len(valid),
            "results": results,
        }
        return web.json_response(body, dumps=dumps)

    def _unavailable(self) -> web.StreamResponse:
        retry = self.collector.retry_after
        return web.json_response(
            {"error": "Kafka is unavailable; retry later", "retry_after": retry},
            status=503,
            headers={"Retry-After": str(retry), **NO_STORE},
            dumps=dumps,
        )
