"""Meta Conversions API at the collector: the official Business SDK (sync, async and
HTTP-service paths), the documented requests byte for byte (curl included), what lands in
Kafka, and how it is decided."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
import requests
from facebook_business.adobjects.serverside.action_source import ActionSource
from facebook_business.adobjects.serverside.app_data import AppData
from facebook_business.adobjects.serverside.custom_data import CustomData
from facebook_business.adobjects.serverside.event import Event
from facebook_business.adobjects.serverside.event_request import EventRequest
from facebook_business.adobjects.serverside.event_request_async import EventRequestAsync
from facebook_business.adobjects.serverside.event_response import EventResponse
from facebook_business.adobjects.serverside.extended_device_info import ExtendedDeviceInfo
from facebook_business.adobjects.serverside.http_service_interface import HttpServiceInterface
from facebook_business.adobjects.serverside.user_data import UserData
from facebook_business.api import FacebookAdsApi
from facebook_business.exceptions import FacebookRequestError
from facebook_business.session import FacebookSession

from pipeline import catalogue
from pipeline.core.parse import ParseLimits, Rejected, parse_event
from pipeline.core.policy import PolicyConfig, decide
from schemas import normalize
from schemas.events import Event as SpecEvent
from schemas.events import Source
from tests.integration import documented
from tests.integration.collector_io import (
    OTHER_PIXEL_ID,
    PIXEL_ID,
    RawRecord,
    Running,
    Tokens,
    by_event_id,
    read_raw,
)

pytestmark = pytest.mark.integration

FBC = "fb.1.1554763741205.AbCdEfGhIjKlMnOpQrStUvWxYz1234567890"
FBP = "fb.1.1558571054389.1098115397"


@pytest.fixture
def graph(collector: Running) -> Iterator[str]:
    """Point the SDK's class-level Graph URL (async and HTTP-service paths) at the collector."""
    saved = FacebookSession.GRAPH
    FacebookSession.GRAPH = collector.url
    try:
        yield collector.url
    finally:
        FacebookSession.GRAPH = saved


def init_api(collector: Running, token: str, **kwargs: Any) -> FacebookAdsApi:
    api = FacebookAdsApi.init(access_token=token, crash_log=False, **kwargs)
    api._session.GRAPH = collector.url
    return api


def now() -> int:
    return int(time.time())


def website_purchase(event_id: str | None = "web-1") -> Event:
    return Event(
        event_name="Purchase",
        event_time=now() - 30,
        user_data=UserData(
            email="Joe.Buyer@Example.com ",
            phone="+1 (650) 555-1212",
            client_ip_address="203.0.113.7",
            client_user_agent="Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
            fbc=FBC,
            fbp=FBP,
            external_id="customer-42",
        ),
        custom_data=CustomData(value=123.45, currency="USD", content_ids=["sku-1"]),
        event_source_url="https://shop.example.com/checkout",
        event_id=event_id,
        action_source=ActionSource.WEBSITE,
        data_processing_options=["LDU"],
        data_processing_options_country=0,
        data_processing_options_state=0,
    )


def app_event(version: str, event_id: str, tracking: bool) -> Event:
    return Event(
        event_name="CompleteRegistration",
        event_time=now() - 20,
        event_id=event_id,
        action_source=ActionSource.APP,
        user_data=UserData(madid="38400000-8cf0-11bd-b23e-10b96e40000d", anon_id="install-7"),
        app_data=AppData(
            advertiser_tracking_enabled=tracking,
            application_tracking_enabled=True,
            extinfo=ExtendedDeviceInfo(
                ext_info_version=version,
                app_package_name="com.example.shop",
                short_version="3.1",
                long_version="3.1.4",
                os_version="17.5" if version == "i2" else "14",
                device_model_name="Phone",
                locale="en_US",
                timezone_abbreviation="PST",
                carrier="Carrier",
                screen_width=1080,
                screen_height=2400,
                screen_density="2.75",
                cpu_core_count=8,
                total_disk_space_gb=128,
                free_disk_space_gb=64,
                device_time_zone="America/Los_Angeles",
            ),
        ),
    )


def decided(record: RawRecord, source: Source) -> tuple[SpecEvent, tuple[str, ...]]:
    event = parse_event(
        source, record.value, now=time.time(), limits=ParseLimits(require_key=False)
    )
    assert not isinstance(event, Rejected), event
    return event, decide(event, None, PolicyConfig()).reasons


async def test_sdk_events_land_in_kafka_with_ldu_att_and_click_ids(
    collector: Running, tokens: Tokens
) -> None:
    init_api(collector, tokens.shop, app_secret="app-secret-for-proof")
    offline = Event(
        event_name="Purchase",
        event_time=now() - 10,
        event_id="store-1",
        action_source=ActionSource.PHYSICAL_STORE,
        user_data=UserData(emails=["joe.buyer@example.com"]),
        custom_data=CustomData(value=20.0, currency="EUR"),
    )
    events = [
        website_purchase(),
        app_event("i2", "ios-1", tracking=False),
        app_event("a2", "android-1", tracking=False),
        offline,
    ]

    response = await asyncio.to_thread(EventRequest(pixel_id=PIXEL_ID, events=events).execute)

    assert isinstance(response, EventResponse)
    assert response.events_received == 4
    assert response.messages == []
    assert response.fbtrace_id
    raw = await read_raw(collector.settings, 4)
    [web] = raw[catalogue.RAW_TAG.name]
    apps = by_event_id(raw[catalogue.RAW_SDK.name])
    assert set(apps) == {"ios-1", "android-1", "store-1"}

    event, reasons = decided(web, "tag")
    assert event.event_name == "checkout"
    assert event.advertiser_id == "shop-1"
    assert "event.ldp" in reasons, "data_processing_options LDU"
    assert event.user_data is not None
    assert event.user_data.click_id == "AbCdEfGhIjKlMnOpQrStUvWxYz1234567890"
    assert event.user_data.em == (normalize.sha256_hex("joe.buyer@example.com"),)
    assert event.browser is not None
    assert event.browser.cookie_id == FBP
    assert b"Joe" not in web.value

    ios, ios_reasons = decided(apps["ios-1"], "sdk")
    assert ios.action_source == "app_ios"
    assert "device.att_not_authorized" in ios_reasons, "advertiser_tracking_enabled false"
    assert apps["ios-1"].json()["device"]["device_id"] == "install-7"

    android, android_reasons = decided(apps["android-1"], "sdk")
    assert android.action_source == "app_android"
    assert "device.ads_opt_out" in android_reasons
    assert "device.att_not_authorized" not in android_reasons

    store, _ = decided(apps["store-1"], "sdk")
    assert store.action_source == "offline"


async def test_a_test_event_code_is_answered_and_writes_nothing(
    collector: Running, tokens: Tokens
) -> None:
    init_api(collector, tokens.shop)
    request = EventRequest(
        pixel_id=PIXEL_ID, events=[website_purchase("t-1")], test_event_code="TEST123"
    )

    response = await asyncio.to_thread(request.execute)

    assert response.events_received == 1
    raw = await read_raw(collector.settings, 0, settle_s=1.0)
    assert all(records == [] for records in raw.values())


async def test_a_missing_event_id_is_derived_so_a_retry_deduplicates(
    collector: Running, tokens: Tokens
) -> None:
    init_api(collector, tokens.shop)
    event = website_purchase(None)

    for _ in range(2):
        await asyncio.to_thread(EventRequest(pixel_id=PIXEL_ID, events=[event]).execute)

    raw = await read_raw(collector.settings, 2)
    ids = [record.json()["event_id"] for record in raw[catalogue.RAW_TAG.name]]
    assert len(ids) == 2
    assert ids[0] == ids[1]
    assert ids[0].startswith("meta:")


@pytest.mark.parametrize(
    ("which", "pixel", "status", "code"),
    [
        ("wrong", PIXEL_ID, 401, 190),
        ("other", PIXEL_ID, 403, 200),
        ("shop", OTHER_PIXEL_ID, 403, 200),
        ("shop", "555", 403, 200),
    ],
)
async def test_the_sdk_raises_graph_errors_for_refused_calls(
    collector: Running, tokens: Tokens, which: str, pixel: str, status: int, code: int
) -> None:
    token = {"wrong": "EAAB-not-a-token", "shop": tokens.shop, "other": tokens.other}[which]
    init_api(collector, token)

    with pytest.raises(FacebookRequestError) as raised:
        await asyncio.to_thread(EventRequest(pixel_id=pixel, events=[website_purchase()]).execute)

    assert raised.value.http_status() == status
    assert raised.value.api_error_code() == code
    assert raised.value.api_error_type() == "OAuthException"
    raw = await read_raw(collector.settings, 0, settle_s=0.5)
    assert all(records == [] for records in raw.values())


async def test_one_invalid_event_rejects_the_whole_batch(
    collector: Running, tokens: Tokens
) -> None:
    init_api(collector, tokens.shop)
    old = website_purchase("old-1")
    old.event_time = now() - 8 * 86400

    with pytest.raises(FacebookRequestError) as raised:
        await asyncio.to_thread(
            EventRequest(pixel_id=PIXEL_ID, events=[website_purchase("fine-1"), old]).execute
        )

    assert raised.value.http_status() == 400
    assert raised.value.api_error_code() == 100
    assert "data[1]" in raised.value.api_error_message()
    assert "too_old" in raised.value.api_error_message()
    raw = await read_raw(collector.settings, 0, settle_s=1.0)
    assert raw[catalogue.RAW_TAG.name] == [], "Meta: we reject the entire batch"


async def test_the_async_request_sends_its_token_in_the_form_body(
    collector: Running, tokens: Tokens, graph: str
) -> None:
    init_api(collector, tokens.shop)

    response = await EventRequestAsync(
        pixel_id=PIXEL_ID, events=[website_purchase("async-1")]
    ).execute()

    assert response.events_received == 1
    raw = await read_raw(collector.settings, 1)
    assert set(by_event_id(raw[catalogue.RAW_TAG.name])) == {"async-1"}


class RequestsClient(HttpServiceInterface):  # type: ignore[misc]
    """The SDK's HTTP-service hook, implemented with requests (repeated `data` fields)."""

    def execute(
        self, url: str, method: str, request_options: Any, headers: Any, params: Any
    ) -> EventResponse:
        answer = requests.request(method, url, data=params, headers=headers, timeout=30).json()
        return EventResponse(
            answer.get("events_received"), answer.get("messages"), answer.get("fbtrace_id")
        )


async def test_the_http_service_hook_sends_repeated_data_fields(
    collector: Running, tokens: Tokens, graph: str
) -> None:
    init_api(collector, "unused")
    request = EventRequest(
        pixel_id=PIXEL_ID,
        events=[website_purchase("hook-1"), website_purchase("hook-2")],
        http_client=RequestsClient(),
        access_token=tokens.shop,
    )

    response = await asyncio.to_thread(request.execute)

    assert response.events_received == 2
    raw = await read_raw(collector.settings, 2)
    assert set(by_event_id(raw[catalogue.RAW_TAG.name])) == {"hook-1", "hook-2"}


async def post(
    collector: Running, body: bytes | str, content_type: str, query: str = ""
) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{collector.url}/v25.0/{PIXEL_ID}/events{query}",
            data=body.encode() if isinstance(body, str) else body,
            headers={"Content-Type": content_type},
        ) as response,
    ):
        return response.status, await response.json()


async def test_the_documented_curl_request_with_curl_itself(
    collector: Running, tokens: Tokens
) -> None:
    data = documented.at(
        documented.META_USING_THE_API_CURL_DATA, documented.META_USING_THE_API_CURL_TIME, now() - 60
    )
    proc = await asyncio.create_subprocess_exec(
        "curl",
        "-sS",
        "-X",
        "POST",
        "-F",
        f"data={data}",
        "-F",
        f"access_token={tokens.shop}",
        f"{collector.url}/v25.0/{PIXEL_ID}/events",
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()

    answer = json.loads(out)
    assert answer["events_received"] == 1
    assert set(answer) == {"events_received", "messages", "fbtrace_id"}
    raw = await read_raw(collector.settings, 1)
    [record] = raw[catalogue.RAW_TAG.name]
    _, reasons = decided(record, "tag")
    assert record.json()["user_data"]["click_id"] == "AbCdEfGhIjKlMnOpQrStUvWxYz1234567890"
    assert record.json()["custom_data"]["content_ids"] == ["product123"]
    assert "event.ldp" not in reasons


async def test_the_documented_json_body_with_its_event_without_an_id(
    collector: Running, tokens: Tokens
) -> None:
    body = documented.at(
        documented.META_USING_THE_API_BODY, documented.META_USING_THE_API_TIME, now() - 60
    )

    status, answer = await post(collector, body, "application/json", f"?access_token={tokens.shop}")

    assert (status, answer["events_received"]) == (200, 2), answer
    raw = await read_raw(collector.settings, 2)
    records = by_event_id(raw[catalogue.RAW_TAG.name])
    assert "event.id.123" in records
    [derived] = [event_id for event_id in records if event_id.startswith("meta:")]
    assert records["event.id.123"].json()["event_source_url"] == (
        "http://jaspers-market.com/product/123"
    )
    assert records[derived].json()["user_data"]["client_ip_address"] == "192.88.9.9"


async def test_the_documented_test_events_body_writes_nothing(
    collector: Running, tokens: Tokens
) -> None:
    body = documented.at(
        documented.META_TEST_EVENTS_BODY, documented.META_TEST_EVENTS_TIME, now() - 60
    )

    status, answer = await post(collector, body, "application/json", f"?access_token={tokens.shop}")

    assert (status, answer["events_received"]) == (200, 1)
    raw = await read_raw(collector.settings, 0, settle_s=1.0)
    assert all(records == [] for records in raw.values())


async def test_the_pixel_events_reference_form_example(collector: Running, tokens: Tokens) -> None:
    body = documented.at(
        documented.META_PIXEL_EVENTS_FORM, documented.META_PIXEL_EVENTS_TIME, now() - 60
    )

    status, answer = await post(
        collector, body, "application/x-www-form-urlencoded", f"?access_token={tokens.shop}"
    )

    assert (status, answer["events_received"]) == (200, 1), answer
    raw = await read_raw(collector.settings, 1)
    [record] = raw[catalogue.RAW_TAG.name]
    assert record.json()["event_name"] == "page_visit"
    assert record.json()["user_data"]["em"] == [
        "309a0a5c3e211326ae75ca18196d301a9bdbd1a882a4d2569511033da23f0abd"
    ]


async def test_the_captured_sdk_form_body_byte_for_byte(collector: Running, tokens: Tokens) -> None:
    with_test = documented.at(documented.META_SDK_FORM, documented.META_SDK_TIME, now() - 60)
    without = with_test.removeprefix("test_event_code=TEST123&")
    query = f"?access_token={tokens.shop}&appsecret_proof=569e7e451c8382f21a09115351ecfce0f6"

    tested = await post(collector, with_test, "application/x-www-form-urlencoded", query)
    written = await post(collector, without, "application/x-www-form-urlencoded", query)

    assert tested[0] == written[0] == 200
    raw = await read_raw(collector.settings, 1)
    [record] = raw[catalogue.RAW_TAG.name]
    assert record.json()["event_id"] == "evt-1"
    _, reasons = decided(record, "tag")
    assert "event.ldp" in reasons


@pytest.mark.parametrize(
    ("template", "ldp", "messages"),
    [
        (
            documented.META_LDU_GEOLOCATION,
            True,
            ["data[0].user_data.client_ip_address is not an IP address; it was ignored"],
        ),
        (documented.META_LDU_CALIFORNIA, True, []),
        (documented.META_NO_LDU, False, []),
    ],
)
async def test_the_documented_data_processing_options_examples(
    collector: Running, tokens: Tokens, template: str, ldp: bool, messages: list[str]
) -> None:
    body = (
        template.replace("<EVENT_TIME>", str(now() - 60))
        .replace("<EMAIL>", "jane.doe@example.com")
        .replace("<CURRENCY>", "USD")
        .replace("<VALUE>", "42.00")
    )

    status, answer = await post(collector, body, "application/json", f"?access_token={tokens.shop}")

    assert status == 200, answer
    assert answer["messages"] == messages
    raw = await read_raw(collector.settings, 1)
    [record] = raw[catalogue.RAW_TAG.name]
    event, reasons = decided(record, "tag")
    assert ("event.ldp" in reasons) is ldp
    assert event.custom_data is not None
    assert event.custom_data.value == 42.0
    assert b"jane" not in record.value


async def test_a_json_body_sent_as_a_form_is_read_as_json(
    collector: Running, tokens: Tokens
) -> None:
    """`curl -d '{"data": [...]}'` (the Gateway guide) sends the form content type."""
    body = json.dumps(
        {
            "data": [
                {
                    "event_name": "Lead",
                    "event_time": now() - 5,
                    "user_data": {"em": "a" * 64},
                    "action_source": "system_generated",
                }
            ],
            "access_token": tokens.shop,
        }
    )

    status, answer = await post(collector, body, "application/x-www-form-urlencoded")

    assert (status, answer["events_received"]) == (200, 1)
    raw = await read_raw(collector.settings, 1)
    assert len(raw[catalogue.RAW_SDK.name]) == 1


async def test_kafka_away_is_a_transient_graph_error_with_retry_after(
    collector: Running, tokens: Tokens
) -> None:
    await collector.collector.producer.stop()
    init_api(collector, tokens.shop)

    with pytest.raises(FacebookRequestError) as raised:
        await asyncio.to_thread(
            EventRequest(pixel_id=PIXEL_ID, events=[website_purchase()]).execute
        )

    assert raised.value.http_status() == 503
    assert raised.value.api_error_code() == 2
    assert raised.value.api_transient_error() is True
    assert raised.value.http_headers()["Retry-After"] == "5"


@pytest.mark.parametrize("click", ["clk-é", "clk\x7f"])
async def test_an_fbc_whose_click_id_the_worker_could_not_carry_rejects_the_batch(
    collector: Running, tokens: Tokens, click: str
) -> None:
    init_api(collector, tokens.shop)
    bad = website_purchase("fbc-bad")
    bad.user_data.fbc = f"fb.1.1554763741205.{click}"

    with pytest.raises(FacebookRequestError) as raised:
        await asyncio.to_thread(
            EventRequest(pixel_id=PIXEL_ID, events=[website_purchase("fbc-good"), bad]).execute
        )

    assert raised.value.http_status() == 400
    assert raised.value.api_error_code() == 100
    assert "data[1]" in raised.value.api_error_message()
    assert "click_id" in raised.value.api_error_message()
    raw = await read_raw(collector.settings, 0, settle_s=1.0)
    assert raw[catalogue.RAW_TAG.name] == []
