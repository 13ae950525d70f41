"""The HTTP collector (aiohttp): every ingest dialect, one connection to Kafka.

Endpoints (`pipeline.ingest.endpoints`, mappings in `pipeline.ingest.dialects`):

- Pinterest Conversions API v5: `POST /v5/ad_accounts/{ad_account_id}/events`;
- Meta Conversions API: `POST /{api_version}/{pixel_id}/events`;
- customer lists: Pinterest `GET|PATCH /v5/ad_accounts/{ad_account_id}/customer_lists/
  {customer_list_id}` and Meta `POST|DELETE /{api_version}/{audience_id}/users`, one
  `raw.audience` record per member;
- the Pinterest tag's beacon `GET|POST /v3/`, the Meta pixel's `GET|POST /tr`, and the
  native `GET /v1/tag`: always a 1x1 GIF;
- native `POST /v1/events` and `POST /v1/widget` (Bearer token);
- the consent API, `GET|PUT /v1/users/{user_id}/privacy` (trusted tokens), and the privacy
  settings page `GET /account/privacy` (`pipeline.ingest.endpoints.privacy`);
- `GET /healthz`, `GET /ready` (503 while Kafka is away), `GET /metrics` (Prometheus).

Every API call carries an advertiser's token, checked against the registry
(`PIPELINE_ADVERTISERS_FILE`, re-read when it changes); no or an unknown token is 401,
another advertiser's id 403, too many calls 429 with `Retry-After`, all in the dialect's
own error shape. A beacon for an unregistered tag, pixel or advertiser gets its GIF, is
counted, and is not written.

Every event an answer calls accepted was acknowledged by Kafka (`acks=all`) first; when
Kafka is unreachable or too slow the answer is 503 with `Retry-After`, never a silent
drop, and an unexpected error is answered 503 too, never 500. A record that names a
`user_id` (trusted tokens only) carries the `pipeline-trust` signature. Errors name fields
and error types, never values; the access log has the method, path and status only (no
query string, which can hold a token, and no client address).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Final

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_exceptions import HTTPRequestEntityTooLarge
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from pipeline.core.parse import Rejected
from pipeline.errors import ConfigError, KafkaUnavailable
from pipeline.ingest.client import EventProducer, Prepared, prepare_member
from pipeline.ingest.errors import RegistryError
from pipeline.ingest.metrics import CollectorMetrics, Dialect
from pipeline.ingest.ratelimit import RateLimiter, retry_after
from pipeline.ingest.registry import Credential, Registry, load_registry, registry_stamp
from pipeline.settings import Settings
from schemas import codec
from schemas.events import Source

log = logging.getLogger(__name__)

PIXEL: Final = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
"""A 1x1 transparent GIF."""
NO_STORE: Final = {"Cache-Control": "no-store"}
PEERS_EVERY_S: Final = 10.0
"""How often the collector looks up its replicas (PIPELINE_COLLECTOR_PEERS)."""
UNREACHABLE_LOG_EVERY_S: Final = 60.0
"""While Kafka cannot be reached, the collector says so once a minute, not every retry."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class AccessLogger(AbstractAccessLogger):
    """Method, path, status and time: no query string (it can hold ids), no client address."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            "%s %s %s %.1fms", request.method, logged_path(request), response.status, time * 1000
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


def logged_path(request: web.BaseRequest) -> str:
    """The request's path, a person's user id replaced by its route's `{user_id}`."""
    match_info = getattr(request, "match_info", None)
    if match_info is not None and "user_id" in match_info:
        resource = match_info.route.resource
        return "-" if resource is None else resource.canonical
    return request.path


def bearer(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def dumps(obj: Any) -> str:
    """JSON for `web.json_response`, through the project's codec."""
    return codec.dumps(obj).decode()


def gif(status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """The 1x1 GIF every beacon gets, whatever became of it."""
    return web.Response(
        status=status, body=PIXEL, content_type="image/gif", headers={**NO_STORE, **(headers or {})}
    )


def new_trace_id() -> str:
    """An opaque id for an answer (Meta's `fbtrace_id`)."""
    return "A" + secrets.token_urlsafe(15)


def require_registry(settings: Settings) -> Registry:
    """The registry the settings name, checked against the trust key.

    Raises:
        ConfigError: PIPELINE_ADVERTISERS_FILE is unset or invalid, or it holds a trusted
            token while PIPELINE_TRUST_KEY is unset.
    """
    if settings.advertisers_file is None:
        raise ConfigError(
            "PIPELINE_ADVERTISERS_FILE is required: the collector authenticates every call "
            "against the advertiser registry (create it with `consent-pipeline advertisers add`)"
        )
    registry = load_registry(settings.advertisers_file)
    check_trust(registry, settings)
    return registry


def check_trust(registry: Registry, settings: Settings) -> None:
    """A trusted token needs the trust key that signs the records it sends.

    Raises:
        ConfigError: trusted tokens but no PIPELINE_TRUST_KEY.
    """
    if registry.has_trusted_tokens and settings.trust_key is None:
        raise ConfigError(
            "PIPELINE_TRUST_KEY is required: the advertiser registry holds trusted tokens, "
            "whose records naming a user_id the collector must sign"
        )


class Collector:
    """The collector's shared machinery: registry, limits, metrics, Kafka; and its app."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        *,
        producer: EventProducer | None = None,
        clock: Callable[[], float] = time.time,
        metrics: CollectorMetrics | None = None,
    ) -> None:
        check_trust(registry, settings)
        self.settings = settings
        self.registry = registry
        self.metrics = metrics or CollectorMetrics(CollectorRegistry())
        self.metrics.advertisers.set(len(registry.advertisers))
        self.producer = producer or EventProducer(
            settings,
            client_id="consent-pipeline-collector",
            request_timeout_ms=int(settings.collector_delivery_timeout_seconds * 1000),
            clock=clock,
        )
        self.clock = clock
        self.limiter = RateLimiter(
            settings.collector_rate_limit_per_second, settings.collector_rate_limit_burst, clock
        )
        self._trust_key = (
            None if settings.trust_key is None else settings.trust_key.get_secret_value().encode()
        )
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle -----------------------------------------------------------------

    def app(self) -> web.Application:
        """The aiohttp application; starting it connects to Kafka in the background."""
        from pipeline.ingest.endpoints import meta, native, pinterest, pixels

        app = web.Application(client_max_size=self.settings.collector_max_body_bytes)
        for endpoints in (native, pinterest, meta, pixels):
            endpoints.register(app.router, self)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/ready", self.ready)
        app.router.add_get("/metrics", self.metrics_page)
        app.on_startup.append(self._on_startup)
        app.on_cleanup.append(self._on_cleanup)
        from pipeline.ingest.endpoints import privacy

        privacy.register(app, self)
        return app

    async def _on_startup(self, _: web.Application) -> None:
        with contextlib.suppress(KafkaUnavailable):
            await self.producer.start()  # at once when Kafka is up; else in the background
        self._set_available()
        if not self.producer.started:
            self._tasks.append(asyncio.create_task(self._connect()))
        path = self.settings.advertisers_file
        if path is not None:
            self._tasks.append(asyncio.create_task(self._watch_registry(path)))
        if self.settings.collector_peers is not None:
            await self._count_peers(self.settings.collector_peers)
            self._tasks.append(
                asyncio.create_task(self._watch_peers(self.settings.collector_peers))
            )

    async def _on_cleanup(self, _: web.Application) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.producer.stop()
        self._set_available()

    async def _connect(self) -> None:
        retry = self.settings.collector_retry_after_seconds
        said = -UNREACHABLE_LOG_EVERY_S
        while not self.producer.started:
            if time.monotonic() - said >= UNREACHABLE_LOG_EVERY_S:
                said = time.monotonic()
                log.warning(
                    "cannot reach Kafka at %s (KAFKA_BOOTSTRAP_SERVERS); retrying every %ss, "
                    "answering 503 meanwhile",
                    self.settings.kafka_bootstrap_servers,
                    retry,
                )
            await asyncio.sleep(retry)
            with contextlib.suppress(KafkaUnavailable):
                await self.producer.start()
        self._set_available()
        log.info("connected to Kafka at %s", self.settings.kafka_bootstrap_servers)

    async def _watch_peers(self, name: str) -> None:
        """Look up the collector replicas every `PEERS_EVERY_S`: the rate limit's share."""
        while True:
            await asyncio.sleep(PEERS_EVERY_S)
            await self._count_peers(name)

    async def _count_peers(self, name: str) -> None:
        """Share the rate limit among the addresses `name` resolves to (this replica
        counts, found or not); a failed lookup keeps the last share."""
        try:
            found = await asyncio.get_running_loop().getaddrinfo(
                name, None, type=socket.SOCK_STREAM
            )
        except OSError as exc:
            log.warning(
                "cannot look up PIPELINE_COLLECTOR_PEERS (%s); the rate limit stays shared "
                "by %d replicas",
                type(exc).__name__,
                self.limiter.replicas,
            )
            return
        replicas = max(1, len({address[4][0] for address in found}))
        if replicas != self.limiter.replicas:
            log.info("the rate limit is shared by %d collector replicas", replicas)
        self.limiter.share(replicas)
        self.metrics.replicas.set(replicas)

    async def _watch_registry(self, path: Path) -> None:
        """Re-read the registry when its file changes; a bad file keeps the old one."""
        stamp = registry_stamp(path)
        while True:
            await asyncio.sleep(self.settings.collector_registry_reload_seconds)
            current = registry_stamp(path)
            if current == stamp:
                continue
            stamp = current
            try:
                registry = load_registry(path)
                check_trust(registry, self.settings)
            except (RegistryError, ConfigError) as exc:
                self.metrics.registry_reloads.labels("failed").inc()
                log.error("kept the previous advertiser registry: %s", exc)
                continue
            self.replace_registry(registry)
            self.metrics.registry_reloads.labels("ok").inc()
            log.info("reloaded the advertiser registry (%d advertisers)", len(registry.advertisers))

    def replace_registry(self, registry: Registry) -> None:
        """Use `registry` from now on."""
        self.registry = registry
        self.limiter.forget(set(registry.advertisers))
        self.metrics.advertisers.set(len(registry.advertisers))

    @property
    def available(self) -> bool:
        """Whether events can be handed to Kafka now."""
        return self.producer.started

    def _set_available(self) -> None:
        self.metrics.kafka_available.set(1 if self.available else 0)

    # -- what every endpoint uses --------------------------------------------------

    def guarded(
        self, dialect: Dialect, handler: Handler, failure: Callable[[], web.StreamResponse]
    ) -> Handler:
        """`handler` timed, and answered by `failure` (a 503 in the dialect's shape) if it
        raises: a bug never becomes a 500 or a traceback with data in it."""

        async def run(request: web.Request) -> web.StreamResponse:
            started = time.perf_counter()
            try:
                return await handler(request)
            except web.HTTPException:
                raise
            except Exception as exc:
                log.error("unexpected %s answering a %s request", type(exc).__name__, dialect)
                self.metrics.requests.labels(dialect, "error").inc()
                return failure()
            finally:
                self.metrics.request_seconds.labels(dialect).observe(time.perf_counter() - started)

        return run

    def count(self, dialect: Dialect, outcome: str) -> None:
        """Count one request's outcome."""
        self.metrics.requests.labels(dialect, outcome).inc()

    def authenticate(self, token: str | None) -> Credential | None:
        """Whose token this is, if anyone's."""
        return self.registry.authenticate(token)

    def throttle(self, dialect: Dialect, credential: Credential) -> int | None:
        """None when the advertiser may call now, else the `Retry-After` seconds."""
        wait = self.limiter.acquire(credential.advertiser_id)
        if wait is None:
            return None
        self.metrics.rate_limited.labels(dialect).inc()
        self.count(dialect, "rate_limited")
        return retry_after(wait)

    async def read_body(self, request: web.Request) -> bytes | None:
        """The request body, or None when it is larger than `collector_max_body_bytes`."""
        limit = self.settings.collector_max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return None
        try:
            return await request.read()
        except HTTPRequestEntityTooLarge:
            return None

    def prepare(
        self, dialect: Dialect, source: Source, event: object, credential: Credential | None
    ) -> Prepared | Rejected:
        """Validate and normalize a record as ingest will; sign it when it names a user
        and came with a trusted token."""
        prepared = self.producer.prepare(source, event)
        if isinstance(prepared, Rejected):
            return self.rejected(dialect, prepared)
        if prepared.user_id is None:
            return prepared
        if credential is None or not credential.trusted:
            return self.rejected(
                dialect, Rejected("schema_violation", "user_id: requires a trusted token")
            )
        if self._trust_key is None:
            return self.rejected(
                dialect, Rejected("schema_violation", "user_id: no trust key configured")
            )
        return prepared.signed(self._trust_key)

    def prepare_member(self, dialect: Dialect, member: object) -> Prepared | Rejected:
        """Validate a customer-list member's `raw.audience` record as ingest will."""
        prepared = prepare_member(member, limits=self.producer.limits)
        if isinstance(prepared, Rejected):
            return self.rejected(dialect, prepared)
        return prepared

    def rejected(self, dialect: Dialect, rejected: Rejected) -> Rejected:
        """Count a rejected event, by reason."""
        self.metrics.events.labels(dialect, "rejected").inc()
        self.metrics.rejects.labels(dialect, rejected.reason).inc()
        return rejected

    def refused(self, dialect: Dialect, count: int = 1) -> None:
        """Count events the platform's own rules refused before validation."""
        self.metrics.events.labels(dialect, "rejected").inc(count)
        self.metrics.rejects.labels(dialect, "dialect").inc(count)

    async def deliver(self, dialect: Dialect, records: Sequence[Prepared]) -> bool:
        """Hand `records` to Kafka; True only when Kafka acknowledged every one in time."""
        if not records:
            return True
        try:
            outcomes = await self.producer.deliver(
                records, self.settings.collector_delivery_timeout_seconds
            )
        except KafkaUnavailable as exc:
            log.warning("could not hand events to Kafka (%s)", exc)
            self._set_available()
            return False
        failed = [o.error for o in outcomes if o is not None]
        if failed:
            log.warning("Kafka did not acknowledge %d of %d records", len(failed), len(records))
            return False
        self.metrics.events.labels(dialect, "accepted").inc(len(records))
        return True

    def tested(self, dialect: Dialect, count: int) -> None:
        """Count events a test-mode call validated and did not write."""
        self.metrics.events.labels(dialect, "test").inc(count)

    @property
    def retry_after(self) -> int:
        """`Retry-After` of a 503."""
        return self.settings.collector_retry_after_seconds

    # -- health and metrics --------------------------------------------------------

    async def healthz(self, _: web.Request) -> web.StreamResponse:
        """Liveness: the process answers; says whether Kafka is connected."""
        kafka = "connected" if self.available else "unavailable"
        body = {"status": "ok", "kafka": kafka, "advertisers": len(self.registry.advertisers)}
        return web.json_response(body, dumps=dumps)

    async def ready(self, _: web.Request) -> web.StreamResponse:
        """Readiness: 200 when events can be delivered, else 503."""
        if self.available:
            return web.json_response({"ready": True}, dumps=dumps)
        return web.json_response(
            {"error": "Kafka is unavailable; retry later", "retry_after": self.retry_after},
            status=503,
            headers={"Retry-After": str(self.retry_after), **NO_STORE},
            dumps=dumps,
        )

    async def metrics_page(self, _: web.Request) -> web.StreamResponse:
        """The Prometheus exposition of the collector's metrics."""
        self._set_available()
        body = generate_latest(self.metrics.registry)
        response = web.Response(body=body)
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response


async def serve(settings: Settings, stop: asyncio.Event) -> Collector:
    """Run the collector on `collector_host:collector_port` until `stop` is set.

    Raises:
        ConfigError: the registry settings are missing or invalid.
    """
    collector = Collector(settings, require_registry(settings))
    runner = web.AppRunner(collector.app(), access_log_class=AccessLogger)
    await runner.setup()
    site = web.TCPSite(runner, settings.collector_host, settings.collector_port)
    try:
        await site.start()
        log.info(
            "collector listening on http://%s:%d (%d advertisers)",
            settings.collector_host,
            settings.collector_port,
            len(collector.registry.advertisers),
        )
        await stop.wait()
    finally:
        await runner.cleanup()
    return collector
