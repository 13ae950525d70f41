"""Helpers for the consent API's tests: a worker and a collector wired together, people's
consent records, their events, and reading what became of them."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from pipeline import catalogue
from pipeline.core.trust import REQUEST_HEADER, TRUST_HEADER, request_signature, trust_signature
from pipeline.kafka.admin import create_topics
from pipeline.kafka.writer import KeyPartitioner
from pipeline.settings import Settings
from schemas import codec
from tests.conftest import TRUST_KEY
from tests.integration.collector_io import (
    Running,
    Tokens,
    configured,
    make_registry,
    running_collector,
)
from tests.integration.conftest import WorkerProcess, free_port
from tests.integration.kafka_io import Read, read_topics


def stack_settings(kafka_bootstrap: str, data_dir: Path) -> Settings:
    """Settings of a pipeline of its own (app id, topic prefix) on the real cluster."""
    run = uuid.uuid4().hex[:12]
    return Settings.model_validate(
        {
            "kafka_bootstrap_servers": kafka_bootstrap,
            "app_id": f"privacy-{run}",
            "topic_prefix": f"p-{run}.",
            "store": "memory",
            "data_dir": data_dir,
            "topic_partitions": 3,
            "hmac_key": "integration-test-hmac-key-0123456789abcdef",
            "trust_key": TRUST_KEY.decode(),
            "poll_timeout_ms": 20,
        }
    )


def stack_with_topics(kafka_bootstrap: str, data_dir: Path) -> Settings:
    """`stack_settings`, with the pipeline's topics created."""
    settings = stack_settings(kafka_bootstrap, data_dir)
    asyncio.run(create_topics(settings))
    return settings


async def read_outputs(stack: Settings, audited: set[str]) -> dict[str, list[Read]]:
    """The personalization, ads, de-identified and audit records of `stack`, by topic (the
    catalogue's name), once the audit holds every event id of `audited`."""
    topics = (catalogue.PERSONALIZATION, catalogue.ADS, catalogue.DEIDENTIFIED, catalogue.AUDIT)
    names = {stack.topic(topic): topic.name for topic in topics}

    def done(got: dict[str, list[Read]]) -> bool:
        seen = {read.json()["event_id"] for read in got[stack.topic(catalogue.AUDIT)]}
        return audited <= seen

    got = await read_topics(stack.kafka_bootstrap_servers, list(names), done, timeout_s=60)
    return {names[topic]: reads for topic, reads in got.items()}


def auth(token: str | None) -> dict[str, str]:
    return {} if token is None else {"Authorization": f"Bearer {token}"}


@contextlib.contextmanager
def running_workers(base: Settings, log_dir: Path, count: int = 1) -> Iterator[list[WorkerProcess]]:
    """`count` workers of one group, each on its own web port, ready."""
    workers = []
    try:
        for index in range(count):
            settings = configured(base, web_port=free_port(), worker_id=f"worker-{index}")
            workers.append(WorkerProcess(settings, log_dir / f"worker-{index}.log"))
        for worker in workers:
            worker.wait_ready(timeout=90)
        yield workers
    finally:
        for worker in workers:
            worker.stop()


def worker_url(worker: WorkerProcess) -> str:
    return f"http://127.0.0.1:{worker.settings.web_port}"


@contextlib.asynccontextmanager
async def consent_api(
    settings: Settings, tokens: Tokens, workers: list[WorkerProcess]
) -> AsyncIterator[Running]:
    """A collector whose consent API asks `workers` (in that order); `tokens.trusted` may
    call it, `tokens.shop` (an advertiser's ordinary token) may not."""
    urls = ",".join(worker_url(worker) for worker in workers)
    with_workers = configured(settings, collector_worker_urls=urls, collector_privacy_page=True)
    async with running_collector(with_workers, make_registry(tokens)) as running:
        yield running


def person(
    user_id: str,
    country: str | None,
    age: int | None,
    *,
    changed_at: int | None = None,
    device: dict[str, Any] | None = None,
    **settings: bool | None,
) -> dict[str, Any]:
    """A full consent record of a person of `age` in `country`."""
    year = time.gmtime().tm_year
    record: dict[str, Any] = {
        "user_id": user_id,
        "changed_at": changed_at or int(time.time() * 1000),
        "settings": settings,
        "profile": {"country": country, "birth_year": None if age is None else year - age - 1},
    }
    if device is not None:
        record["device"] = device
    return record


def tag(user_id: str, advertiser_id: str, event_id: str | None = None) -> dict[str, Any]:
    """A web tag event a trusted producer names `user_id` on, no browser signal set."""
    return {
        "event_id": event_id or uuid.uuid4().hex,
        "event_name": "page_visit",
        "event_time": int(time.time()),
        "action_source": "web",
        "advertiser_id": advertiser_id,
        "user_id": user_id,
        "event_source_url": f"https://{advertiser_id}.example.com/p/1",
        "browser": {"cookie_id": f"ck-{user_id}"},
    }


@dataclass(frozen=True)
class Sent:
    """A record Kafka acknowledged: its event id (empty for consent) and append time (ms)."""

    event_id: str
    appended_ms: int
    partition: int
    offset: int


class Writer:
    """An independent producer: consent records keyed by user, signed tag events."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap_servers, acks="all"
        )

    async def __aenter__(self) -> Writer:
        await self._producer.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._producer.stop()

    async def consent(self, record: dict[str, Any]) -> Sent:
        topic = self.settings.topic(catalogue.CONSENT_CHANGES)
        value = codec.dumps(record)
        metadata = await self._producer.send_and_wait(topic, value, key=record["user_id"].encode())
        return Sent("", metadata.timestamp, metadata.partition, metadata.offset)

    async def event(self, event: dict[str, Any]) -> Sent:
        topic = self.settings.topic(catalogue.RAW_TAG)
        value = codec.dumps(event)
        trust = trust_signature(TRUST_KEY, value)
        metadata = await self._producer.send_and_wait(
            topic, value, key=event["event_id"].encode(), headers=[(TRUST_HEADER, trust)]
        )
        return Sent(event["event_id"], metadata.timestamp, metadata.partition, metadata.offset)


def consent_partition(settings: Settings, user_id: str) -> int:
    return KeyPartitioner()(user_id.encode()) % settings.topic_partitions


async def consent_ends(settings: Settings) -> dict[int, int]:
    """The end offset of every `consent.changes` partition."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await consumer.start()
    try:
        topic = settings.topic(catalogue.CONSENT_CHANGES)
        tps = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
        ends = await consumer.end_offsets(tps)
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()


async def consent_record_at(settings: Settings, partition: int, offset: int) -> Any:
    """The `consent.changes` record at a partition and offset, decoded."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tp = TopicPartition(settings.topic(catalogue.CONSENT_CHANGES), partition)
        consumer.assign([tp])
        consumer.seek(tp, offset)
        record = await consumer.getone()
        return codec.loads(record.value)
    finally:
        await consumer.stop()


async def signed_get(worker: WorkerProcess, path: str) -> tuple[int, Any]:
    """A worker's internal page, signed as the collector signs it."""
    signature = request_signature(TRUST_KEY, "GET", path, int(time.time()))
    async with (
        aiohttp.ClientSession() as http,
        http.get(worker_url(worker) + path, headers={REQUEST_HEADER: signature}) as response,
    ):
        return response.status, await response.json(content_type=None)


async def call(
    method: str, url: str, token: str | None, body: Any = None, *, raw: bytes | None = None
) -> tuple[int, dict[str, str], Any]:
    """One consent API call: status, headers, JSON answer."""
    data = raw if raw is not None else (None if body is None else codec.dumps(body))
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, url, data=data, headers=auth(token)) as response,
    ):
        return response.status, dict(response.headers), await response.json(content_type=None)


async def until(check: Callable[[], Any], timeout_s: float = 30.0) -> Any:
    """Poll `check` (a coroutine function) until it returns something truthy."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.1)


async def held_by_api(url: str, token: str, user_id: str) -> dict[str, Any]:
    async def answered() -> dict[str, Any] | None:
        status, _, body = await call("GET", f"{url}/v1/users/{user_id}/privacy", token)
        return body if status == 200 else None

    found: dict[str, Any] = await until(answered)
    return found
