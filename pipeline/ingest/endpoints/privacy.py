"""The consent API and the privacy settings page (trusted Bearer tokens).

- `PUT /v1/users/{user_id}/privacy`: `{"personalization", "ads_from_partner_info",
  "partner_sharing"}` (each `true`, `false` or `null`; left out: unchanged) -> the full
  consent record is written to `consent.changes` and the answer, once Kafka acknowledged
  it, is `schemas.privacy.PrivacySaved` (append time, partition, offset);
- `GET /v1/users/{user_id}/privacy`: `schemas.privacy.PrivacySettings`, what the consent
  table of the worker owning the person's partition holds, region defaults applied;
- `GET /v1/users/{user_id}/privacy/decisions?since=<unix ms>[&cursor=<offset>]`: the
  person's decisions from the audit stream (`schemas.privacy.DecisionFeed`);
- `GET /account/privacy`: the settings page (HTML, no external assets), for
  `#user=<user_id>&token=<token>`, when `PIPELINE_COLLECTOR_PRIVACY_PAGE` is on (the demo
  and the tests): it holds a trusted token in the browser, so it is no page for the public.

Only trusted tokens may call the API (it reads and writes any person's consent): no or
an unknown token is 401, an advertiser's ordinary token 403. Bad input is 400 (not JSON,
unknown fields, wrong types, no setting), a setting turned on that the person's region or
age does not offer 422, an unknown user 404, a deleted account 410; nothing is written
then. Kafka or the workers unavailable: 503 with `Retry-After`. Errors are
`{"error": message}` and name fields and error types, never values.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Final, Literal, TypeAlias

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram
from pydantic import ValidationError

from pipeline.ingest.collector import NO_STORE, Collector, bearer, dumps
from pipeline.ingest.metrics import REQUEST_BUCKETS
from pipeline.ingest.privacy import Outcome, PrivacyService, Refusal
from pipeline.ingest.ratelimit import retry_after
from pipeline.ingest.registry import Credential
from schemas import codec
from schemas.privacy import PrivacyUpdate

log = logging.getLogger(__name__)

Operation: TypeAlias = Literal["read", "save", "decisions", "page"]
OPERATIONS: Final[tuple[Operation, ...]] = ("read", "save", "decisions", "page")
PAGE_PATH: Final = "/account/privacy"
MAX_USER_ID: Final = 256
_NONCE: Final = "__NONCE__"
PAGE_SECURITY: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}

Handler: TypeAlias = Callable[[web.Request], Awaitable[web.StreamResponse]]


class PrivacyMetrics:
    """The consent API's metrics; labels from closed sets only."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "pipeline_collector_privacy_requests_total",
            "Consent API and settings page requests, by operation and outcome.",
            ["operation", "outcome"],
            registry=registry,
        )
        self.saves = Counter(
            "pipeline_collector_privacy_saves_total",
            "Privacy settings saved: consent records Kafka acknowledged.",
            registry=registry,
        )
        self.rewrites = Counter(
            "pipeline_collector_privacy_rewrites_total",
            "Saved records written again because another change for the person landed "
            "while saving.",
            registry=registry,
        )
        self.seconds = Histogram(
            "pipeline_collector_privacy_request_seconds",
            "Time to answer a consent API request (a save: until Kafka acknowledged it).",
            ["operation"],
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        for operation in OPERATIONS:
            self.seconds.labels(operation)
            self.requests.labels(operation, "ok")
        self.saves.inc(0)
        self.rewrites.inc(0)


def register(app: web.Application, collector: Collector) -> PrivacyEndpoints:
    """Add the consent API and the settings page; close their clients on cleanup."""
    endpoints = PrivacyEndpoints(collector)
    router = app.router
    path = "/v1/users/{user_id}/privacy"
    router.add_get(path, endpoints.guarded("read", endpoints.read))
    router.add_put(path, endpoints.guarded("save", endpoints.save))
    router.add_get(path + "/decisions", endpoints.guarded("decisions", endpoints.decisions))
    if collector.settings.collector_privacy_page:
        router.add_get(PAGE_PATH, endpoints.guarded("page", endpoints.page))

    async def close(_: web.Application) -> None:
        await endpoints.service.close()

    app.on_cleanup.append(close)
    return endpoints


def error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """An error answer of the consent API."""
    return web.json_response(
        {"error": message}, status=status, headers={**NO_STORE, **(headers or {})}, dumps=dumps
    )


class PrivacyEndpoints:
    """The handlers of the consent API and the settings page."""

    def __init__(self, collector: Collector, service: PrivacyService | None = None) -> None:
        self.collector = collector
        self.metrics = PrivacyMetrics(collector.metrics.registry)
        self.service = service or PrivacyService(
            collector.settings, collector.producer, clock=collector.clock
        )
        self._page = (
            resources.files("pipeline.ingest").joinpath("static/privacy.html").read_text("utf-8")
        )

    def guarded(self, operation: Operation, handler: Handler) -> Handler:
        """`handler` timed and counted; a `Refusal` answered as an error, anything
        unexpected as a 503 (never a 500, never a traceback with data in it)."""

        async def run(request: web.Request) -> web.StreamResponse:
            started = time.perf_counter()
            outcome: Outcome = "ok"
            try:
                return await handler(request)
            except Refusal as refusal:
                outcome = refusal.outcome
                headers = {}
                if refusal.retry_after is not None:
                    headers["Retry-After"] = str(refusal.retry_after)
                if refusal.status == 401:
                    headers["WWW-Authenticate"] = 'Bearer realm="consent-pipeline"'
                return error(refusal.status, refusal.message, headers)
            except web.HTTPException:
                raise
            except Exception as exc:
                outcome = "error"
                log.error("unexpected %s answering a consent API %s", type(exc).__name__, operation)
                retry = self.collector.retry_after
                return error(503, "unexpected error; retry later", {"Retry-After": str(retry)})
            finally:
                self.metrics.requests.labels(operation, outcome).inc()
                self.metrics.seconds.labels(operation).observe(time.perf_counter() - started)

        return run

    # -- the API ---------------------------------------------------------------------

    async def read(self, request: web.Request) -> web.StreamResponse:
        """What the pipeline's consent table holds for the person."""
        self._admit(request)
        held = await self.service.held(_user_id(request))
        return web.json_response(
            held.privacy.model_dump(mode="json"), headers=NO_STORE, dumps=dumps
        )

    async def save(self, request: web.Request) -> web.StreamResponse:
        """Save the person's choice; answered once Kafka acknowledged the record."""
        self._admit(request)
        user_id = _user_id(request)
        if not self.collector.available:
            raise Refusal(
                503,
                "Kafka is unavailable; retry later",
                "unavailable",
                retry_after=self.collector.retry_after,
            )
        body = await self.collector.read_body(request)
        if body is None:
            limit = self.collector.settings.collector_max_body_bytes
            raise Refusal(413, f"request body too large: at most {limit} bytes", "too_large")
        update = _update(body)
        saved = await self.service.save(user_id, update)
        self.metrics.saves.inc()
        self.metrics.rewrites.inc(saved.rewrites)
        return web.json_response(saved.model_dump(mode="json"), headers=NO_STORE, dumps=dumps)

    async def decisions(self, request: web.Request) -> web.StreamResponse:
        """The person's decisions since `since` (unix ms), from the audit stream."""
        self._admit(request)
        user_id = _user_id(request)
        since = _query_int(request, "since")
        cursor = _query_int(request, "cursor", required=False)
        body = await self.service.decisions(user_id, since or 0, cursor)
        return web.Response(body=body, content_type="application/json", headers=NO_STORE)

    # -- the page --------------------------------------------------------------------

    async def page(self, request: web.Request) -> web.StreamResponse:
        """The settings page: static; it reads the user and the token from its fragment."""
        nonce = secrets.token_urlsafe(16)
        headers = {
            name: value.format(nonce=nonce) for name, value in PAGE_SECURITY.items()
        } | NO_STORE
        return web.Response(
            text=self._page.replace(_NONCE, nonce),
            content_type="text/html",
            charset="utf-8",
            headers=headers,
        )

    # -- checks ----------------------------------------------------------------------

    def _admit(self, request: web.Request) -> Credential:
        credential = self.collector.authenticate(bearer(request.headers.get("Authorization")))
        if credential is None:
            raise Refusal(
                401, "a valid token is required: Authorization: Bearer <token>", "unauthorized"
            )
        if not credential.trusted:
            raise Refusal(
                403,
                "a trusted token is required: the consent API reads and writes any "
                "person's consent",
                "forbidden",
            )
        wait = self.collector.limiter.acquire(credential.advertiser_id)
        if wait is not None:
            seconds = retry_after(wait)
            raise Refusal(
                429, f"too many requests; retry in {seconds}s", "rate_limited", retry_after=seconds
            )
        return credential


def _user_id(request: web.Request) -> str:
    user_id = request.match_info["user_id"]
    if not user_id or len(user_id) > MAX_USER_ID:
        raise Refusal(400, f"user_id: 1 to {MAX_USER_ID} characters", "bad_request")
    return user_id


def _update(body: bytes) -> PrivacyUpdate:
    try:
        document = codec.loads(body)
    except codec.DecodeError:
        raise Refusal(400, "body is not valid JSON (UTF-8)", "bad_request") from None
    if not isinstance(document, dict):
        raise Refusal(400, "expected a JSON object of settings", "bad_request")
    try:
        update = PrivacyUpdate.model_validate(document)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        detail = "; ".join(
            f"{'.'.join(str(part) for part in e['loc']) or 'body'}: {e['type']}" for e in errors[:5]
        )
        raise Refusal(400, detail, "bad_request") from None
    if not update.model_fields_set:
        raise Refusal(
            400,
            "name at least one of personalization, ads_from_partner_info, partner_sharing",
            "bad_request",
        )
    return update


def _query_int(request: web.Request, name: str, *, required: bool = True) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        if required:
            raise Refusal(400, f"{name} is required", "bad_request")
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19:
        raise Refusal(400, f"{name} must be a non-negative integer", "bad_request")
    return int(raw)
