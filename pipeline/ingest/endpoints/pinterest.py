"""Pinterest Conversions API v5: `POST /v5/ad_accounts/{ad_account_id}/events`.

Answers as Pinterest's v5 OpenAPI description documents (`pipeline.ingest.dialects.
pinterest`): 200 `ConversionApiResponse`; 400 `Error` for a body outside the schema; 401
`{"code": 2, "message": "Authentication failed."}` without a valid Bearer token; 403
`{"code": 29, ...}` for an ad account the token's advertiser does not hold; 422
`DetailedError` when an event failed; 429 `{"code": 8, ...}` with `Retry-After`; 503
`{"code": 4197, ...}` with `Retry-After` while Kafka is away. `?test=true` answers the
same without writing.
"""

from __future__ import annotations

from aiohttp import web

from pipeline.core.parse import Rejected
from pipeline.ingest.client import Prepared
from pipeline.ingest.collector import NO_STORE, Collector, bearer, dumps
from pipeline.ingest.dialects import Invalid
from pipeline.ingest.dialects.pinterest import (
    AUTHENTICATION_FAILED,
    INVALID_REQUEST,
    NOT_PERMITTED,
    RATE_LIMITED,
    UNAVAILABLE,
    Batch,
    EventResult,
    error,
    is_test,
    map_event,
    read_batch,
    response,
)

RATE_LIMIT_MESSAGE = (
    "This request exceeded a rate limit. This can happen if the client exceeds one\n"
    "of the published rate limits within a short time window."
)


def register(router: web.UrlDispatcher, collector: Collector) -> None:
    """Add the v5 events path."""
    endpoints = PinterestEndpoints(collector)
    router.add_post(
        "/v5/ad_accounts/{ad_account_id}/events",
        collector.guarded("pinterest", endpoints.post_events, endpoints.unavailable),
    )


def answer(status: int, body: object, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON answer of the Pinterest API."""
    return web.json_response(body, status=status, headers=headers, dumps=dumps)


class PinterestEndpoints:
    """The handler of the v5 events path."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector

    async def post_events(self, request: web.Request) -> web.StreamResponse:
        """Send conversions (`events/create`)."""
        collector = self.collector
        credential = collector.authenticate(bearer(request.headers.get("Authorization")))
        if credential is None:
            collector.count("pinterest", "unauthorized")
            return answer(
                401,
                error(AUTHENTICATION_FAILED, "Authentication failed."),
                {"WWW-Authenticate": 'Bearer realm="Pinterest API"'},
            )
        account = request.match_info["ad_account_id"]
        if collector.registry.owner("ad_account", account) != credential.advertiser_id:
            collector.count("pinterest", "forbidden")
            return answer(
                403, error(NOT_PERMITTED, "You are not permitted to access that resource.")
            )
        wait = collector.throttle("pinterest", credential)
        if wait is not None:
            return answer(429, error(RATE_LIMITED, RATE_LIMIT_MESSAGE), {"Retry-After": str(wait)})
        test = is_test(request.query.get("test"))
        if isinstance(test, Invalid):
            collector.count("pinterest", "bad_request")
            return answer(400, error(INVALID_REQUEST, f"Invalid request: {test.detail}"))
        if not test and not collector.available:
            collector.count("pinterest", "unavailable")
            return self.unavailable()
        body = await collector.read_body(request)
        if body is None:
            collector.count("pinterest", "too_large")
            limit = collector.settings.collector_max_body_bytes
            return answer(
                413, error(INVALID_REQUEST, f"Invalid request: the body exceeds {limit} bytes")
            )
        batch = read_batch(body)
        if isinstance(batch, Invalid):
            collector.count("pinterest", "bad_request")
            return answer(400, error(INVALID_REQUEST, batch.detail))
        results, records = self._prepare(batch, credential.advertiser_id)
        if test:
            collector.tested("pinterest", len(records))
            status, reply = response(results)
            collector.count("pinterest", "test")
            return answer(status, reply)
        if not await collector.deliver("pinterest", records):
            collector.count("pinterest", "unavailable")
            return self.unavailable()
        status, reply = response(results)
        collector.count("pinterest", "ok" if status == 200 else "partial")
        return answer(status, reply)

    def unavailable(self) -> web.StreamResponse:
        """503: the events were not taken; retry later."""
        retry = self.collector.retry_after
        return answer(
            503,
            error(
                UNAVAILABLE, f"The endpoint is not accepting traffic right now; retry in {retry}s."
            ),
            {"Retry-After": str(retry), **NO_STORE},
        )

    def _prepare(
        self, batch: Batch, advertiser_id: str
    ) -> tuple[list[EventResult], list[Prepared]]:
        collector = self.collector
        results: list[EventResult] = []
        records: list[Prepared] = []
        for event in batch.events:
            mapped = map_event(event, advertiser_id)
            if isinstance(mapped, Invalid):
                collector.refused("pinterest")
                results.append(EventResult("failed", error_message=mapped.detail))
                continue
            prepared = collector.prepare("pinterest", mapped.source, mapped.event, None)
            if isinstance(prepared, Rejected):
                results.append(
                    EventResult("failed", error_message=f"{prepared.reason}: {prepared.detail}")
                )
                continue
            records.append(prepared)
            results.append(EventResult("processed", warning_message="; ".join(mapped.warnings)))
        return results, records
