"""`make run`: a worker, the collector, synthetic traffic and a live view, until Ctrl-C.

The demo writes a development advertiser registry (`.local/demo-advertisers.yaml`: one
trusted token per synthetic advertiser, one for the widget backend, and `shop-demo` with a
Pinterest ad account, a Meta pixel and a Pinterest tag for trying the platforms'
integrations by hand), starts a worker and a collector as child processes (logs in
`.local/logs/`), prints how to send a first event with curl, writes every synthetic
user's consent, then produces traffic at a moderate rate: most records straight to Kafka
as a tag/SDK backend would, a share of the events through the collector over HTTP
(Conversions-API batches with each advertiser's token, pixel beacons for anonymous
visitors, widget posts) and of the customer-list uploads through the platforms' list
calls (Meta's custom audience `users` edge, Pinterest's customer-list update). It also
prints the privacy settings page of three demo people (in the US, in the EEA, under 16;
`pipeline.sim.people`), whose events it sends every few seconds, so that a saved choice
can be watched taking effect. Twice a second it reads the worker's Prometheus endpoint
and redraws the view; when output is not a terminal it prints a plain line every few
seconds instead. On Ctrl-C or after the duration it stops producing, lets the worker
catch up, and prints a final report.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import logging
import os
import random
import secrets
import signal
import sys
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

import aiohttp
from rich.console import Console
from rich.live import Live

from pipeline import catalogue
from pipeline.core.route import list_key
from pipeline.errors import ConfigError
from pipeline.host import describe_process, port_problem
from pipeline.ingest.registry import IdKind, Registry, new_token, save_registry
from pipeline.kafka.admin import create_topics
from pipeline.settings import Settings
from pipeline.sim.live import (
    Feed,
    Frame,
    WorkerMetrics,
    final_report,
    parse_metrics,
    parse_saves,
    plain_line,
    render,
)
from pipeline.sim.people import DemoPerson, PeopleTraffic, demo_people
from pipeline.sim.stream import KafkaSink, run_traffic
from pipeline.sim.traffic import Record, TrafficConfig, TrafficGenerator, audience_ids
from pipeline.state.folder import holder
from schemas import codec

log = logging.getLogger(__name__)

LOG_DIR: Final = Path(".local/logs")
REFRESH_S: Final = 0.5
RATE_WINDOW_S: Final = 3.0
"""Rates are averaged over this many seconds."""
PLAIN_EVERY_S: Final = 5.0
HTTP_FLUSH_S: Final = 0.25
DRAIN_TIMEOUT_S: Final = 20.0
BEACON_SHARE: Final = 0.3
"""Of the anonymous tag events sent through the collector, the share sent as pixel beacons."""
DEV_REGISTRY: Final = Path(".local/demo-advertisers.yaml")
DEMO_AD_ACCOUNT: Final = "549755885175"
DEMO_PIXEL: Final = "1234567890"
DEMO_TAG: Final = "2612345678901"
WIDGET_BACKEND: Final = "widgets"
ACCOUNT_SETTINGS: Final = "account-settings"
"""The platform's account settings frontend: its trusted token calls the consent API."""
PEOPLE_EVERY_S: Final = 2.0
"""How often each demo person visits a shop (one tag event)."""
PR_SET_PDEATHSIG: Final = 1
"""prctl(2) option: the signal a process gets when its parent dies."""


@dataclass(frozen=True)
class DemoOptions:
    """How much traffic the demo makes, and for how long."""

    rate: float = 100.0
    users: int = 2000
    duration: float | None = None
    seed: int | None = None
    http_share: float = 0.2


class DemoConsole(Console):
    """A console whose closed output (`| head`) is an ordinary error, not rich's SystemExit,
    so that the demo unwinds as for any other error and stops its worker and collector."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError(errno.EPIPE, "the demo's output was closed")


class _Child:
    """A `consent-pipeline` subcommand running as a child process, output in a log file."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, log_file: IO[bytes]) -> None:
        self.name = name
        self.proc = proc
        self.log_file = log_file

    @classmethod
    async def start(cls, command: str, env: dict[str, str]) -> _Child:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        log_file = (LOG_DIR / f"{command}.log").open("ab")
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "pipeline.cli",
            command,
            stdout=log_file,
            stderr=log_file,
            env=env,
            start_new_session=True,  # Ctrl-C reaches the demo only; it stops the children
            preexec_fn=_die_with_parent,
        )
        return cls(command, proc, log_file)

    @property
    def log_path(self) -> Path:
        return LOG_DIR / f"{self.name}.log"

    async def stop(self) -> int:
        """Terminate (then kill after 30 s) and wait; returns the exit code."""
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self.log_file.close()
        code = self.proc.returncode
        return 0 if code is None else code


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux for SIGTERM when the demo dies, however it dies
    (kill -9 included), so that no worker or collector outlives it."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


@dataclass(frozen=True)
class DevRegistry:
    """The demo's advertiser registry and the tokens it holds the digests of."""

    path: Path
    tokens: Mapping[str, str]
    """A trusted token per synthetic advertiser (the demo plays their backends)."""
    widget_token: str
    example_token: str
    """`shop-demo`'s ordinary token, for trying the integrations by hand."""
    settings_token: str
    """The account settings frontend's trusted token: the settings pages use it."""


DEMO_TOKEN_FILE: Final = "demo-token"
"""`shop-demo`'s token, written next to the registry for trying the integrations by hand."""


def dev_registry(path: Path, advertisers: int, now: int) -> DevRegistry:
    """Write a fresh development registry with new tokens, and `shop-demo`'s token into
    `demo-token` beside it (owner-only); for local demos only."""
    registry = Registry()
    tokens: dict[str, str] = {}
    for index in range(advertisers):
        token = tokens[f"adv-{index}"] = new_token()
        lists: dict[IdKind, list[str]] = {
            "ad_account": [ad_account(index)],
            "audience": list(audience_ids(index)),
        }
        registry, _ = registry.with_new_token(
            f"adv-{index}", token, ids=lists, trusted=True, now=now
        )
    widget_token = new_token()
    registry, _ = registry.with_new_token(WIDGET_BACKEND, widget_token, trusted=True, now=now)
    example_token = new_token()
    ids: dict[IdKind, list[str]] = {
        "ad_account": [DEMO_AD_ACCOUNT],
        "pixel": [DEMO_PIXEL],
        "tag": [DEMO_TAG],
    }
    registry, _ = registry.with_new_token("shop-demo", example_token, ids=ids, now=now)
    settings_token = new_token()
    registry, _ = registry.with_new_token(ACCOUNT_SETTINGS, settings_token, trusted=True, now=now)
    save_registry(path, registry)
    token_file = path.parent / DEMO_TOKEN_FILE
    token_file.unlink(missing_ok=True)
    descriptor = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(example_token + "\n")
    return DevRegistry(path, tokens, widget_token, example_token, settings_token)


def settings_pages(base_url: str, people: Sequence[DemoPerson], token: str) -> str:
    """Where each demo person's privacy settings page is (the token rides in the fragment,
    which the browser never sends; the page keeps it in its session storage)."""
    lines = ["privacy settings pages of the demo people (save a change, watch their next events):"]
    width = max(len(person.label) for person in people)
    for person in people:
        url = f"{base_url}/account/privacy#user={person.user_id}&token={token}"
        lines.append(f"  {person.label:<{width}}  {url}")
    return "\n".join(lines)


def ad_account(advertiser: int) -> str:
    """The Pinterest ad account of generated advertiser `advertiser`."""
    return str(549_700_000_000 + advertiser)


def first_event_help(base_url: str, token: str) -> str:
    """How to send a first event to the collector by hand (a shell command)."""
    body = (
        '{"data": [{"event_name": "checkout", "action_source": "web", '
        '"event_time": \'$(date +%s)\', "event_id": "first-1", '
        '"user_data": {"em": ["\'$(printf jane@example.com | sha256sum | cut -c1-64)\'"]}, '
        '"custom_data": {"currency": "USD", "value": "72.39"}}]}'
    )
    return (
        "send a first event as a Pinterest Conversions API client would "
        "(drop ?test=true to write it):\n"
        f"  curl -s -X POST '{base_url}/v5/ad_accounts/{DEMO_AD_ACCOUNT}/events?test=true' \\\n"
        f"    -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' \\\n"
        f"    -d '{body}'\n"
        f"or as Meta's: POST {base_url}/v25.0/{DEMO_PIXEL}/events with access_token={token}\n"
        "then ask why it was decided so: "
        ".venv/bin/consent-pipeline explain --advertiser shop-demo --event-id first-1"
    )


class _Feeder:
    """Writes generated records: most straight to Kafka, a share through the collector."""

    def __init__(
        self,
        sink: KafkaSink,
        session: aiohttp.ClientSession,
        base_url: str,
        feed: Feed,
        *,
        http_share: float,
        optout_cookie: str,
        seed: int,
        registry: DevRegistry,
    ) -> None:
        self.registry = registry
        self.sink = sink
        self.session = session
        self.base_url = base_url
        self.feed = feed
        self.http_share = http_share
        self.optout_cookie = optout_cookie
        self._rng = random.Random(seed)
        self._buffer: list[Record] = []
        self._posts: set[asyncio.Task[None]] = set()

    async def write(self, records: Sequence[Record]) -> None:
        direct: list[Record] = []
        for record in records:
            self.feed.produced[_input_kind(record)] += 1
            signed = bool(record.headers)  # a trusted producer's: not sent as an advertiser
            over_http = record.kind == "event" or record.topic is catalogue.RAW_AUDIENCE
            if over_http and not signed and self._rng.random() < self.http_share:
                self._buffer.append(record)
            else:
                direct.append(record)
        await self.sink.write(direct)

    async def pump(self, stop: asyncio.Event) -> None:
        """Send the buffered events over HTTP every `HTTP_FLUSH_S`, until `stop`."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), HTTP_FLUSH_S)
            self.flush()

    def flush(self) -> None:
        """Start sending what is buffered."""
        if not self._buffer:
            return
        batch, self._buffer = self._buffer, []
        task = asyncio.create_task(self._send(batch))
        self._posts.add(task)
        task.add_done_callback(self._posts.discard)

    async def drain(self) -> None:
        """Wait for every HTTP request in flight."""
        self.flush()
        if self._posts:
            await asyncio.wait(list(self._posts))

    async def _send(self, records: list[Record]) -> None:
        groups: dict[tuple[str, str], list[Record]] = {}
        beacons: list[Record] = []
        uploads: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        for record in records:
            source: str = record.topic.source or ""
            if source == "audience":
                member = codec.loads(record.value or b"{}")
                upload = (member["advertiser_id"], member["audience_id"], member["operation"])
                uploads.setdefault(upload, []).append(member)
                continue
            event = codec.loads(record.value or b"{}")
            anonymous = "user_id" not in event
            if source == "tag" and anonymous and self._rng.random() < BEACON_SHARE:
                beacons.append(record)
                continue
            advertiser = event.get("advertiser_id", WIDGET_BACKEND)
            groups.setdefault((source, advertiser), []).append(record)
        sends = [self._beacon(record) for record in beacons]
        for (kind, advertiser), group in groups.items():
            if kind == "widget":
                sends.append(self._post("/v1/widget", kind, group, self.registry.widget_token))
            elif advertiser in self.registry.tokens:
                token = self.registry.tokens[advertiser]
                sends.append(self._post("/v1/events", kind, group, token))
            else:
                sends.append(self._fallback(group))
        for upload, members in uploads.items():
            sends.append(self._upload(*upload, members))
        await asyncio.gather(*sends)

    async def _upload(
        self, advertiser: str, audience: str, operation: str, members: list[dict[str, Any]]
    ) -> None:
        """A customer-list upload as the platforms' clients send it: Meta's `users` edge for
        even advertisers, Pinterest's customer-list update for odd ones."""
        index = int(advertiser.removeprefix("adv-"))
        token = self.registry.tokens[advertiser]
        try:
            if index % 2 == 0:
                rows = [
                    [m["match_keys"].get("em", [""])[0], m["match_keys"].get("ph", [""])[0]]
                    for m in members
                ]
                payload = codec.dumps({"schema": ["EMAIL", "PHONE"], "data": rows}).decode()
                method = "POST" if operation == "add" else "DELETE"
                url = f"{self.base_url}/v25.0/{audience}/users"
                label = "users"
                request = self.session.request(
                    method, url, params={"payload": payload, "access_token": token}
                )
            else:
                records = ",".join(m["match_keys"]["em"][0] for m in members)
                body = {"records": records, "operation_type": operation.upper()}
                url = (
                    f"{self.base_url}/v5/ad_accounts/{ad_account(index)}/customer_lists/{audience}"
                )
                label = "customer_lists"
                request = self.session.patch(
                    url,
                    data=codec.dumps(body),
                    headers={
                        "Content-Type": "application/json",
                        "Authorization": f"Bearer {token}",
                    },
                )
            async with request as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError):
            status = 0
        if status == 200:
            self.feed.via_collector[label] += len(members)
        elif status in (400, 403):
            self.feed.collector_rejected += len(members)
        else:
            await self._fallback_members(members)

    async def _fallback_members(self, members: list[dict[str, Any]]) -> None:
        records = [
            Record(
                catalogue.RAW_AUDIENCE,
                list_key(m["advertiser_id"], m["audience_id"]).encode(),
                codec.dumps(m),
                f"audience.{m['operation']}",
            )
            for m in members
        ]
        await self._fallback(records)

    async def _post(self, endpoint: str, source: str, records: list[Record], token: str) -> None:
        body = codec.dumps({"data": [codec.loads(r.value or b"{}") for r in records]})
        query = f"?source={source}" if endpoint == "/v1/events" else ""
        try:
            async with self.session.post(
                f"{self.base_url}{endpoint}{query}",
                data=body,
                headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
            ) as response:
                if response.status != 200:
                    await self._fallback(records)
                    return
                answer = await response.json(loads=codec.loads)
        except (aiohttp.ClientError, TimeoutError):
            await self._fallback(records)
            return
        label = f"/v1/events {source}" if endpoint == "/v1/events" else endpoint
        self.feed.via_collector[label] += answer.get("events_accepted", 0)
        self.feed.collector_rejected += answer.get("events_rejected", 0)

    async def _beacon(self, record: Record) -> None:
        query, headers = beacon_request(codec.loads(record.value or b"{}"), self.optout_cookie)
        try:
            async with self.session.get(
                f"{self.base_url}/v1/tag", params=query, headers=headers
            ) as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError):
            status = 0
        if status == 200:
            self.feed.via_collector["/v1/tag"] += 1
        elif status == 400:
            self.feed.collector_rejected += 1
        else:
            await self._fallback([record])

    async def _fallback(self, records: list[Record]) -> None:
        # The collector is not up yet (or answered 503): never drop, write straight instead.
        self.feed.collector_unavailable += len(records)
        await self.sink.write(records)


def _input_kind(record: Record) -> str:
    """What the live view counts a produced record as: its source, consent or identity."""
    if record.topic.source is not None:
        return record.topic.source
    return "consent" if record.topic is catalogue.CONSENT_CHANGES else "identity"


def beacon_request(
    event: dict[str, Any], optout_cookie: str
) -> tuple[dict[str, str], dict[str, str]]:
    """The query parameters and headers a browser's pixel would send for a tag event.

    A pixel carries no token, so it cannot name a user: only anonymous events go this way.
    """
    query: dict[str, str] = {}
    for name in ("event_id", "event_name", "event_time", "advertiser_id"):
        if name in event:
            query[name] = str(event[name])
    for name in ("event_source_url", "opt_out_type", "surface"):
        if event.get(name):
            query[name] = str(event[name])
    if event.get("opt_out"):
        query["opt_out"] = "1"
    user_data = event.get("user_data") or {}
    for name in ("em", "ph", "external_id"):
        if user_data.get(name):
            query[name] = ",".join(user_data[name])
    if user_data.get("click_id"):
        query["click_id"] = user_data["click_id"]
    custom = event.get("custom_data") or {}
    for name in ("value", "currency", "num_items", "order_id"):
        if name in custom:
            query[name] = str(custom[name])
    if custom.get("content_ids"):
        query["content_ids"] = ",".join(custom["content_ids"])
    browser = event.get("browser") or {}
    if browser.get("cookie_id"):
        query["cookie_id"] = browser["cookie_id"]
    headers: dict[str, str] = {}
    if user_data.get("client_user_agent"):
        headers["User-Agent"] = user_data["client_user_agent"]
    if browser.get("dnt"):
        headers["DNT"] = "1"
    if browser.get("gpc"):
        headers["Sec-GPC"] = "1"
    if browser.get("daa_opt_out"):
        headers["Cookie"] = f"{optout_cookie}=1"
    return query, headers


class _View:
    """Fetches the worker's metrics and shows them: live in a terminal, plain lines elsewhere."""

    def __init__(self, settings: Settings, session: aiohttp.ClientSession, feed: Feed) -> None:
        host = "127.0.0.1" if settings.web_host in ("0.0.0.0", "::", "") else settings.web_host
        self.url = f"http://{host}:{settings.web_port}/metrics"
        self.collector_url = f"{_collector_base(settings)}/metrics"
        self.prefix = settings.topic_prefix
        self.session = session
        self.feed = feed
        self.started = time.monotonic()
        self.status = "starting the worker"
        self.current: WorkerMetrics | None = None
        self._history: deque[tuple[float, WorkerMetrics]] = deque()

    async def refresh(self) -> Frame:
        try:
            async with self.session.get(self.url, timeout=aiohttp.ClientTimeout(total=2)) as r:
                text = await r.text() if r.status == 200 else None
        except (aiohttp.ClientError, TimeoutError):
            text = None
        if text is not None:
            now = time.monotonic()
            self.current = parse_metrics(text, self.prefix)
            self._history.append((now, self.current))
            while len(self._history) > 2 and self._history[1][0] <= now - RATE_WINDOW_S:
                self._history.popleft()
            if self.status == "starting the worker":
                self.status = "running"
        try:
            async with self.session.get(
                self.collector_url, timeout=aiohttp.ClientTimeout(total=2)
            ) as r:
                if r.status == 200:
                    self.feed.privacy_saves = int(parse_saves(await r.text()))
        except (aiohttp.ClientError, TimeoutError):
            pass
        return self.frame()

    def frame(self) -> Frame:
        previous, interval = None, 1.0
        if len(self._history) > 1:
            (then, previous), (now, _) = self._history[0], self._history[-1]
            interval = now - then
        return Frame(
            elapsed_s=time.monotonic() - self.started,
            feed=self.feed,
            worker=self.current,
            previous=previous,
            interval_s=interval,
            status=self.status,
        )


async def run_demo(settings: Settings, options: DemoOptions, console: Console) -> int:
    """Run the demo until Ctrl-C or `options.duration`; returns the exit code.

    Raises:
        ConfigError: a port or the state folder the demo's processes need is taken.
        KafkaUnavailable: no bootstrap server answered.
    """
    say = console.print
    taken = in_the_way(settings)
    if taken:
        raise ConfigError("; ".join(taken))
    created = await create_topics(settings)
    if created:
        say(f"created {len(created)} topics on {settings.kafka_bootstrap_servers}")
    env = dict(os.environ)
    if settings.hmac_key is None:
        env["PIPELINE_HMAC_KEY"] = _dev_key(Path(".local/dev-hmac-key"))
        say("using a development HMAC key from .local/dev-hmac-key (set PIPELINE_HMAC_KEY)")
    if settings.trust_key is None:
        trust_key = _dev_key(Path(".local/dev-trust-key"))
        env["PIPELINE_TRUST_KEY"] = trust_key
        say("using a development trust key from .local/dev-trust-key (set PIPELINE_TRUST_KEY)")
    else:
        trust_key = settings.trust_key.get_secret_value()
    seed = options.seed if options.seed is not None else secrets.randbelow(2**31)
    config = TrafficConfig(users=options.users)
    generator = TrafficGenerator(config, seed=seed, trust_key=trust_key.encode())
    registry = dev_registry(DEV_REGISTRY, config.advertisers, int(time.time()))
    env["PIPELINE_ADVERTISERS_FILE"] = str(registry.path)
    if not settings.collector_worker_urls:
        env["PIPELINE_COLLECTOR_WORKER_URLS"] = settings.canonical_url
    env["PIPELINE_COLLECTOR_PRIVACY_PAGE"] = "true"
    children: list[_Child] = []
    try:  # however the demo ends (an error, a closed pipe), its children end with it
        children.append(await _Child.start("worker", env))
        children.append(await _Child.start("collect", env))
        return await _run(settings, options, console, _Processes(*children), generator, registry)
    finally:
        for child in children:
            await child.stop()


@dataclass(frozen=True)
class _Processes:
    worker: _Child
    collector: _Child

    @property
    def both(self) -> tuple[_Child, _Child]:
        return (self.worker, self.collector)


async def _run(
    settings: Settings,
    options: DemoOptions,
    console: Console,
    children: _Processes,
    generator: TrafficGenerator,
    registry: DevRegistry,
) -> int:
    say = console.print
    worker, collector = children.both
    base_url = _collector_base(settings)
    seed = generator.seed
    say(
        f"worker (pid {worker.proc.pid}) and collector (pid {collector.proc.pid}, "
        f"{base_url}) started; logs in {LOG_DIR}/; development advertiser registry in "
        f"{registry.path}. {options.users} users, {options.rate:g} events/s, seed {seed}. "
        "Ctrl-C stops."
    )
    say(first_event_help(base_url, registry.example_token), highlight=False, soft_wrap=True)
    people = PeopleTraffic(demo_people(), seed, advertisers=generator.config.advertisers)
    say(
        settings_pages(base_url, people.people, registry.settings_token),
        highlight=False,
        soft_wrap=True,
    )
    stop, abort = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()

    def interrupt() -> None:
        (abort if stop.is_set() else stop).set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, interrupt)
    if options.duration:
        loop.call_later(options.duration, stop.set)

    feed = Feed()
    sink = KafkaSink(settings)
    await sink.start()
    live_mode = console.is_terminal and not os.environ.get("CI")
    try:
        await sink.write(people.bootstrap())
        feed.produced["consent"] += len(people.people)
        feed.produced["identity"] += len(people.people)
        async with aiohttp.ClientSession() as session:
            feeder = _Feeder(
                sink,
                session,
                base_url,
                feed,
                http_share=options.http_share,
                optout_cookie=settings.collector_optout_cookie,
                seed=seed,
                registry=registry,
            )
            view = _View(settings, session, feed)
            producing = asyncio.create_task(
                run_traffic(generator, feeder.write, rate=options.rate, stop=stop)
            )
            pumping = asyncio.create_task(feeder.pump(stop))
            visiting = asyncio.create_task(_visits(people, feeder, stop))
            exits = [asyncio.create_task(c.proc.wait()) for c in children.both]
            shown = asyncio.Event()
            showing = asyncio.create_task(_show(view, console, live_mode, shown))
            stopped = asyncio.create_task(stop.wait())
            # The view ending early means its output is gone (`| head`): the demo ends too.
            await asyncio.wait([*exits, stopped, showing], return_when=asyncio.FIRST_COMPLETED)
            stop.set()
            report = await producing
            await pumping
            await visiting
            await feeder.drain()
            await sink.flush()
            report.failures = sink.failures
            crashed = [c for c in children.both if c.proc.returncode is not None]
            if not crashed and not showing.done():
                view.status = "draining"
                await _drain(view, feed, abort, console)
            shown.set()
            await showing
    finally:
        await sink.stop()
    view.status = "stopped"
    console.print(final_report(view.frame(), report, width=console.width))
    for child in crashed:
        console.print(
            f"[red]{child.name} exited early (code {child.proc.returncode}); "
            f"see {child.log_path}[/red]"
        )
    codes = [await c.stop() for c in children.both]
    say(f"worker and collector stopped (exit codes {codes[0]}, {codes[1]})")
    return 1 if crashed or any(code not in (0, -signal.SIGTERM) for code in codes) else 0


def in_the_way(settings: Settings) -> list[str]:
    """What would stop the demo's worker or collector from starting: a port another process
    listens on, a state folder another worker holds; each names its setting and holder."""
    problems = [
        port_problem(setting, host, port)
        for setting, host, port in (
            ("PIPELINE_WEB_PORT", settings.web_host, settings.web_port),
            ("PIPELINE_COLLECTOR_PORT", settings.collector_host, settings.collector_port),
        )
    ]
    found = [p for p in problems if p is not None]
    if settings.store == "rocksdb":
        root = settings.data_dir / settings.app_id
        pid = holder(root)
        if pid is not None:
            found.append(
                f"PIPELINE_DATA_DIR ({root}) is in use by another worker, {describe_process(pid)}"
            )
    return found


async def _visits(people: PeopleTraffic, feeder: _Feeder, stop: asyncio.Event) -> None:
    """Each demo person's next event every `PEOPLE_EVERY_S`, until `stop`."""
    while not stop.is_set():
        await feeder.write(people.events())
        await _pause(stop, PEOPLE_EVERY_S)


def _collector_base(settings: Settings) -> str:
    host = settings.collector_host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://{host}:{settings.collector_port}"


async def _show(view: _View, console: Console, live_mode: bool, done: asyncio.Event) -> None:
    """Refresh the view every `REFRESH_S` until `done`."""
    if live_mode:
        frame = view.frame()
        with Live(
            render(frame, width=console.width), console=console, refresh_per_second=4
        ) as live:
            while not done.is_set():
                frame = await view.refresh()
                live.update(render(frame, width=console.width))
                await _pause(done, REFRESH_S)
        return
    last_line = -PLAIN_EVERY_S
    while not done.is_set():
        frame = await view.refresh()
        if frame.elapsed_s - last_line >= PLAIN_EVERY_S:
            last_line = frame.elapsed_s
            console.print(plain_line(frame), highlight=False, soft_wrap=True)
        await _pause(done, REFRESH_S)


async def _drain(view: _View, feed: Feed, abort: asyncio.Event, console: Console) -> None:
    """Let the worker consume and decide what was produced (Ctrl-C again skips this)."""
    console.print("stopped producing; letting the worker catch up (Ctrl-C again skips)")
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    produced = sum(feed.produced[s] for s in ("tag", "sdk", "widget"))
    while time.monotonic() < deadline and not abort.is_set():
        await _pause(abort, REFRESH_S)
        worker = view.current
        if worker is None or worker.total_in < produced or worker.total_lag > 0:
            continue
        audited = worker.events_out.get(catalogue.AUDIT.name, 0.0)
        dead = sum(v for (source, _), v in worker.dlq.items() if source != "consent")
        if audited + dead >= worker.total_in:
            return


async def _pause(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)


def _dev_key(path: Path) -> str:
    """A random key kept in `path`, created on first use; for local demos only."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()
