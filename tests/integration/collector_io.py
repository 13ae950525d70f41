"""Helpers for the collector's integration tests: a registry, a running collector, and an
independent consumer that reads the raw topics with their headers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline import catalogue
from pipeline.catalogue import Topic
from pipeline.ingest.collector import AccessLogger, Collector
from pipeline.ingest.registry import IdKind, Registry, new_token
from pipeline.settings import Settings
from schemas import codec
from tests.integration.conftest import free_port

TRUST_KEY = "integration-test-trust-key-0123456789abcdef"
AD_ACCOUNT = "549755885175"
PIXEL_ID = "1234567890"
TAG_ID = "2612345678901"
OTHER_AD_ACCOUNT = "549755000001"
OTHER_PIXEL_ID = "9876543210"
LIST_ID = "643"
"""shop-1's Pinterest customer list."""
AUDIENCE_ID = "23850000000000000"
"""shop-1's Meta custom audience."""
OTHER_LIST_ID = "644"
"""shop-2's list and audience."""
RAW_TOPICS = (catalogue.RAW_TAG, catalogue.RAW_SDK, catalogue.RAW_WIDGET)


def configured(settings: Settings, **overrides: object) -> Settings:
    """`settings` with `overrides`, validated as the environment would be."""
    return Settings.model_validate({**settings.model_dump(), **overrides})


@dataclass
class Tokens:
    """The tokens of the test registry, by role."""

    shop: str = field(default_factory=new_token)
    """shop-1's ordinary token: its ad account, pixel and tag."""
    trusted: str = field(default_factory=new_token)
    """shop-1's trusted token (may name a user_id)."""
    other: str = field(default_factory=new_token)
    """shop-2's token: another advertiser, with its own account and pixel."""


def make_registry(tokens: Tokens) -> Registry:
    """shop-1 with an ad account, a pixel, a tag, two audiences and two tokens; shop-2
    with its own."""
    ids: dict[IdKind, list[str]] = {
        "ad_account": [AD_ACCOUNT],
        "pixel": [PIXEL_ID],
        "tag": [TAG_ID],
        "audience": [LIST_ID, AUDIENCE_ID],
    }
    registry, _ = Registry().with_new_token("shop-1", tokens.shop, ids=ids, now=0)
    registry, _ = registry.with_new_token("shop-1", tokens.trusted, trusted=True, now=0)
    other: dict[IdKind, list[str]] = {
        "ad_account": [OTHER_AD_ACCOUNT],
        "pixel": [OTHER_PIXEL_ID],
        "audience": [OTHER_LIST_ID],
    }
    registry, _ = registry.with_new_token("shop-2", tokens.other, ids=other, now=0)
    return registry


@dataclass
class Running:
    """A collector serving on a free loopback port."""

    collector: Collector
    url: str

    @property
    def settings(self) -> Settings:
        return self.collector.settings


@contextlib.asynccontextmanager
async def running_collector(settings: Settings, registry: Registry) -> AsyncIterator[Running]:
    """Serve a collector for `settings` and `registry` until the block ends."""
    settings = configured(settings, collector_port=free_port())
    collector = Collector(settings, registry)
    runner = web.AppRunner(collector.app(), access_log_class=AccessLogger)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", settings.collector_port).start()
    try:
        assert collector.available, "the collector connects at start-up when Kafka is up"
        yield Running(collector, f"http://127.0.0.1:{settings.collector_port}")
    finally:
        await runner.cleanup()


@dataclass(frozen=True)
class RawRecord:
    """A record read back from a raw topic, headers included."""

    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]

    def json(self) -> Any:
        return codec.loads(self.value)

    def header(self, name: str) -> bytes | None:
        return next((value for key, value in self.headers if key == name), None)


async def read_raw(
    settings: Settings,
    expected: int,
    topics: Iterable[Topic] = RAW_TOPICS,
    *,
    timeout_s: float = 30.0,
    settle_s: float = 1.0,
) -> dict[str, list[RawRecord]]:
    """Read the raw topics from the start until `expected` records arrived, then
    `settle_s` more (to catch any that should not be there), by catalogue name."""
    names = {settings.topic(topic): topic.name for topic in topics}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    got: dict[str, list[RawRecord]] = {name: [] for name in names.values()}
    try:
        await consumer._client.force_metadata_update()
        partitions = [
            TopicPartition(topic, partition)
            for topic in names
            for partition in consumer.partitions_for_topic(topic) or ()
        ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + timeout_s
        settle_until: float | None = None
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for tp, messages in batches.items():
                got[names[tp.topic]].extend(
                    RawRecord(
                        names[tp.topic],
                        m.key,
                        m.value or b"",
                        tuple((k, bytes(v)) for k, v in (m.headers or ())),
                    )
                    for m in messages
                )
            total = sum(len(records) for records in got.values())
            if settle_until is None and total >= expected:
                settle_until = time.monotonic() + settle_s
            if settle_until is not None and time.monotonic() >= settle_until:
                break
    finally:
        await consumer.stop()
    return got


def by_event_id(records: Iterable[RawRecord]) -> dict[str, RawRecord]:
    """Records by the event id in their value."""
    return {record.json()["event_id"]: record for record in records}


def metric(text: str, name: str, **labels: str) -> float:
    """One sample of a Prometheus exposition (0 when absent)."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        if series == (f"{name}{{{wanted}}}" if wanted else name) or (
            wanted and series.startswith(f"{name}{{") and _same_labels(series, labels)
        ):
            return float(value)
    return 0.0


def _same_labels(series: str, labels: dict[str, str]) -> bool:
    inside = series[series.index("{") + 1 : -1]
    pairs = dict(part.split("=", 1) for part in inside.split(",") if "=" in part)
    return {k: v.strip('"') for k, v in pairs.items()} == labels


async def run_pinterest_sdk(
    collector: Running, tmp_path: Path, script: Path, request: dict[str, Any]
) -> dict[str, Any]:
    """Run a `pinterest-api-sdk` script (`sdk_clients/`) in a child process pointed at the
    collector, `request` on its stdin; returns the JSON of its last output line.

    `PINTEREST_API_URI` must be set before the SDK's first import, and it reads any
    `config.json` under the parent of its working directory: so a clean environment and
    an empty directory tree.
    """
    workdir = tmp_path / "sdk" / "run"
    workdir.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path / "sdk"),
        "PINTEREST_API_URI": f"{collector.url}/v5",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        cwd=workdir,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(json.dumps(request).encode()), 60)
    assert proc.returncode == 0, err.decode()
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result
