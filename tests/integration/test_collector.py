"""The collector's native endpoints over real HTTP against the real broker: tokens, trust,
results, raw records, limits, 503s, the registry, metrics and the `collect` command."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pipeline import catalogue
from pipeline.core.trust import TRUST_HEADER, is_trusted
from pipeline.ingest.collector import PIXEL
from pipeline.ingest.registry import new_token, save_registry
from pipeline.settings import Settings
from schemas import normalize
from tests.integration.collector_io import (
    TRUST_KEY,
    Running,
    Tokens,
    by_event_id,
    configured,
    make_registry,
    metric,
    read_raw,
    running_collector,
)
from tests.integration.conftest import free_port, process_env

pytestmark = pytest.mark.integration

RAW_EMAIL = "Jane.Doe@Example.com"


@pytest.fixture
def tokens() -> Tokens:
    return Tokens()


@pytest.fixture
def collector_settings(pipeline_settings: Settings) -> Settings:
    return pipeline_settings.model_copy(update={"collector_max_events": 10, "trust_key": TRUST_KEY})


@pytest.fixture
async def collector(collector_settings: Settings, tokens: Tokens) -> AsyncIterator[Running]:
    async with running_collector(collector_settings, make_registry(tokens)) as running:
        yield running


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def now() -> int:
    return int(time.time())


def tag(event_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "event_name": "checkout",
        "event_time": now() - 5,
        "action_source": "web",
        "user_id": "user-http",
        **fields,
    }


async def post(
    url: str, body: object, token: str | None, **kwargs: Any
) -> tuple[int, dict[str, str], Any]:
    headers = {**(auth(token) if token else {}), **kwargs.pop("headers", {})}
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, json=body, headers=headers, **kwargs) as response,
    ):
        return response.status, dict(response.headers), await response.json()


async def test_a_trusted_batch_gets_one_result_per_index_and_signed_records(
    collector: Running, tokens: Tokens
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
        tag("ok-4", user_id=None, custom_data={"value": "72.39", "opt_out_type": "LDP"}),
    ]

    status, _, body = await post(f"{collector.url}/v1/events", {"data": batch}, tokens.trusted)

    assert status == 200
    assert (body["events_received"], body["events_accepted"], body["events_rejected"]) == (8, 4, 4)
    results = body["results"]
    assert [r["index"] for r in results] == list(range(8))
    assert [r["status"] for r in results] == [
        "accepted",
        "rejected",
        "accepted",
        "rejected",
        "accepted",
        "rejected",
        "rejected",
        "accepted",
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

    raw = await read_raw(collector.settings, 4)
    tags = by_event_id(raw[catalogue.RAW_TAG.name])
    assert set(tags) == {"ok-1", "ok-3", "ok-4"}
    [app] = raw[catalogue.RAW_SDK.name]
    assert raw[catalogue.RAW_WIDGET.name] == []
    assert tags["ok-1"].key == b"user-http"
    assert tags["ok-3"].key == b"anon:ck-http"
    assert app.key == b"user-http"
    assert b"Jane" not in tags["ok-1"].value
    assert tags["ok-1"].json()["user_data"]["em"] == [normalize.sha256_hex(RAW_EMAIL.lower())]
    assert tags["ok-1"].json()["advertiser_id"] == "shop-1", "the token's advertiser fills in"
    assert tags["ok-4"].json()["custom_data"] == {"value": "72.39", "opt_out_type": "LDP"}
    key = TRUST_KEY.encode()
    for record in (tags["ok-1"], app):
        assert is_trusted(key, record.value, record.header(TRUST_HEADER)), "names a user: signed"
    assert tags["ok-3"].header(TRUST_HEADER) is None, "names nobody: nothing to vouch for"


async def test_an_ordinary_token_cannot_name_a_user(collector: Running, tokens: Tokens) -> None:
    batch = [tag("u-1"), tag("u-2", user_id=None, browser={"cookie_id": "ck-2"})]

    status, _, body = await post(f"{collector.url}/v1/events", {"data": batch}, tokens.shop)

    assert status == 200
    assert body["results"][0] == {
        "index": 0,
        "status": "rejected",
        "reason": "schema_violation",
        "error": "user_id: requires a trusted token",
    }
    assert body["events_accepted"] == 1
    raw = await read_raw(collector.settings, 1)
    assert set(by_event_id(raw[catalogue.RAW_TAG.name])) == {"u-2"}


@pytest.mark.parametrize("token", [None, "wrong", "Basic abc"])
async def test_no_or_an_unknown_token_is_401_and_writes_nothing(
    collector: Running, token: str | None
) -> None:
    status, headers, body = await post(
        f"{collector.url}/v1/events", {"data": [tag("n-1", user_id=None)]}, token
    )

    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Bearer")
    assert "token" in body["error"]
    raw = await read_raw(collector.settings, 0, settle_s=0.5)
    assert all(records == [] for records in raw.values())


async def test_another_advertisers_id_is_403_for_the_whole_request(
    collector: Running, tokens: Tokens
) -> None:
    batch = [tag("o-1", user_id=None), tag("o-2", user_id=None, advertiser_id="shop-2")]

    status, _, body = await post(f"{collector.url}/v1/events", {"data": batch}, tokens.shop)

    assert status == 403
    assert "advertiser_id" in body["error"]
    raw = await read_raw(collector.settings, 0, settle_s=0.5)
    assert raw[catalogue.RAW_TAG.name] == []


async def test_the_rate_limit_answers_429_with_retry_after(
    collector_settings: Settings, tokens: Tokens
) -> None:
    settings = configured(
        collector_settings, collector_rate_limit_per_second=0.2, collector_rate_limit_burst=2
    )
    async with running_collector(settings, make_registry(tokens)) as running:
        url = f"{running.url}/v1/events"
        body = {"data": [tag("r-1", user_id=None)]}
        answers = [await post(url, body, tokens.shop) for _ in range(3)]
        other = await post(url, {"data": [tag("r-2", user_id=None)]}, tokens.other)
        async with aiohttp.ClientSession() as http, http.get(f"{running.url}/metrics") as r:
            text = await r.text()

    assert [status for status, _, _ in answers] == [200, 200, 429]
    assert int(answers[2][1]["Retry-After"]) >= 1
    assert other[0] == 200, "the limit is per advertiser"
    assert metric(text, "pipeline_collector_rate_limited_total", dialect="native") == 1


async def test_replicas_found_through_the_peers_name_share_the_rate_limit(
    collector_settings: Settings, tokens: Tokens
) -> None:
    # "localhost" stands for a headless Service: each address it resolves to is a replica.
    replicas = len(
        {a[4][0] for a in socket.getaddrinfo("localhost", None, type=socket.SOCK_STREAM)}
    )
    settings = configured(
        collector_settings,
        collector_rate_limit_per_second=0.01,
        collector_rate_limit_burst=2 * replicas,
        collector_peers="localhost",
    )
    async with running_collector(settings, make_registry(tokens)) as running:
        url = f"{running.url}/v1/events"
        body = {"data": [tag("p-1", user_id=None)]}
        answers = [await post(url, body, tokens.shop) for _ in range(3)]
        async with aiohttp.ClientSession() as http, http.get(f"{running.url}/metrics") as r:
            text = await r.text()

    assert metric(text, "pipeline_collector_replicas") == replicas
    assert [status for status, _, _ in answers] == [200, 200, 429], "a burst of 2 per replica"


@pytest.mark.parametrize("click", ["clk-é", "clk\x00", "c" * 257])
async def test_a_click_id_the_worker_could_not_carry_is_rejected_naming_the_field(
    collector: Running, tokens: Tokens, click: str
) -> None:
    batch = [
        tag("click-good", user_id=None, user_data={"click_id": "clk-fine"}),
        tag("click-bad", user_id=None, user_data={"click_id": click}),
    ]

    status, _, body = await post(f"{collector.url}/v1/events", {"data": batch}, tokens.shop)

    assert status == 200
    assert [r["status"] for r in body["results"]] == ["accepted", "rejected"]
    assert body["results"][1]["reason"] == "schema_violation"
    assert body["results"][1]["error"].startswith("user_data.click_id")
    raw = await read_raw(collector.settings, 1)
    assert set(by_event_id(raw[catalogue.RAW_TAG.name])) == {"click-good"}


async def test_the_beacon_honours_dnt_gpc_and_the_optout_cookie(collector: Running) -> None:
    query = {"advertiser_id": "shop-1", "cookie_id": "ck-px"}
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
        async with http.get(f"{collector.url}/v1/tag", params={"event_id": "px-bad"}) as response:
            assert response.status == 400, "a bad pixel is answered, never a 500"
            assert await response.read() == PIXEL
            assert response.headers["X-Rejected"] == "schema_violation; advertiser_id: missing"
        async with http.get(
            f"{collector.url}/v1/tag", params={**query, "event_id": "px-user", "user_id": "u"}
        ) as response:
            assert response.status == 400
            assert "cannot name a user" in response.headers["X-Rejected"]
        async with http.get(
            f"{collector.url}/v1/tag", params={"advertiser_id": "nobody", "event_id": "px-unknown"}
        ) as response:
            assert response.status == 200, "an unregistered pixel still gets its GIF"
            assert await response.read() == PIXEL
        async with http.get(f"{collector.url}/metrics") as response:
            text = await response.text()

    raw = await read_raw(collector.settings, 2, [catalogue.RAW_TAG])
    events = {r.json()["event_id"]: r.json() for r in raw[catalogue.RAW_TAG.name]}
    assert set(events) == {"px-signals", "px-plain"}
    assert events["px-signals"]["browser"] == {
        "cookie_id": "ck-px",
        "dnt": True,
        "gpc": True,
        "daa_opt_out": True,
    }
    assert events["px-plain"]["browser"]["dnt"] is False
    assert events["px-plain"]["user_data"]["client_ip_address"] == "127.0.0.1"
    assert metric(text, "pipeline_collector_unregistered_beacons_total", dialect="tag") == 1


async def test_a_widget_post_carries_the_browser_signals(
    collector: Running, tokens: Tokens
) -> None:
    widget = {
        "event_id": "w-1",
        "event_name": "save_click",
        "event_time": now() - 1,
        "user_id": "user-w",
        "site_domain": "blog.example.org",
        "widget_type": "save_button",
    }
    status, _, body = await post(
        f"{collector.url}/v1/widget", widget, tokens.trusted, headers={"DNT": "1"}
    )

    assert status == 200
    assert body["results"] == [
        {"index": 0, "status": "accepted", "event_id": "w-1", "topic": catalogue.RAW_WIDGET.name}
    ]
    raw = await read_raw(collector.settings, 1, [catalogue.RAW_WIDGET])
    [record] = raw[catalogue.RAW_WIDGET.name]
    assert record.key == b"user-w"
    assert record.json()["browser"]["dnt"] is True
    assert "advertiser_id" not in record.json(), "a widget event names an advertiser only if sent"
    assert is_trusted(TRUST_KEY.encode(), record.value, record.header(TRUST_HEADER))


async def test_request_limits_are_answered_with_4xx(collector: Running, tokens: Tokens) -> None:
    url = f"{collector.url}/v1/events"
    too_many = {"data": [tag(f"n-{i}", user_id=None) for i in range(11)]}
    too_large = b'{"data": ["' + b"x" * (2 * 1024 * 1024) + b'"]}'
    async with aiohttp.ClientSession(headers=auth(tokens.shop)) as http:
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


async def test_503_with_retry_after_once_the_producer_is_stopped(
    collector: Running, tokens: Tokens
) -> None:
    await collector.collector.producer.stop()

    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{collector.url}/v1/events", json={"data": [tag("s-1")]}, headers=auth(tokens.shop)
        ) as r:
            assert r.status == 503
            assert r.headers["Retry-After"] == "5"
        async with http.get(f"{collector.url}/v1/tag", params={"advertiser_id": "shop-1"}) as r:
            assert r.status == 503
            assert r.headers["Retry-After"] == "5"
            assert await r.read() == PIXEL
        async with http.get(f"{collector.url}/metrics") as r:
            assert metric(await r.text(), "pipeline_collector_kafka_available") == 0


async def test_metrics_name_dialects_and_outcomes_never_tokens_or_people(
    collector: Running, tokens: Tokens
) -> None:
    await post(
        f"{collector.url}/v1/events",
        {"data": [tag("m-1", user_data={"em": [RAW_EMAIL]})]},
        tokens.trusted,
    )
    await post(f"{collector.url}/v1/events", {"data": [tag("m-2")]}, "wrong")
    async with aiohttp.ClientSession() as http, http.get(f"{collector.url}/metrics") as r:
        assert r.status == 200
        text = await r.text()

    assert metric(text, "pipeline_collector_requests_total", dialect="native", outcome="ok") == 1
    assert (
        metric(text, "pipeline_collector_requests_total", dialect="native", outcome="unauthorized")
        == 1
    )
    assert (
        metric(text, "pipeline_collector_events_total", dialect="native", outcome="accepted") == 1
    )
    assert metric(text, "pipeline_collector_kafka_available") == 1
    assert metric(text, "pipeline_collector_registry_advertisers") == 2
    for secret in (
        tokens.trusted,
        tokens.shop,
        "wrong",
        "Jane",
        "user-http",
        "shop-1",
        "127.0.0.1",
    ):
        assert secret not in text


async def test_a_registry_change_is_picked_up_while_running(
    collector_settings: Settings, tokens: Tokens, tmp_path: Path
) -> None:
    path = tmp_path / "advertisers.yaml"
    registry = make_registry(tokens)
    save_registry(path, registry)
    settings = configured(
        collector_settings, advertisers_file=path, collector_registry_reload_seconds=0.1
    )
    newcomer = new_token()
    async with running_collector(settings, registry) as running:
        url = f"{running.url}/v1/events"
        body = {"data": [tag("reg-1", user_id=None)]}
        assert (await post(url, body, newcomer))[0] == 401
        save_registry(path, registry.with_new_token("shop-3", newcomer, now=0)[0])
        await asyncio.sleep(0.5)
        assert (await post(url, body, newcomer))[0] == 200
        path.write_text("advertisers: [broken")
        await asyncio.sleep(0.5)
        assert (await post(url, body, newcomer))[0] == 200, "a bad file keeps the old registry"
        save_registry(path, registry)
        await asyncio.sleep(0.5)
        assert (await post(url, body, newcomer))[0] == 401, "a revoked token stops working"


def _collect_command(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    env = process_env(settings)
    if settings.advertisers_file is None:
        env.pop("PIPELINE_ADVERTISERS_FILE", None)
    if settings.trust_key is None:
        env.pop("PIPELINE_TRUST_KEY", None)
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "collect"],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def test_the_collect_command_answers_503_while_kafka_is_unreachable(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    tokens = Tokens()
    path = tmp_path / "advertisers.yaml"
    save_registry(path, make_registry(tokens))
    port = free_port()
    settings = settings_factory(
        kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
        collector_port=port,
        collector_retry_after_seconds=7,
        advertisers_file=path,
        trust_key=TRUST_KEY,
    )
    log = tmp_path / "collector.log"
    proc = _collect_command(settings, log)
    try:
        asyncio.run(_expect_503(f"http://127.0.0.1:{port}", tokens.shop))
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
    text = log.read_text()
    assert "cannot reach Kafka" in text
    assert tokens.shop not in text


async def _expect_503(url: str, token: str) -> None:
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
        async with http.post(
            f"{url}/v1/events", json={"data": [tag("u-1")]}, headers=auth(token)
        ) as r:
            assert r.status == 503
            assert r.headers["Retry-After"] == "7"
            assert "unavailable" in (await r.json())["error"]
        async with http.get(f"{url}/v1/tag", params={"advertiser_id": "shop-1"}) as r:
            assert r.status == 503
            assert r.headers["Retry-After"] == "7"


@pytest.mark.parametrize(
    ("registry", "trust_key", "message"),
    [
        (False, True, "PIPELINE_ADVERTISERS_FILE is required"),
        (True, False, "PIPELINE_TRUST_KEY is required"),
    ],
)
def test_the_collect_command_refuses_to_start_without_its_registry_or_trust_key(
    settings_factory: Callable[..., Settings],
    tmp_path: Path,
    registry: bool,
    trust_key: bool,
    message: str,
) -> None:
    path = tmp_path / "advertisers.yaml"
    save_registry(path, make_registry(Tokens()))
    settings = settings_factory(
        collector_port=free_port(),
        advertisers_file=path if registry else None,
        trust_key=TRUST_KEY if trust_key else None,
    )
    log = tmp_path / "collector.log"
    proc = _collect_command(settings, log)

    assert proc.wait(30) == 2
    assert message in log.read_text()
