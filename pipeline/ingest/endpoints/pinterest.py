"""Pinterest API v5: conversions and customer lists.

- `POST /v5/ad_accounts/{ad_account_id}/events` (Conversions API);
- `PATCH|GET /v5/ad_accounts/{ad_account_id}/customer_lists/{customer_list_id}` (customer
  lists: `pipeline.ingest.dialects.pinterest_lists`), one `raw.audience` record per
  member; the list must be one of the advertiser's audiences in the registry.

Answers as Pinterest's v5 OpenAPI description documents (`pipeline.ingest.dialects.
pinterest`): 200 `ConversionApiResponse`; 400 `Error` for a body outside the schema; 401
`{"code": 2, "message": "Authentication failed."}` without a valid Bearer token; 403
`{"code": 29, ...}` for an ad account the token's advertiser does not hold; 422
`DetailedError` when an event failed; 429 `{"code": 8, ...}` with `Retry-After`; 503
`{"code": 4197, ...}` with `Retry-After` while Kafka is away. `?test=true` answers the
same without writing. The list calls answer a `CustomerList` with the same errors.
"""

from __future__ import annotations

from aiohttp import web

from pipeline.core.parse import Rejected
from pipeline.ingest.client import Prepared
from pipeline.ingest.collector import NO_STORE, Collector, bearer, dumps
from pipeline.ingest.dialects import Invalid
from pipeline.ingest.dialects.members import member_document
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
from pipeline.ingest.dialects.pinterest_lists import ListUpdate, customer_list, read_update
from pipeline.ingest.metrics import Dialect
from pipeline.ingest.registry import Credential

RATE_LIMIT_MESSAGE = (
    "This request exceeded a rate limit. This can happen if the client exceeds one\n"
    "of the published rate limits within a short time window."
)


def register(router: web.UrlDispatcher, collector: Collector) -> None:
    """Add the v5 events and customer-list paths."""
    endpoints = PinterestEndpoints(collector)
    router.add_post(
        "/v5/ad_accounts/{ad_account_id}/events",
        collector.guarded("pinterest", endpoints.post_events, endpoints.unavailable),
    )
    lists = "/v5/ad_accounts/{ad_account_id}/customer_lists/{customer_list_id}"
    router.add_patch(
        lists, collector.guarded("pinterest_lists", endpoints.patch_list, endpoints.unavailable)
    )
    router.add_get(
        lists, collector.guarded("pinterest_lists", endpoints.get_list, endpoints.unavailable)
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
        credential = self._admit(request, "pinterest")
        if isinstance(credential, web.StreamResponse):
            return credential
        test = is_test(request.query.get("test"))
        if isinstance(test, Invalid):
            collector.count("pinterest", "bad_request")
            return answer(400, error(INVALID_REQUEST, f"Invalid request: {test.detail}"))
        if not test and not collector.available:
            collector.count("pinterest", "unavailable")
            return self.unavailable()
        body = await collector.read_body(request)
        if body is None:
            return self._too_large("pinterest")
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

    async def patch_list(self, request: web.Request) -> web.StreamResponse:
        """Append or remove records to/from a customer list (`customer_lists/update`)."""
        collector = self.collector
        credential = self._admit(request, "pinterest_lists", list_id=True)
        if isinstance(credential, web.StreamResponse):
            return credential
        if not collector.available:
            collector.count("pinterest_lists", "unavailable")
            return self.unavailable()
        body = await collector.read_body(request)
        if body is None:
            return self._too_large("pinterest_lists")
        update = read_update(body, max_records=collector.settings.collector_max_members)
        if isinstance(update, Invalid):
            collector.count("pinterest_lists", "bad_request")
            return answer(400, error(INVALID_REQUEST, update.detail))
        list_id = request.match_info["customer_list_id"]
        now = collector.clock()
        records = self._members(update, credential.advertiser_id, list_id, int(now * 1000))
        if isinstance(records, Rejected):
            collector.count("pinterest_lists", "bad_request")
            detail = f"Invalid request: records: {records.reason}: {records.detail}"
            return answer(400, error(INVALID_REQUEST, detail))
        skipped = update.records - len(records)
        if skipped:
            collector.refused("pinterest_lists", skipped)
        if not await collector.deliver("pinterest_lists", records):
            collector.count("pinterest_lists", "unavailable")
            return self.unavailable()
        collector.count("pinterest_lists", "partial" if skipped else "ok")
        account = request.match_info["ad_account_id"]
        return answer(
            200,
            customer_list(
                list_id, account, status="PROCESSING", updated_time=int(now), update=update
            ),
        )

    async def get_list(self, request: web.Request) -> web.StreamResponse:
        """A customer list (`customer_lists/get`), as the SDK reads it around each update."""
        credential = self._admit(request, "pinterest_lists", list_id=True)
        if isinstance(credential, web.StreamResponse):
            return credential
        self.collector.count("pinterest_lists", "ok")
        list_id = request.match_info["customer_list_id"]
        account = request.match_info["ad_account_id"]
        return answer(200, customer_list(list_id, account, status="READY"))

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

    def _admit(
        self, request: web.Request, dialect: Dialect, *, list_id: bool = False
    ) -> Credential | web.StreamResponse:
        """The caller's credential, or the 401, 403 or 429 to answer instead."""
        collector = self.collector
        credential = collector.authenticate(bearer(request.headers.get("Authorization")))
        if credential is None:
            collector.count(dialect, "unauthorized")
            return answer(
                401,
                error(AUTHENTICATION_FAILED, "Authentication failed."),
                {"WWW-Authenticate": 'Bearer realm="Pinterest API"'},
            )
        owner = collector.registry.owner
        advertiser = credential.advertiser_id
        account = request.match_info["ad_account_id"]
        if owner("ad_account", account) != advertiser or (
            list_id and owner("audience", request.match_info["customer_list_id"]) != advertiser
        ):
            collector.count(dialect, "forbidden")
            return answer(
                403, error(NOT_PERMITTED, "You are not permitted to access that resource.")
            )
        wait = collector.throttle(dialect, credential)
        if wait is not None:
            return answer(429, error(RATE_LIMITED, RATE_LIMIT_MESSAGE), {"Retry-After": str(wait)})
        return credential

    def _too_large(self, dialect: Dialect) -> web.StreamResponse:
        self.collector.count(dialect, "too_large")
        limit = self.collector.settings.collector_max_body_bytes
        return answer(
            413, error(INVALID_REQUEST, f"Invalid request: the body exceeds {limit} bytes")
        )

    def _members(
        self, update: ListUpdate, advertiser_id: str, list_id: str, uploaded_at: int
    ) -> list[Prepared] | Rejected:
        records: list[Prepared] = []
        for member in update.members:
            document = member_document(
                advertiser_id, list_id, update.operation, member, uploaded_at
            )
            prepared = self.collector.prepare_member("pinterest_lists", document)
            if isinstance(prepared, Rejected):
                return prepared
            records.append(prepared)
        return records

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
