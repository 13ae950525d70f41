"""The Pinterest tag and Meta pixel beacons: each row names the document it follows.

Pinterest: [PIN-PARAMS] help article "Pinterest tag parameters and cookies" (`tid`,
`event`, `ed`, `pd`, `ad`, `cb`; the `_epik` and `_pin_unauth` cookies); [PIN-BASE] the
base code's `<noscript>` image tag; [PIN-LDP] "Use Limited Data Processing flag" (image
tag example with `pd[opt_out_type]=LDP`); [PIN-EVENTS] "Add event codes" (event names).
Meta: [FB-BASE] the pixel base code's `<noscript>` image; [FB-IMG] Meta Pixel advanced
guide, image-tag parameters (`cd[...]`) and advanced matching (`ud[...]`); [FB-DPO] "Data
Processing Options" image-tag examples (`dpo`, `dpoco`, `dpost`); [FB-COOKIES] "fbp and
fbc" (the `_fbp` and `_fbc` cookies).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from pipeline.core.parse import Rejected, parse_event
from pipeline.core.policy import PolicyConfig, decide
from pipeline.ingest.client import Prepared, prepare_event
from pipeline.ingest.dialects import Invalid, meta_pixel, pinterest_tag
from schemas import normalize
from schemas.events import TagEvent
from tests.unit.factories import NO_KEY, NOW

HASH = "f660ab912ec121d1b1e928a0bb4bc61b15f5ad44d5efdc4e1c92a25e99b8e44a"
COOKIE = "optout"
UA = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"}


def query(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


def pin(
    url: str, headers: dict[str, str] | None = None, cookies: dict[str, str] | None = None
) -> Any:
    return pinterest_tag.beacon_event(
        query(url),
        headers if headers is not None else UA,
        cookies or {},
        advertiser_id="shop-1",
        remote="203.0.113.9",
        now=NOW,
        new_event_id=lambda: "fresh",
        optout_cookie=COOKIE,
    )


def fb(
    url: str, headers: dict[str, str] | None = None, cookies: dict[str, str] | None = None
) -> Any:
    return meta_pixel.beacon_event(
        query(url),
        headers if headers is not None else UA,
        cookies or {},
        advertiser_id="shop-1",
        remote="203.0.113.9",
        now=NOW,
        new_event_id=lambda: "fresh",
        optout_cookie=COOKIE,
    )


def valid(event: dict[str, Any]) -> TagEvent:
    prepared = prepare_event("tag", event, now=NOW)
    assert isinstance(prepared, Prepared), prepared
    parsed = parse_event("tag", prepared.value, now=NOW, limits=NO_KEY)
    assert isinstance(parsed, TagEvent)
    return parsed


# -- Pinterest tag -----------------------------------------------------------------


def test_the_base_code_image_tag_is_a_page_visit_with_the_hashed_email() -> None:
    """[PIN-BASE] `?event=init&tid=<TAG_ID>&pd[em]=<hashed_email_address>&noscript=1`."""
    url = f"https://ct.pinterest.com/v3/?event=init&tid=2612345678901&pd[em]={HASH}&noscript=1"

    assert pinterest_tag.tag_id(query(url)) == "2612345678901"
    event = pin(url)

    assert event["event_name"] == "page_visit"
    assert event["user_data"]["em"] == [HASH]
    assert event["advertiser_id"] == "shop-1"
    valid(event)


def test_the_documented_ldp_image_tag_is_decided_with_event_ldp() -> None:
    """[PIN-LDP] the image tag with `pd[opt_out_type]=LDP`, `ed[value]=10.00`, ..."""
    url = (
        "https://ct.pinterest.com/v3/?tid=2612345678901&event=checkout"
        "&pd[opt_out_type]=LDP"
        "&pd[st]=4b650e5c4785025dee7bd65e3c5c527356717d7a1c0bfef5b4ada8ca1e9cbe17"
        "&pd[country]=9b202ecbc6d45c6d8901d989a918878397a3eb9d00e8f48022fc051b19d21a1d"
        "&ed[value]=10.00&ed[order_quantity]=2&ed[currency]=USD&ed[event_id]=YOUR_EVENT_ID"
        "&noscript=1"
    )

    event = pin(url)

    assert event["event_id"] == "YOUR_EVENT_ID"
    assert event["event_name"] == "checkout"
    assert event["custom_data"] == {
        "value": "10.00",
        "currency": "USD",
        "opt_out_type": "LDP",
        "num_items": 2,
    }
    parsed = valid(event)
    assert parsed.custom_data is not None
    assert parsed.custom_data.value == 10.0
    assert "event.ldp" in decide(parsed, None, PolicyConfig()).reasons


def test_the_javascript_tag_sends_json_objects() -> None:
    """[PIN-PARAMS] `ed`, `pd`, `ad` as JSON (the tag's `encodeURIComponent(JSON...)`)."""
    url = (
        "https://ct.pinterest.com/v3/?tid=2612345678901"
        '&pd={"em":"' + HASH + '","epik":"dj0yJnU9click","pin_unauth":"dWlkPU5q"}'
        '&event=Checkout&ad={"loc":"https://www.example.com/cart","ref":"","if":false}'
        '&ed={"value":116,"order_quantity":2,"currency":"USD","eventID":"ev-9",'
        '"line_items":[{"product_id":"11","product_price":48},{"product_id":12}]}'
        "&cb=1583538016603"
    )

    event = pin(url)

    assert event["event_id"] == "ev-9"
    assert event["event_name"] == "checkout"
    assert event["event_source_url"] == "https://www.example.com/cart"
    assert event["user_data"]["click_id"] == "dj0yJnU9click"
    assert event["browser"]["cookie_id"] == "dWlkPU5q"
    assert event["custom_data"]["content_ids"] == ["11", "12"]
    assert event["custom_data"]["value"] == 116
    valid(event)


def test_the_epik_cookie_is_the_click_id_and_browser_signals_are_read() -> None:
    """[PIN-PARAMS] cookies `_epik` and `_pin_unauth`."""
    url = "https://ct.pinterest.com/v3/?tid=1&event=pagevisit"
    headers = {**UA, "DNT": "1", "Sec-GPC": "1"}
    cookies = {"_epik": "dj0yJnU9cookie", "_pin_unauth": "dWlkPQ", COOKIE: "1"}

    event = pin(url, headers, cookies)

    assert event["user_data"]["click_id"] == "dj0yJnU9cookie"
    assert event["browser"] == {
        "cookie_id": "dWlkPQ",
        "dnt": True,
        "gpc": True,
        "daa_opt_out": True,
    }
    reasons = decide(valid(event), None, PolicyConfig()).reasons
    assert {"browser.dnt", "browser.gpc", "browser.daa_opt_out"} <= set(reasons)


@pytest.mark.parametrize(
    ("wire", "name"),
    [
        ("init", "page_visit"),
        ("pagevisit", "page_visit"),
        ("PageVisit", "page_visit"),
        ("viewcategory", "view_category"),
        ("search", "search"),
        ("addtocart", "add_to_cart"),
        ("AddToCart", "add_to_cart"),
        ("checkout", "checkout"),
        ("watchvideo", "watch_video"),
        ("signup", "signup"),
        ("lead", "lead"),
        ("custom", "custom"),
        ("Newsletter Signup Step", "custom"),
        (None, "page_visit"),
    ],
)
def test_tag_event_names(wire: str | None, name: str) -> None:
    """[PIN-EVENTS] Checkout, AddToCart, PageVisit, Signup, WatchVideo, Lead, Search,
    ViewCategory, Custom, user-defined; lowercase on the wire."""
    assert pinterest_tag.event_name(wire) == name


@pytest.mark.parametrize("part", ["ed", "pd", "ad"])
def test_an_unreadable_json_part_rejects_the_beacon(part: str) -> None:
    event = pin(f"https://ct.pinterest.com/v3/?tid=1&event=checkout&{part}={{not json")

    assert event == Invalid(f"{part}: not a JSON object")


def test_an_unhashed_email_in_the_tag_is_hashed_at_ingest() -> None:
    event = pin("https://ct.pinterest.com/v3/?tid=1&event=lead&pd[em]=Jane@Example.com")

    prepared = prepare_event("tag", event, now=NOW)

    assert isinstance(prepared, Prepared)
    assert b"Jane" not in prepared.value
    assert normalize.sha256_hex("jane@example.com").encode() in prepared.value


# -- Meta pixel --------------------------------------------------------------------


def test_the_base_code_image_tag_is_a_page_view() -> None:
    """[FB-BASE] `https://www.facebook.com/tr?id={pixel-id}&ev=PageView&noscript=1`."""
    url = "https://www.facebook.com/tr?id=1234567890&ev=PageView&noscript=1"

    assert meta_pixel.pixel_id(query(url)) == "1234567890"
    event = fb(url, {**UA, "Referer": "https://shop.example.com/"})

    assert event["event_name"] == "page_visit"
    assert event["event_id"] == "fresh"
    assert event["event_source_url"] == "https://shop.example.com/"
    valid(event)


def test_the_documented_image_tag_with_custom_data() -> None:
    """[FB-IMG] `&cd[content_name]=ABC%20Leather%20Sandal&...&cd[content_ids]=1234
    &cd[value]=0.50&cd[currency]=USD`."""
    url = (
        "https://www.facebook.com/tr?id=1234567890&ev=Purchase"
        "&cd[content_name]=ABC%20Leather%20Sandal&cd[content_category]=Shoes"
        "&cd[content_type]=product&cd[content_ids]=1234&cd[value]=0.50&cd[currency]=USD"
    )

    event = fb(url)

    assert event["event_name"] == "checkout"
    assert event["custom_data"] == {"value": "0.50", "currency": "USD", "content_ids": ["1234"]}
    parsed = valid(event)
    assert parsed.custom_data is not None
    assert parsed.custom_data.value == 0.5


def test_advanced_matching_user_data() -> None:
    """[FB-IMG] `tr/?id=PIXEL_ID&ev=Purchase&ud[em]=<sha256>&ud[fn]=<sha256>...`."""
    url = f"https://www.facebook.com/tr/?id=1&ev=Purchase&ud[em]={HASH}&ud[fn]={HASH}&cd[value]=0.00&cd[currency]=USD"

    event = fb(url)

    assert event["user_data"]["em"] == [HASH]
    valid(event)


@pytest.mark.parametrize(
    ("params", "ldp"),
    [
        ("&dpo=", False),
        ("&vdpo=LDU&dpoco=0&dpost=0", True),
        ("&dpo=LDU&dpoco=1&dpost=1000", True),
        ("&dpo=LDU", True),
        ("", False),
    ],
)
def test_data_processing_options_on_the_image_tag(params: str, ldp: bool) -> None:
    """[FB-DPO] "To explicitly not enable LDU, pass an empty value for the dpo
    parameter"; the geolocation example writes `vdpo=LDU`; California `dpo=LDU&dpoco=1
    &dpost=1000`."""
    event = fb(f"https://www.facebook.com/tr?id=1&ev=Purchase{params}")

    assert (event.get("opt_out_type") == "LDP") is ldp
    reasons = decide(valid(event), None, PolicyConfig()).reasons
    assert ("event.ldp" in reasons) is ldp


def test_a_captured_pixel_request_keeps_fbp_event_id_and_page() -> None:
    """A real `fbevents.js` GET (pixel 2.9.84): `dl`, `rl`, `ts`, `fbp`, `eid`."""
    url = (
        "https://www.facebook.com/tr/?id=1535206906706865&ev=PageView"
        "&dl=https%3A%2F%2Fwww.example.com%2F&rl=&if=false&ts=1665315487331&sw=1280&sh=720"
        "&v=2.9.84&r=stable&ec=0&o=30&fbp=fb.1.1661018483422.441946273&it=1665315487210"
        "&coo=false&eid=evt_1779401705295_3ed3&rqm=GET"
    )

    event = fb(url)

    assert event["event_id"] == "evt_1779401705295_3ed3"
    assert event["event_source_url"] == "https://www.example.com/"
    assert event["browser"]["cookie_id"] == "fb.1.1661018483422.441946273"
    valid(event)


def test_the_fbc_cookie_carries_the_click_id() -> None:
    """[FB-COOKIES] `_fbc` is `fb.1.<creation time>.<fbclid>`; `_fbp` the browser id."""
    cookies = {
        "_fbc": "fb.1.1554763741205.AbCdEfGhIjKlMnOpQrStUvWxYz1234567890",
        "_fbp": "fb.1.1558571054389.1098115397",
    }

    event = fb("https://www.facebook.com/tr?id=1&ev=Lead", cookies=cookies)

    assert event["user_data"]["click_id"] == "AbCdEfGhIjKlMnOpQrStUvWxYz1234567890"
    assert event["browser"]["cookie_id"] == "fb.1.1558571054389.1098115397"
    valid(event)


def test_a_malformed_fbc_rejects_the_beacon() -> None:
    assert fb("https://www.facebook.com/tr?id=1&ev=Lead&fbc=garbage") == Invalid(
        "fbc: not fb.<subdomain index>.<creation time>.<fbclid>"
    )


@pytest.mark.parametrize(
    ("content_ids", "expected"),
    [("1234", ["1234"]), ('["a","b"]', ["a", "b"]), ("[1,2]", ["1", "2"]), ("a,b", ["a", "b"])],
)
def test_content_ids_as_json_or_a_list(content_ids: str, expected: list[str]) -> None:
    event = fb(f"https://www.facebook.com/tr?id=1&ev=AddToCart&cd[content_ids]={content_ids}")

    assert event["custom_data"]["content_ids"] == expected


def test_a_pixel_beacon_honours_dnt_gpc_and_the_optout_cookie() -> None:
    event = fb(
        "https://www.facebook.com/tr?id=1&ev=PageView",
        {**UA, "DNT": "1", "Sec-GPC": "1"},
        {COOKIE: "1"},
    )

    assert event["browser"] == {"dnt": True, "gpc": True, "daa_opt_out": True}
    assert isinstance(prepare_event("tag", event, now=NOW), Prepared)
    rejected = prepare_event(
        "tag", fb("https://www.facebook.com/tr?id=1&ev=x&cd[value]=lots"), now=NOW
    )
    assert isinstance(rejected, Rejected)
    assert rejected.detail == "custom_data.value: value_error"
