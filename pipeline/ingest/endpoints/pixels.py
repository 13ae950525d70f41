"""The pixel beacons: Pinterest's `GET|POST /v3/`, Meta's `GET|POST /tr`, native `GET /v1/tag`.

Every beacon is answered with the 1x1 GIF: 200 when the event was written (or when the
tag, pixel or advertiser is not registered: counted, not written, as a browser cannot do
anything about it), 400 with an `X-Rejected` header (reason and field, never a value)
when the beacon cannot be read, 503 with `Retry-After` while Kafka is away. A beacon
carries no secret; the registry says whose tag or pixel it is.

A `POST` beacon (the Pinterest tag falls back to one for long URLs; the Meta pixel's
`formPOST`) carries the same keys in a form or JSON body.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from pipeline.core.parse import Rejected
from pipeline.ingest.collector import Collector, gif
from pipeline.ingest.dialects import Invalid, meta_pixel, native, pinterest_tag
from pipeline.ingest.metrics import Dialect
from schemas import codec

Beacon = Callable[..., "dict[str, Any] | Invalid"]


def register(router: web.UrlDispatcher, collector: Collector) -> None:
    """Add the beacon paths."""
    pixels = PixelEndpoints(collector)
    for path in ("/v3/", "/v3"):
        handler = collector.guarded("pinterest_tag", pixels.pinterest, pixels.unavailable)
        router.add_get(path, handler)
        router.add_post(path, handler)
    for path in ("/tr", "/tr/"):
        handler = collector.guarded("meta_pixel", pixels.meta, pixels.unavailable)
        router.add_get(path, handler)
        router.add_post(path, handler)
    router.add_get("/v1/tag", collector.guarded("tag", pixels.native, pixels.unavailable))


class PixelEndpoints:
    """The handlers of the beacon paths."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector

    async def pinterest(self, request: web.Request) -> web.StreamResponse:
        """The Pinterest tag's beacon (`ct.pinterest.com/v3/`)."""
        params = await self._params(request)
        if isinstance(params, Invalid):
            return self._rejected(
                "pinterest_tag", Rejected("schema_violation", params.detail), counted=False
            )
        tag = pinterest_tag.tag_id(params)
        owner = None if tag is None else self.collector.registry.owner("tag", tag)
        return await self._collect(
            "pinterest_tag", request, params, owner, pinterest_tag.beacon_event
        )

    async def meta(self, request: web.Request) -> web.StreamResponse:
        """The Meta pixel's beacon (`www.facebook.com/tr`)."""
        params = await self._params(request)
        if isinstance(params, Invalid):
            return self._rejected(
                "meta_pixel", Rejected("schema_violation", params.detail), counted=False
            )
        pixel = meta_pixel.pixel_id(params)
        owner = None if pixel is None else self.collector.registry.owner("pixel", pixel)
        return await self._collect("meta_pixel", request, params, owner, meta_pixel.beacon_event)

    async def native(self, request: web.Request) -> web.StreamResponse:
        """The platform's own pixel (`/v1/tag`)."""
        collector = self.collector
        params = {key: request.query[key] for key in request.query}
        event = native.beacon_event(
            params,
            request.headers,
            request.cookies,
            remote=request.remote,
            now=collector.clock(),
            new_event_id=lambda: uuid.uuid4().hex,
            optout_cookie=collector.settings.collector_optout_cookie,
        )
        if isinstance(event, Invalid):
            return self._rejected("tag", Rejected("schema_violation", event.detail), counted=False)
        advertiser = event.get("advertiser_id")
        if isinstance(advertiser, str) and advertiser not in collector.registry.advertisers:
            return self._unregistered("tag")
        return await self._write("tag", event)

    def unavailable(self) -> web.StreamResponse:
        """503 with the GIF: nothing was written; the browser may retry."""
        return gif(503, {"Retry-After": str(self.collector.retry_after)})

    async def _collect(
        self,
        dialect: Dialect,
        request: web.Request,
        params: dict[str, str],
        owner: str | None,
        beacon: Beacon,
    ) -> web.StreamResponse:
        if owner is None:
            return self._unregistered(dialect)
        collector = self.collector
        event = beacon(
            params,
            request.headers,
            request.cookies,
            advertiser_id=owner,
            remote=request.remote,
            now=collector.clock(),
            new_event_id=lambda: uuid.uuid4().hex,
            optout_cookie=collector.settings.collector_optout_cookie,
        )
        if isinstance(event, Invalid):
            return self._rejected(
                dialect, Rejected("schema_violation", event.detail), counted=False
            )
        return await self._write(dialect, event)

    async def _write(self, dialect: Dialect, event: dict[str, Any]) -> web.StreamResponse:
        collector = self.collector
        prepared = collector.prepare(dialect, "tag", event, None)
        if isinstance(prepared, Rejected):
            return self._rejected(dialect, prepared, counted=True)
        if not collector.available or not await collector.deliver(dialect, [prepared]):
            collector.count(dialect, "unavailable")
            return self.unavailable()
        collector.count(dialect, "ok")
        return gif()

    def _rejected(
        self, dialect: Dialect, rejected: Rejected, *, counted: bool
    ) -> web.StreamResponse:
        if not counted:
            self.collector.rejected(dialect, rejected)
        self.collector.count(dialect, "bad_request")
        return gif(400, {"X-Rejected": f"{rejected.reason}; {rejected.detail}"})

    def _unregistered(self, dialect: Dialect) -> web.StreamResponse:
        self.collector.metrics.unregistered_beacons.labels(dialect).inc()
        self.collector.count(dialect, "unregistered")
        return gif()

    async def _params(self, request: web.Request) -> dict[str, str] | Invalid:
        """Query parameters, and for a POST the form or JSON body's (JSON values as text);
        a body that cannot be read rejects the beacon rather than being read in part."""
        params = {key: request.query[key] for key in request.query}
        if request.method != "POST":
            return params
        body = await self.collector.read_body(request)
        if body is None:
            return Invalid("body: oversized")
        if not body.strip():
            return params
        if body.lstrip()[:1] == b"{":
            try:
                document = codec.loads(body)
            except codec.DecodeError:
                return Invalid("body: json_invalid")
            if not isinstance(document, dict):
                return Invalid("body: not a JSON object")
            for key, value in document.items():
                params[key] = value if isinstance(value, str) else codec.dumps(value).decode()
            return params
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return Invalid("body: invalid_utf8")
        params.update(parse_qsl(text, keep_blank_values=True))
        return params
