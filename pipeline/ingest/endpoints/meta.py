"""Meta Conversions API and custom audiences.

- `POST /{api_version}/{pixel_id}/events` (Conversions API);
- `POST|DELETE /{api_version}/{custom_audience_id}/users` (add or remove customer-list
  members: `pipeline.ingest.dialects.meta_audiences`), one `raw.audience` record per
  member; the audience must be one of the advertiser's in the registry.

Answers as Meta documents (`pipeline.ingest.dialects.meta`): 200 `{"events_received",
"messages", "fbtrace_id"}`; Graph error objects otherwise: 400 code 100 for an invalid
call or event (the whole batch is refused, nothing is written), 401 code 190 without a
valid access token, 403 code 200 for a pixel the token's advertiser does not hold, 429
code 4 and 503 code 2 (both transient) with `Retry-After`. A `test_event_code` call is
validated and answered, and writes nothing. The `users` edge answers its counts, or the
same Graph errors.

The body may be JSON, `application/x-www-form-urlencoded` (what the Python Business SDK
sends) or `multipart/form-data` (the documented curl `-F` example); a JSON body sent with
the form content type (`curl -d '{...}'`) is read as JSON.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from urllib.parse import parse_qsl

from aiohttp import BodyPartReader, web
from aiohttp.web_exceptions import HTTPRequestEntityTooLarge

from pipeline.core.parse import Rejected
from pipeline.ingest.client import Prepared
from pipeline.ingest.collector import NO_STORE, Collector, dumps, new_trace_id
from pipeline.ingest.dialects import Invalid
from pipeline.ingest.dialects.members import member_document
from pipeline.ingest.dialects.meta import (
    INVALID_TOKEN,
    PERMISSIONS_ERROR,
    TEMPORARILY_UNAVAILABLE,
    TOO_MANY_CALLS,
    EventsRequest,
    GraphError,
    access_token,
    invalid_parameter,
    map_event,
    read_request,
    response,
)
from pipeline.ingest.dialects.meta_audiences import UsersRequest, read_users
from pipeline.ingest.dialects.meta_audiences import response as users_response
from pipeline.ingest.metrics import Dialect
from pipeline.ingest.registry import Credential, IdKind
from schemas import codec
from schemas.audience import Operation

Params = dict[str, list[str]]

CHALLENGE = 'OAuth "Facebook Platform" "invalid_token" "Invalid OAuth access token"'
UNAUTHORIZED = GraphError(
    401,
    INVALID_TOKEN,
    "Invalid OAuth access token - Cannot parse access token",
    "Invalid access token",
    "Send the access_token the advertiser registry issued (query, form or JSON body).",
)
FORBIDDEN = GraphError(
    403,
    PERMISSIONS_ERROR,
    "(#200) Permissions error",
    "Permissions error",
    "This access token cannot send events for this pixel.",
)
FORBIDDEN_AUDIENCE = GraphError(
    403,
    PERMISSIONS_ERROR,
    "(#200) Permissions error",
    "Permissions error",
    "This access token cannot change this custom audience.",
)


def register(router: web.UrlDispatcher, collector: Collector) -> None:
    """Add the events edge for every Graph API version."""
    endpoints = MetaEndpoints(collector)
    router.add_post(
        r"/{api_version:v[0-9]{1,3}\.[0-9]{1,3}}/{pixel_id}/events",
        collector.guarded("meta", endpoints.post_events, endpoints.unavailable),
    )
    users = r"/{api_version:v[0-9]{1,3}\.[0-9]{1,3}}/{audience_id}/users"
    router.add_post(
        users, collector.guarded("meta_audiences", endpoints.add_users, endpoints.unavailable)
    )
    router.add_delete(
        users, collector.guarded("meta_audiences", endpoints.remove_users, endpoints.unavailable)
    )


def answer_error(error: GraphError, headers: Mapping[str, str] | None = None) -> web.Response:
    """A Graph error answer."""
    return web.json_response(
        error.body(new_trace_id()), status=error.status, headers=headers, dumps=dumps
    )


class MetaEndpoints:
    """The handler of the events edge."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector

    async def post_events(self, request: web.Request) -> web.StreamResponse:
        """Create server events (`/{ads_pixel_id}/events`)."""
        collector = self.collector
        admitted = await self._admit(request, "meta", "pixel", FORBIDDEN)
        if isinstance(admitted, web.StreamResponse):
            return admitted
        query, form, body, credential = admitted
        pixel_id = request.match_info["pixel_id"]
        events = read_request(query, form, body)
        if isinstance(events, GraphError):
            collector.count("meta", "bad_request")
            return answer_error(events)
        prepared = self._prepare(events, pixel_id, credential.advertiser_id)
        if isinstance(prepared, GraphError):
            collector.count("meta", "bad_request")
            return answer_error(prepared)
        records, messages = prepared
        if events.test_event_code is not None:
            collector.tested("meta", len(records))
            collector.count("meta", "test")
            return self._ok(len(records), messages)
        if not collector.available or not await collector.deliver("meta", records):
            collector.count("meta", "unavailable")
            return self.unavailable()
        collector.count("meta", "ok")
        return self._ok(len(records), messages)

    async def add_users(self, request: web.Request) -> web.StreamResponse:
        """Add members to a custom audience (`POST /{custom_audience_id}/users`)."""
        return await self._users(request, "add")

    async def remove_users(self, request: web.Request) -> web.StreamResponse:
        """Remove members from a custom audience (`DELETE /{custom_audience_id}/users`)."""
        return await self._users(request, "remove")

    async def _users(self, request: web.Request, operation: Operation) -> web.StreamResponse:
        collector = self.collector
        admitted = await self._admit(request, "meta_audiences", "audience", FORBIDDEN_AUDIENCE)
        if isinstance(admitted, web.StreamResponse):
            return admitted
        query, form, body, credential = admitted
        audience_id = request.match_info["audience_id"]
        users = read_users(query, form, body, max_rows=collector.settings.collector_max_members)
        if isinstance(users, GraphError):
            collector.count("meta_audiences", "bad_request")
            return answer_error(users)
        records = self._members(users, operation, credential.advertiser_id, audience_id)
        if isinstance(records, GraphError):
            collector.count("meta_audiences", "bad_request")
            return answer_error(records)
        if users.invalid:
            collector.refused("meta_audiences", len(users.invalid))
        if not collector.available or not await collector.deliver("meta_audiences", records):
            collector.count("meta_audiences", "unavailable")
            return self.unavailable()
        collector.count("meta_audiences", "partial" if users.invalid else "ok")
        return web.json_response(users_response(audience_id, users), dumps=dumps)

    def _members(
        self, users: UsersRequest, operation: Operation, advertiser_id: str, audience_id: str
    ) -> list[Prepared] | GraphError:
        uploaded_at = int(self.collector.clock() * 1000)
        records: list[Prepared] = []
        for member in users.members:
            document = member_document(advertiser_id, audience_id, operation, member, uploaded_at)
            prepared = self.collector.prepare_member("meta_audiences", document)
            if isinstance(prepared, Rejected):
                return invalid_parameter(f"payload.data: {prepared.reason}: {prepared.detail}")
            records.append(prepared)
        return records

    async def _admit(
        self, request: web.Request, dialect: Dialect, kind: IdKind, forbidden: GraphError
    ) -> tuple[Params, Params, object, Credential] | web.StreamResponse:
        """The call's query, form, JSON body and credential, or the error to answer: the
        body unreadable (400, 413), no valid token (401), the path's pixel or audience not
        the advertiser's (403), over the rate limit (429)."""
        collector = self.collector
        query: Params = {key: request.query.getall(key) for key in request.query}
        read = await self._read(request)
        if isinstance(read, GraphError):
            collector.count(dialect, "too_large" if read.status == 413 else "bad_request")
            return answer_error(read)
        form, body = read
        token = access_token(query, form, body, request.headers.get("Authorization"))
        credential = collector.authenticate(token)
        if credential is None:
            collector.count(dialect, "unauthorized")
            return answer_error(UNAUTHORIZED, {"WWW-Authenticate": CHALLENGE})
        platform_id = request.match_info["pixel_id" if kind == "pixel" else "audience_id"]
        if collector.registry.owner(kind, platform_id) != credential.advertiser_id:
            collector.count(dialect, "forbidden")
            return answer_error(forbidden)
        wait = collector.throttle(dialect, credential)
        if wait is not None:
            return answer_error(
                GraphError(
                    429,
                    TOO_MANY_CALLS,
                    "(#4) Application request limit reached",
                    "Too many calls",
                    f"Retry in {wait}s.",
                    transient=True,
                ),
                {"Retry-After": str(wait)},
            )
        return query, form, body, credential

    def unavailable(self) -> web.StreamResponse:
        """503: nothing was taken; retry later."""
        retry = self.collector.retry_after
        return answer_error(
            GraphError(
                503,
                TEMPORARILY_UNAVAILABLE,
                "An unexpected error has occurred. Please retry your request later.",
                "Temporarily unavailable",
                f"Retry in {retry}s.",
                transient=True,
            ),
            {"Retry-After": str(retry), **NO_STORE},
        )

    def _ok(self, events_received: int, messages: Sequence[str]) -> web.Response:
        return web.json_response(response(events_received, messages, new_trace_id()), dumps=dumps)

    def _prepare(
        self, request: EventsRequest, pixel_id: str, advertiser_id: str
    ) -> tuple[list[Prepared], list[str]] | GraphError:
        """Every event, or the first reason the batch is refused ("we reject the entire batch")."""
        collector = self.collector
        records: list[Prepared] = []
        messages: list[str] = []
        for index, raw in enumerate(request.events):
            mapped = map_event(raw, index, pixel_id, advertiser_id)
            if isinstance(mapped, Invalid):
                collector.refused("meta", len(request.events))
                return invalid_parameter(mapped.detail)
            prepared = collector.prepare("meta", mapped.source, mapped.event, None)
            if isinstance(prepared, Rejected):
                collector.refused("meta", len(request.events) - 1)
                return invalid_parameter(f"data[{index}]: {prepared.reason}: {prepared.detail}")
            records.append(prepared)
            messages.extend(mapped.warnings)
        return records, messages

    async def _read(self, request: web.Request) -> tuple[Params, object] | GraphError:
        """The form fields and the JSON body (None when the body is not JSON)."""
        limit = self.collector.settings.collector_max_body_bytes
        too_large = GraphError(
            413,
            100,
            f"(#100) the request body exceeds {limit} bytes",
            "Request too large",
            f"Send at most {limit} bytes per call.",
        )
        if request.content_type == "multipart/form-data":
            return await self._multipart(request, too_large)
        body = await self.collector.read_body(request)
        if body is None:
            return too_large
        if not body.strip():
            return {}, None
        if request.content_type == "application/json" or body.lstrip()[:1] in (b"{", b"["):
            try:
                return {}, codec.loads(body)
            except codec.DecodeError:
                return invalid_parameter("the body is not valid JSON")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return invalid_parameter("the form body is not UTF-8")
        form: Params = {}
        for key, value in parse_qsl(text, keep_blank_values=True):
            form.setdefault(key, []).append(value)
        return form, None

    async def _multipart(
        self, request: web.Request, too_large: GraphError
    ) -> tuple[Params, object] | GraphError:
        limit = self.collector.settings.collector_max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return too_large
        form: Params = {}
        size = 0
        try:
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader):
                    return invalid_parameter("nested multipart bodies are not supported")
                chunks: list[bytes] = []
                while chunk := await part.read_chunk():
                    size += len(chunk)
                    if size > limit:
                        return too_large
                    chunks.append(chunk)
                if part.name:
                    form.setdefault(part.name, []).append(b"".join(chunks).decode("utf-8"))
        except HTTPRequestEntityTooLarge:
            return too_large
        except (ValueError, UnicodeDecodeError, AssertionError):
            return invalid_parameter("the multipart body is malformed")
        return form, None
