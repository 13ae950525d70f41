"""The HTTP collector over real HTTP against the real broker: results, raw records, 503s."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from pipeline import catalogue
from pipeline.catalogue import Topic
from pipeline.ingest.collector import PIXEL, AccessLogger, Collector
from pipeline.settings import Settings
from schemas import normalize
from tests.integration.conftest import free_port
from tests.integration.kafka_io import Read, read_topics

pytestmark = pytest.mark.integration

RAW_EMAIL = "Jane.Doe@Example.com"


class Running:
    """A collector serving on a free loopback port."""

    def __init__(self, collector: Collector, url: str) -> None:
        self.collector = collector
        self.url = url


@pytest.fixture
async def collector(pipeline_settings: Settings) -> AsyncIterator[Running]:
    settings = pipeline_settings.model_copy(
        update={"collector_port": free_port(), "collector_max_events": 10}
    )
    made = Collector(settings)
    runner = web.AppRunner(made.app(), access_log_class=AccessLogger)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", settings.collector_port).start()
    try:
        assert made.available, "the collector connects at start-up when Kafka is up"
        yield Running(made, f"http://127.0.0.1:{settings.collector_port}")
    finally:
        await runner.cleanup()


def now() -> int:
    return int(time.time())


def tag(event_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "event_name": "checkout",
        "event_time": now() - 5,
        "action_source": "web",
        "advertiser_id": "adv-http",
        "user_id": "user-http",
        **fields,
    }


async def read_raw(settings: Settings, expected: int, topics: list[Topic]) -> dict[str, list[Read]]:
    names = [settings.topic(t) for t in topics]

    def enough(got: dict[str, list[Read]]) -> bool:
        return sum(len(v) for v in got.values()) >= expected

    got = await read_topics(settings.kafka_bootstrap_servers, names, enough, timeout_s=30)
    return {t.name: got[settings.topic(t)] for t in topics}


async def test_a_batch_gets_one_result_per_index_and_only_valid_events_reach_the_raw_topics(
    collector: Running,
) -> None:
    batch = [
        tag("ok-1", user_data={"em": [RAW_EMAIL]}),
        tag("bad-1", event_name="secret-purchase"),
        {
            **tag("ok-2", action_source="app_ios"),
            "device": {"device_id": "dev-1", "att_status": "denied", "os_version": "17.5"},
        },
        "not an event",
        tag("ok-3", user_id=None, browser={"cookie_id": "ck-http", "dnt": True}),
        tag("old-1", event_time=now() - 8 * 86400),
        tag("bad-2", user_data={"em": ["secret-not-an-email"]}),
    ]
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{collector.url}/v1/events", json={"data": batch}) as response,
    ):
        status = response.status
        body = await response.json()

    assert status == 200
    assert body["events_received"] == 7
    assert body["events_accepted"] == 3
    results = body["results"]
    assert [r["index"] for r in results] == list(range(7))
    assert [r["status"] for r in results] == [
        "accepted",
        "rejected",
        "accepted",
        "rejected",
        "accepted",
        "rejected",
        "rejected",
    ]
    assert results[1] == {
        "index": 1,
        "status": "rejected",
        "reason": "schema_violation",
        "error": "event_name: literal_error",
    }
    assert results[3]["error"] == "body: model_type"
    assert results[5]["reason"] == "too_old"
    assert results[6]["error"].startswith("user_data.em.0")
    assert "secret" not in str(body)
    assert results[2]["topic"] == catalogue.RAW_SDK.name

    raw = await read_raw(
        collector.collector.settings,
        3,
        [catalogue.RAW_TAG, catalogue.RAW_SDK, catalogue.RAW_WIDGET],
    )
    tags = {r.json()["event_id"]: r for r in raw[catalogue.RAW_TAG.name]}
    assert set(tags) == {"ok-1", "ok-3"}
    assert [r.json()["event_id"] for r in raw[catalogue.RAW_SDK.name]] == ["ok-2"]
    assert raw[catalogue.RAW_WIDGET.name] == []
    assert tags["ok-1"].key == b"user-http"
    assert tags["ok-3"].key == b"anon:ck-http"
    assert raw[catalogue.RAW_SDK.name][0].key == b"user-http"
    assert b"Jane" not in tags["ok-1"].value
    assert tags["ok-1"].json()["user_data"]["em"] == [normalize.sha256_hex(RAW_EMAIL.lower())]


async def test_the_beacon_honours_dnt_gpc_and_the_optout_cookie(collector: Running) -> None:
    query = {"advertiser_id": "adv-px", "user_id": "user-px", "cookie_id": "ck-px"}
    async with aiohttp.ClientSession() as http:
        async with http.get(
            f"{collector.url}/v1/tag",
            params={**query, "event_id": "px-signals"},
            headers={"DNT": "1", "Sec-GPC": "1", "Cookie": "optout=1"},
        ) as response:
            assert response.status == 200
            assert response.content_type == "image/gif"
            assert await response.read() == PIXEL
        async with http.get(
            f"{collector.url}/v1/tag", params={**query, "event_id": "px-plain"}
        ) as response:
            assert response.status == 200
        async with http.get(
            f"{collector.url}/v1/tag", params={"event_id": "px-bad", "user_id": "u"}
        ) as response:
            assert response.status == 400, "a bad pixel is answered, never a 500"
            assert await response.read() == PIXEL
            assert response.headers["X-Rejected"] == "schema_violation; advertiser_id: missing"

    raw = await read_raw(collector.collector.settings, 2, [catalogue.RAW_TAG])
    events = {r.json()["event_id"]: r.json() for r in raw[catalogue.RAW_TAG.name]}
    assert set(events) == {"px-signals", "px-plain"}
    assert events["px-signals"]["browser"] == {
        "cookie_id": "ck-px",
        "dnt": True,
        "gpc": True,
        "daa_opt_out": True,
    }
    assert events["px-plain"]["browser"] == {
        "cookie_id": "ck-px",
        "dnt": False,
        "gpc": False,
        "daa_opt_out": False,
    }
    assert events["px-plain"]["user_data"]["client_ip_address"] == "127.0.0.1"


async def test_a_widget_post_carries_the_browser_signals(collector: Running) -> None:
    widget = {
        "event_id": "w-1",
        "event_name": "save_click",
        "event_time": now() - 1,
        "user_id": "user-w",
        "site_domain": "blog.example.org",
        "widget_type": "save_button",
    }
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{collector.url}/v1/widget", json=widget, headers={"DNT": "1"}) as response,
    ):
        assert response.status == 200
        body = await response.json()
    assert body["results"] == [
        {"index": 0, "status": "accepted", "event_id": "w-1", "topic": catalogue.RAW_WIDGET.name}
    ]

    raw = await read_raw(collector.collector.settings, 1, [catalogue.RAW_WIDGET])
    [record] = raw[catalogue.RAW_WIDGET.name]
    assert record.key == b"user-w"
    assert record.json()["browser"]["dnt"] is True


async def test_request_limits_are_answered_with_4xx(collector: Running) -> None:
    url = f"{collector.url}/v1/events"
    too_many = {"data": [tag(f"n-{i}") for i in range(11)]}
    too_large = b'{"data": ["' + b"x" * (2 * 1024 * 1024) + b'"]}'
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json=too_many) as response:
            assert response.status == 413
            assert "at most 10" in (await response.json())["error"]
        async with http.post(url, data=too_large) as response:
            assert response.status == 413
        async with http.post(url, data=b"{not json") as response:
            assert response.status == 400
        async with http.post(url, json={"data": "x"}) as response:
            assert response.status == 400
        async with http.post(url, json={"data": [tag("q-1")]}, params={"source": "x"}) as r:
            assert r.status == 400


async def test_503_with_retry_after_once_the_producer_is_stopped(collector: Running) -> None:
    await collector.collector.producer.stop()

    async with aiohttp.ClientSession() as http:
        async with http.post(f"{collector.url}/v1/events", json={"data": [tag("s-1")]}) as r:
            assert r.status == 503
            assert r.headers["Retry-After"] == "5"
        async with http.get(f"{collector.url}/v1/tag", params={"advertiser_id": "a"}) as r:
            assert r.status == 503
            assert r.headers["Retry-After"] == "5"


def test_the_collect_command_answers_503_while_kafka_is_unreachable(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    port = free_port()
    settings = settings_factory(
        kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
        collector_port=port,
        collector_retry_after_seconds=7,
    )
    env = {**os.environ, **settings.to_env()}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    log = (tmp_path / "collector.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "collect"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        asyncio.run(_expect_503(f"http://127.0.0.1:{port}"))
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
        log.close()
    assert "cannot reach Kafka" in (tmp_path / "collector.log").read_text()


async def _expect_503(url: str) -> None:
    async with aiohttp.ClientSession() as http:
        deadline = time.monotonic() + 30
        while True:
            try:
                async with http.get(f"{url}/healthz") as r:
                    health = await r.json()
                    break
            except aiohttp.ClientConnectionError:
                assert time.monotonic() < deadline, "the collector did not start"
                await asyncio.sleep(0.2)
        assert health["kafka"] == "unavailable"
        async with http.get(f"{url}/ready") as r:
            assert r.status == 503
        async with http.post(f"{url}/v1/events", json={"data": [tag("u-1")]}) as r:
            assert r.status == 503
            assert r.headers["Retry-After"] == "7"
            assert "unavailable" in (await r.json())["error"]
        async with http.get(f"{url}/v1/tag", params={"advertiser_id": "a"}) as r:
            assert r.status == 503
            assert r.headers["Retry-After"] == "7"
