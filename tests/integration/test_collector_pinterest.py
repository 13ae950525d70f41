"""Pinterest Conversions API v5 at the collector: the official SDK, the documented
requests byte for byte, what lands in Kafka, and how it is decided."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pipeline import catalogue
from pipeline.core.parse import ParseLimits, Rejected, parse_event
from pipeline.core.policy import PolicyConfig, decide
from pipeline.settings import Settings
from schemas.events import Event, Source, TagEvent
from tests.integration import documented
from tests.integration.collector_io import (
    AD_ACCOUNT,
    OTHER_AD_ACCOUNT,
    TRUST_KEY,
    RawRecord,
    Running,
    Tokens,
    by_event_id,
    configured,
    make_registry,
    read_raw,
    run_pinterest_sdk,
    running_collector,
)

pytestmark = pytest.mark.integration

SDK_SCRIPT = Path(__file__).parent / "sdk_clients" / "pinterest_sdk.py"
EM = "411e44ce1261728ffd2c0686e44e3fffe413c0e2c5adc498bc7da883d476b9c8"
MAID = "0192518eb84137ccfe82c8b6322d29631dae7e28ed9d0f6dd5f245d73a58c5f1"
SDK_HEADERS = {
    # as pinterest-api-sdk 0.2.7 sends them (captured)
    "Accept-Encoding": "identity",
    "Accept": "application/json",
    "Content-Type": "application/json",
    "X-Pinterest-App-Type-Detailed": "12",
    "User-Agent": "pins-sdk/python/v0.2.7",
}


def now() -> int:
    return int(time.time())


def web_checkout(event_id: str) -> dict[str, Any]:
    return {
        "helper": True,
        "event_name": "checkout",
        "action_source": "web",
        "event_time": now() - 30,
        "event_id": event_id,
        "event_source_url": "https://shop.example.com/checkout",
        "user_data": {
            "em": [EM],
            "client_ip_address": "203.0.113.7",
            "client_user_agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
            "click_id": "dj0yJnU9click",
        },
        "custom_data": {
            "currency": "USD",
            "value": "72.39",
            "order_id": "o-1",
            "content_ids": ["sku-1"],
            "num_items": 1,
            "opt_out_type": "LDP",
        },
    }


def decided(record: RawRecord, source: Source) -> tuple[Event, tuple[str, ...]]:
    event = parse_event(
        source, record.value, now=time.time(), limits=ParseLimits(require_key=False)
    )
    assert not isinstance(event, Rejected), event
    return event, decide(event, None, PolicyConfig()).reasons


async def test_events_sent_through_the_sdk_land_in_kafka_with_their_privacy_flags(
    collector: Running, tokens: Tokens, tmp_path: Path
) -> None:
    ios = {
        "event_name": "add_to_cart",
        "action_source": "app_ios",
        "event_time": now() - 20,
        "event_id": "sdk-ios",
        "user_data": {"hashed_maids": [MAID]},
        "custom_data": {
            "value": "14.99",
            "currency": "USD",
            "contents": [{"id": "sku-2", "item_price": "14.99", "quantity": 1}],
        },
        "app_id": "429047995",
        "app_name": "Shop",
        "app_version": "7.9",
        "os_version": "17.5",
        "opt_out": False,
        "wifi": True,
    }
    android = {
        "helper": True,
        "event_name": "lead",
        "action_source": "app_android",
        "event_time": now() - 10,
        "event_id": "sdk-android",
        "user_data": {"hashed_maids": [MAID]},
        "custom_data": {},
        "os_version": "14",
        "opt_out": True,
    }

    result = await run_pinterest_sdk(
        collector,
        tmp_path,
        SDK_SCRIPT,
        {
            "token": tokens.shop,
            "ad_account_id": AD_ACCOUNT,
            "test": False,
            "events": [web_checkout("sdk-web"), ios, android],
        },
    )

    assert result["type"] == "ConversionApiResponse"
    assert result["response"]["num_events_received"] == 3
    assert result["response"]["num_events_processed"] == 3
    assert [e["status"] for e in result["response"]["events"]] == ["processed"] * 3
    raw = await read_raw(collector.settings, 3)
    [web] = raw[catalogue.RAW_TAG.name]
    apps = by_event_id(raw[catalogue.RAW_SDK.name])
    assert set(apps) == {"sdk-ios", "sdk-android"}

    event, reasons = decided(web, "tag")
    assert isinstance(event, TagEvent)
    assert event.advertiser_id == "shop-1"
    assert event.user_data is not None
    assert event.user_data.click_id == "dj0yJnU9click"
    assert event.custom_data is not None
    assert event.custom_data.value == 72.39
    assert "event.ldp" in reasons, "Pinterest's custom_data.opt_out_type LDP"

    ios_event, _ = decided(apps["sdk-ios"], "sdk")
    assert ios_event.action_source == "app_ios"
    assert apps["sdk-ios"].json()["app"] == {
        "app_id": "429047995",
        "app_name": "Shop",
        "app_version": "7.9",
    }
    assert apps["sdk-ios"].json()["device"] == {"os_version": "17.5"}
    assert apps["sdk-ios"].json()["custom_data"]["content_ids"] == ["sku-2"]

    _, android_reasons = decided(apps["sdk-android"], "sdk")
    assert {"event.opt_out", "device.ads_opt_out"} <= set(android_reasons)


async def test_the_sdk_test_mode_is_answered_and_writes_nothing(
    collector: Running, tokens: Tokens, tmp_path: Path
) -> None:
    result = await run_pinterest_sdk(
        collector,
        tmp_path,
        SDK_SCRIPT,
        {
            "token": tokens.shop,
            "ad_account_id": AD_ACCOUNT,
            "test": True,
            "events": [web_checkout("test-1")],
        },
    )

    assert result["response"]["num_events_processed"] == 1
    raw = await read_raw(collector.settings, 0, settle_s=1.0)
    assert all(records == [] for records in raw.values())


@pytest.mark.parametrize(
    ("which", "account", "error", "status", "code"),
    [
        ("wrong", AD_ACCOUNT, "UnauthorizedException", 401, 2),
        ("other", AD_ACCOUNT, "ForbiddenException", 403, 29),
        ("shop", OTHER_AD_ACCOUNT, "ForbiddenException", 403, 29),
        ("shop", "999", "ForbiddenException", 403, 29),
    ],
)
async def test_the_sdk_reads_refusals_as_pinterest_answers_them(
    collector: Running,
    tokens: Tokens,
    tmp_path: Path,
    which: str,
    account: str,
    error: str,
    status: int,
    code: int,
) -> None:
    token = {"wrong": "pina_not-a-token", "shop": tokens.shop, "other": tokens.other}[which]

    result = await run_pinterest_sdk(
        collector,
        tmp_path,
        SDK_SCRIPT,
        {"token": token, "ad_account_id": account, "test": False, "events": [web_checkout("x")]},
    )

    assert (result["error"], result["status"]) == (error, status)
    assert json.loads(result["body"])["code"] == code
    raw = await read_raw(collector.settings, 0, settle_s=0.5)
    assert all(records == [] for records in raw.values())


async def test_a_failed_event_is_a_422_the_sdk_raises_and_the_others_are_written(
    collector: Running, tokens: Tokens, tmp_path: Path
) -> None:
    bad = {**web_checkout("bad-1"), "event_name": "purchase"}

    result = await run_pinterest_sdk(
        collector,
        tmp_path,
        SDK_SCRIPT,
        {
            "token": tokens.shop,
            "ad_account_id": AD_ACCOUNT,
            "test": False,
            "events": [web_checkout("good-1"), bad],
        },
    )

    assert (result["error"], result["status"]) == ("ApiException", 422)
    body = json.loads(result["body"])
    assert body["message"] == "Not all events were successfully processed."
    assert body["details"]["num_events_processed"] == 1
    assert body["details"]["events"][1]["status"] == "failed"
    assert body["details"]["events"][1]["error_message"] == "event_name is not a v5 event name"
    raw = await read_raw(collector.settings, 1)
    assert set(by_event_id(raw[catalogue.RAW_TAG.name])) == {"good-1"}


async def post_raw(
    collector: Running, token: str, body: bytes, query: str = ""
) -> tuple[int, dict[str, str], Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{collector.url}/v5/ad_accounts/{AD_ACCOUNT}/events{query}",
            data=body,
            headers={**SDK_HEADERS, "Authorization": f"Bearer {token}"},
        ) as response,
    ):
        return response.status, dict(response.headers), await response.json()


async def test_the_captured_sdk_request_byte_for_byte(collector: Running, tokens: Tokens) -> None:
    body = documented.at(documented.PINTEREST_SDK_BODY, documented.PINTEREST_SDK_TIME, now() - 60)

    tested = await post_raw(collector, tokens.shop, body.encode(), "?test=True")
    written = await post_raw(collector, tokens.shop, body.encode(), "?test=False")

    expected = {
        "num_events_received": 1,
        "num_events_processed": 1,
        "events": [{"status": "processed", "error_message": "", "warning_message": ""}],
    }
    assert tested[0] == written[0] == 200
    assert tested[2] == written[2] == expected
    raw = await read_raw(collector.settings, 1)
    [record] = raw[catalogue.RAW_TAG.name]
    assert record.json()["event_id"] == "evt-1"
    assert record.json()["custom_data"]["value"] == "72.39"


async def test_the_openapi_example_event_byte_for_byte(collector: Running, tokens: Tokens) -> None:
    body = documented.PINTEREST_OPENAPI_EVENT.replace(
        str(documented.PINTEREST_OPENAPI_TIME).encode(), str(now() - 60).encode()
    )

    status, _, answer = await post_raw(collector, tokens.shop, body)

    assert status == 200, answer
    raw = await read_raw(collector.settings, 1)
    [record] = raw[catalogue.RAW_SDK.name]
    event, reasons = decided(record, "sdk")
    assert event.action_source == "app_ios"
    assert "event.ldp" in reasons
    assert record.json()["user_data"]["click_id"].startswith("dj0yJnU9")
    assert len(record.json()["user_data"]["hashed_maids"]) == 2


async def test_the_literal_openapi_example_is_too_old_and_fails_in_the_answer(
    collector: Running, tokens: Tokens
) -> None:
    status, _, answer = await post_raw(collector, tokens.shop, documented.PINTEREST_OPENAPI_EVENT)

    assert status == 422
    assert answer["details"]["events"][0]["error_message"] == "too_old: event_time: too_old"


async def test_a_body_outside_the_schema_is_a_400_error_object(
    collector: Running, tokens: Tokens
) -> None:
    event = json.loads(documented.PINTEREST_SDK_BODY)["data"][0]
    event["custom_data"]["category_name"] = "Uncategorized"

    status, _, answer = await post_raw(
        collector, tokens.shop, json.dumps({"data": [event]}).encode()
    )

    assert status == 400
    assert answer == {
        "code": 4196,
        "message": "Invalid request: data.0.custom_data: Additional properties are not allowed "
        "('category_name' was unexpected)",
    }


async def test_kafka_away_is_a_503_error_object_with_retry_after(
    collector: Running, tokens: Tokens
) -> None:
    await collector.collector.producer.stop()
    body = documented.at(documented.PINTEREST_SDK_BODY, documented.PINTEREST_SDK_TIME, now())

    status, headers, answer = await post_raw(collector, tokens.shop, body.encode())
    tested = await post_raw(collector, tokens.shop, body.encode(), "?test=true")

    assert status == 503
    assert headers["Retry-After"] == "5"
    assert answer["code"] == 4197
    assert tested[0] == 200, "test mode writes nothing, so it needs no Kafka"


async def test_the_rate_limit_is_a_429_error_object(
    pipeline_settings: Settings, tokens: Tokens
) -> None:
    settings = configured(
        pipeline_settings,
        trust_key=TRUST_KEY,
        collector_rate_limit_per_second=0.1,
        collector_rate_limit_burst=1,
    )
    body = documented.at(documented.PINTEREST_SDK_BODY, documented.PINTEREST_SDK_TIME, now())
    async with running_collector(settings, make_registry(tokens)) as running:
        first = await post_raw(running, tokens.shop, body.encode(), "?test=true")
        second = await post_raw(running, tokens.shop, body.encode(), "?test=true")

    assert first[0] == 200
    assert second[0] == 429
    assert second[2]["code"] == 8
    assert int(second[1]["Retry-After"]) >= 1


@pytest.mark.parametrize("click", ["clk-é", "clk\x01", "clk id", ""])
async def test_a_click_id_the_worker_could_not_carry_is_a_failed_event_naming_it(
    collector: Running, tokens: Tokens, tmp_path: Path, click: str
) -> None:
    bad = web_checkout("click-bad")
    bad["user_data"] = {**bad["user_data"], "click_id": click}

    result = await run_pinterest_sdk(
        collector,
        tmp_path,
        SDK_SCRIPT,
        {
            "token": tokens.shop,
            "ad_account_id": AD_ACCOUNT,
            "test": False,
            "events": [web_checkout("click-good"), bad],
        },
    )

    assert (result["error"], result["status"]) == ("ApiException", 422)
    failed = json.loads(result["body"])["details"]["events"][1]
    assert failed["status"] == "failed"
    assert "click_id" in failed["error_message"]
    raw = await read_raw(collector.settings, 1)
    assert set(by_event_id(raw[catalogue.RAW_TAG.name])) == {"click-good"}
