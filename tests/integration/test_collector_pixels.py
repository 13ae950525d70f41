"""The Pinterest tag and Meta pixel beacons at the collector: the documented image tags,
the JavaScript tags' requests, cookies and browser signals, unregistered ids, Kafka away."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import pytest

from pipeline import catalogue
from pipeline.core.parse import ParseLimits, Rejected, parse_event
from pipeline.core.policy import PolicyConfig, decide
from pipeline.ingest.collector import PIXEL
from tests.integration import documented
from tests.integration.collector_io import (
    PIXEL_ID,
    TAG_ID,
    RawRecord,
    Running,
    by_event_id,
    metric,
    read_raw,
)

pytestmark = pytest.mark.integration

HASH = "f660ab912ec121d1b1e928a0bb4bc61b15f5ad44d5efdc4e1c92a25e99b8e44a"
BROWSER = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"}


async def beacon(
    collector: Running,
    path: str,
    headers: dict[str, str] | None = None,
    *,
    method: str = "GET",
    data: Any = None,
) -> tuple[int, dict[str, str]]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(
            method,
            f"{collector.url}{path}",
            headers={**BROWSER, **(headers or {})},
            data=data,
        ) as response,
    ):
        assert response.content_type == "image/gif"
        assert await response.read() == PIXEL
        return response.status, dict(response.headers)


def reasons(record: RawRecord) -> tuple[str, ...]:
    event = parse_event("tag", record.value, now=time.time(), limits=ParseLimits(require_key=False))
    assert not isinstance(event, Rejected), event
    return decide(event, None, PolicyConfig()).reasons


async def test_the_documented_pinterest_image_tags(collector: Running) -> None:
    ldp = documented.PINTEREST_LDP_IMAGE_TAG.replace("YOUR_TAG_ID", TAG_ID)
    base = documented.PINTEREST_BASE_NOSCRIPT.replace("YOUR_TAG_ID", TAG_ID).replace(
        "<hashed_email_address>", HASH
    )

    assert (await beacon(collector, ldp))[0] == 200
    assert (await beacon(collector, base))[0] == 200

    raw = await read_raw(collector.settings, 2, [catalogue.RAW_TAG])
    records = raw[catalogue.RAW_TAG.name]
    checkout = next(r for r in records if r.json()["event_name"] == "checkout")
    visit = next(r for r in records if r.json()["event_name"] == "page_visit")
    assert checkout.json()["event_id"] == "YOUR_EVENT_ID"
    assert checkout.json()["advertiser_id"] == "shop-1"
    assert checkout.json()["custom_data"]["num_items"] == 2
    assert "event.ldp" in reasons(checkout), "pd[opt_out_type]=LDP"
    assert visit.json()["user_data"]["em"] == [HASH]
    assert "event.ldp" not in reasons(visit)


async def test_the_pinterest_javascript_tag_with_its_cookies_and_signals(
    collector: Running,
) -> None:
    query = {
        "tid": TAG_ID,
        "event": "AddToCart",
        "ed": '{"value":"19.90","currency":"USD","eventID":"js-1",'
        '"line_items":[{"product_id":"7"}]}',
        "pd": '{"em":"' + HASH + '"}',
        "ad": '{"loc":"https://shop.example.com/p/7","if":false}',
        "cb": "1700000000000",
    }
    headers = {
        "DNT": "1",
        "Sec-GPC": "1",
        "Cookie": "_epik=dj0yJnU9epik; _pin_unauth=dWlkPQ; optout=1",
    }
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{collector.url}/v3/", params=query, headers=headers) as response:
            assert response.status == 200
        async with http.post(
            f"{collector.url}/v3/",
            data={**query, "ed": '{"eventID":"js-2"}', "event": "checkout"},
            headers=BROWSER,
        ) as response:
            assert response.status == 200, "the tag's POST fallback"

    raw = await read_raw(collector.settings, 2, [catalogue.RAW_TAG])
    records = by_event_id(raw[catalogue.RAW_TAG.name])
    first = records["js-1"].json()
    assert first["event_name"] == "add_to_cart"
    assert first["user_data"]["click_id"] == "dj0yJnU9epik"
    assert first["browser"] == {
        "cookie_id": "dWlkPQ",
        "dnt": True,
        "gpc": True,
        "daa_opt_out": True,
    }
    assert first["event_source_url"] == "https://shop.example.com/p/7"
    assert {"browser.dnt", "browser.gpc", "browser.daa_opt_out"} <= set(reasons(records["js-1"]))
    assert records["js-2"].json()["event_name"] == "checkout"


async def test_the_documented_meta_image_tags(collector: Running) -> None:
    paths = [
        documented.META_PIXEL_NOSCRIPT.replace("{pixel-id}", PIXEL_ID),
        documented.META_PIXEL_IMAGE_TAG.replace("{pixel-id}", PIXEL_ID),
        documented.META_PIXEL_LDU_CALIFORNIA.replace("{pixel_id}", PIXEL_ID).replace(
            "ev=Purchase", "ev=Lead"
        ),
        documented.META_PIXEL_LDU_GEOLOCATION.replace("{pixel_id}", PIXEL_ID).replace(
            "ev=Purchase", "ev=Search"
        ),
    ]

    for path in paths:
        assert (await beacon(collector, path))[0] == 200

    raw = await read_raw(collector.settings, 4, [catalogue.RAW_TAG])
    by_name = {r.json()["event_name"]: r for r in raw[catalogue.RAW_TAG.name]}
    assert set(by_name) == {"page_visit", "checkout", "lead", "search"}
    assert by_name["checkout"].json()["custom_data"]["content_ids"] == ["1234"]
    assert "event.ldp" not in reasons(by_name["checkout"])
    assert "event.ldp" in reasons(by_name["lead"]), "dpo=LDU"
    assert "event.ldp" in reasons(by_name["search"]), "the documented vdpo=LDU"


async def test_the_meta_pixel_reads_the_fbp_and_fbc_cookies(collector: Running) -> None:
    cookies = "_fbp=fb.1.1558571054389.1098115397; _fbc=fb.1.1554763741205.IwAR2clickid"
    status, _ = await beacon(
        collector,
        f"/tr/?id={PIXEL_ID}&ev=ViewContent&eid=px-1&dl=https%3A%2F%2Fshop.example.com%2F",
        {"Cookie": cookies},
    )
    posted, _ = await beacon(
        collector,
        "/tr/",
        method="POST",
        data={
            "id": PIXEL_ID,
            "ev": "Purchase",
            "eid": "px-2",
            "cd[value]": "9.99",
            "rqm": "formPOST",
        },
    )

    assert (status, posted) == (200, 200)
    raw = await read_raw(collector.settings, 2, [catalogue.RAW_TAG])
    records = by_event_id(raw[catalogue.RAW_TAG.name])
    assert records["px-1"].json()["user_data"]["click_id"] == "IwAR2clickid"
    assert records["px-1"].json()["browser"]["cookie_id"] == "fb.1.1558571054389.1098115397"
    assert records["px-2"].json()["custom_data"]["value"] == "9.99"


async def test_unregistered_tags_and_pixels_get_their_gif_and_are_counted_not_written(
    collector: Running,
) -> None:
    for path in ("/v3/?tid=999&event=checkout", "/tr?id=999&ev=Purchase", "/tr?ev=Purchase"):
        assert (await beacon(collector, path))[0] == 200
    async with aiohttp.ClientSession() as http, http.get(f"{collector.url}/metrics") as r:
        text = await r.text()

    raw = await read_raw(collector.settings, 0, [catalogue.RAW_TAG], settle_s=1.0)
    assert raw[catalogue.RAW_TAG.name] == []
    name = "pipeline_collector_unregistered_beacons_total"
    assert metric(text, name, dialect="pinterest_tag") == 1
    assert metric(text, name, dialect="meta_pixel") == 2


async def test_a_beacon_that_cannot_be_read_is_a_400_gif_naming_the_field(
    collector: Running,
) -> None:
    status, headers = await beacon(collector, f"/v3/?tid={TAG_ID}&event=lead&pd={{broken")
    bad_value, value_headers = await beacon(collector, f"/tr?id={PIXEL_ID}&ev=Lead&cd[value]=lots")

    assert status == bad_value == 400
    assert headers["X-Rejected"] == "schema_violation; pd: not a JSON object"
    assert value_headers["X-Rejected"] == "schema_violation; custom_data.value: value_error"


async def test_kafka_away_is_a_503_gif_with_retry_after(collector: Running) -> None:
    await collector.collector.producer.stop()

    for path in (f"/v3/?tid={TAG_ID}&event=checkout", f"/tr?id={PIXEL_ID}&ev=Purchase"):
        status, headers = await beacon(collector, path)
        assert status == 503
        assert headers["Retry-After"] == "5"
