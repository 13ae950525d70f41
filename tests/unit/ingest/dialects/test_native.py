"""The native dialect: /v1/events, the /v1/tag pixel and widget posts (browser signals from
headers and the opt-out cookie), and what a token allows."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline import catalogue
from pipeline.core.parse import Rejected
from pipeline.ingest.client import Prepared, prepare_event
from pipeline.ingest.dialects import Invalid
from pipeline.ingest.dialects.browser import browser_signals
from pipeline.ingest.dialects.native import (
    BEACON_PARAMETERS,
    BEACON_USER_ID,
    UNTRUSTED_USER_ID,
    Forbidden,
    beacon_event,
    events_source,
    for_advertiser,
    with_browser_signals,
)
from pipeline.sim.demo import beacon_request
from pipeline.sim.traffic import TrafficConfig, TrafficGenerator
from schemas import codec, normalize
from tests.unit.factories import NOW, tag_event, widget_event

COOKIE = "optout"
QUERY = {"advertiser_id": "adv-1", "event_id": "b-1"}


def beacon(
    query: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    cookies: dict[str, str] | None = None,
) -> dict[str, Any]:
    event = beacon_event(
        QUERY if query is None else query,
        headers or {},
        cookies or {},
        remote="203.0.113.7",
        now=NOW,
        new_event_id=lambda: "fresh-id",
        optout_cookie=COOKIE,
    )
    assert isinstance(event, dict)
    return event


@pytest.mark.parametrize(
    ("headers", "cookies", "expected"),
    [
        ({}, {}, {"dnt": False, "gpc": False, "daa_opt_out": False}),
        ({"DNT": "1"}, {}, {"dnt": True, "gpc": False, "daa_opt_out": False}),
        ({"Sec-GPC": "1"}, {}, {"dnt": False, "gpc": True, "daa_opt_out": False}),
        ({}, {COOKIE: "1"}, {"dnt": False, "gpc": False, "daa_opt_out": True}),
        ({}, {COOKIE: "true"}, {"dnt": False, "gpc": False, "daa_opt_out": True}),
        (
            {"DNT": "0", "Sec-GPC": "0"},
            {COOKIE: "0"},
            {"dnt": False, "gpc": False, "daa_opt_out": False},
        ),
        ({}, {"other": "1"}, {"dnt": False, "gpc": False, "daa_opt_out": False}),
    ],
)
def test_the_beacon_reads_dnt_gpc_and_the_optout_cookie(
    headers: dict[str, str], cookies: dict[str, str], expected: dict[str, bool]
) -> None:
    event = beacon(headers=headers, cookies=cookies)

    assert {k: event["browser"][k] for k in expected} == expected


def test_the_beacon_maps_query_parameters_and_the_request_to_a_tag_event() -> None:
    query = {
        **QUERY,
        "event_name": "checkout",
        "event_time": str(NOW - 5),
        "cookie_id": "ck-1",
        "click_id": "clk-1",
        "em": "Jane@Example.com, " + "a" * 64,
        "value": "12.50",
        "currency": "eur",
        "content_ids": "sku-1,sku-2",
        "num_items": "2",
        "order_id": "ord-1",
        "opt_out": "0",
        "surface": "on_platform",
        "password": "not-a-parameter",
    }
    headers = {"User-Agent": "Mozilla/5.0 Firefox/128.0", "Referer": "https://shop.example.com/c"}

    event = beacon(query, headers)

    assert event == {
        "event_id": "b-1",
        "event_name": "checkout",
        "event_time": NOW - 5,
        "action_source": "web",
        "advertiser_id": "adv-1",
        "surface": "on_platform",
        "event_source_url": "https://shop.example.com/c",
        "opt_out": False,
        "user_data": {
            "em": ["Jane@Example.com", "a" * 64],
            "click_id": "clk-1",
            "client_ip_address": "203.0.113.7",
            "client_user_agent": "Mozilla/5.0 Firefox/128.0",
        },
        "browser": {"cookie_id": "ck-1", "dnt": False, "gpc": False, "daa_opt_out": False},
        "custom_data": {
            "value": 12.5,
            "num_items": 2,
            "currency": "eur",
            "order_id": "ord-1",
            "content_ids": ["sku-1", "sku-2"],
        },
    }
    out = prepare_event("tag", event, now=NOW)
    assert isinstance(out, Prepared)
    assert b"Jane" not in out.value
    assert normalize.sha256_hex("jane@example.com") in codec.loads(out.value)["user_data"]["em"]


def test_beacon_defaults_fill_in_what_a_minimal_pixel_leaves_out() -> None:
    event = beacon({"advertiser_id": "adv-1"})

    assert event["event_id"] == "fresh-id"
    assert event["event_name"] == "page_visit"
    assert event["event_time"] == int(NOW)
    assert "user_id" not in event
    assert isinstance(prepare_event("tag", event, now=NOW), Prepared)


@pytest.mark.parametrize(
    ("query", "detail"),
    [
        ({"event_id": "b-2"}, "advertiser_id: missing"),
        ({**QUERY, "value": "12,50"}, "custom_data.value: value_error"),
        ({**QUERY, "event_time": "yesterday"}, "event_time: int_type"),
        ({**QUERY, "value": "lots"}, "custom_data.value: value_error"),
        ({**QUERY, "opt_out": "maybe"}, "opt_out: bool_type"),
        ({**QUERY, "event_name": "purchase"}, "event_name: literal_error"),
    ],
)
def test_a_bad_beacon_is_rejected_naming_the_field(query: dict[str, str], detail: str) -> None:
    result = prepare_event("tag", beacon(query), now=NOW)

    assert isinstance(result, Rejected)
    assert result.detail == detail


def test_a_beacon_cannot_name_a_user_it_carries_no_token() -> None:
    event = beacon_event(
        {**QUERY, "user_id": "user-1"},
        {},
        {},
        remote=None,
        now=NOW,
        new_event_id=lambda: "x",
        optout_cookie=COOKIE,
    )

    assert event == Invalid(BEACON_USER_ID)


def test_only_listed_parameters_reach_the_event() -> None:
    query = {name: "x" for name in BEACON_PARAMETERS} | {"ssn": "secret", "email": "secret"}

    assert "secret" not in codec.dumps(beacon(query)).decode()


def test_a_widget_post_gains_the_browser_signals_and_address_but_never_loses_a_flag() -> None:
    posted = widget_event(browser={"dnt": True, "gpc": False}, client_ip_address=...)

    merged = with_browser_signals(
        posted,
        {"Sec-GPC": "1", "User-Agent": "UA/1"},
        {COOKIE: "1"},
        remote="198.51.100.1",
        optout_cookie=COOKIE,
    )

    assert isinstance(merged, dict)
    assert merged["browser"] == {
        "cookie_id": "cookie-3",
        "dnt": True,
        "gpc": True,
        "daa_opt_out": True,
    }
    assert merged["client_ip_address"] == "198.51.100.1"
    assert merged["client_user_agent"] == posted["client_user_agent"], "the event's own UA stays"
    assert posted["browser"]["gpc"] is False, "the posted event is not changed"
    assert with_browser_signals("not an object", {}, {}, remote=None, optout_cookie=COOKIE) == (
        "not an object"
    )


@pytest.mark.parametrize(
    ("event", "requested", "source"),
    [
        (tag_event(), None, "tag"),
        ({"event_id": "x"}, None, "tag"),
        ({"action_source": "app_ios"}, None, "sdk"),
        ({"action_source": "offline"}, None, "sdk"),
        (tag_event(), "sdk", "sdk"),
        ("junk", None, "tag"),
    ],
)
def test_conversions_api_events_go_to_the_topic_of_their_action_source(
    event: object, requested: Any, source: str
) -> None:
    assert events_source(event, requested) == source


def test_the_demo_pixel_request_round_trips_a_generated_tag_event() -> None:
    config = TrafficConfig(users=300, dnt_share=0.5, anonymous_share=0.5)
    generator = TrafficGenerator(config, seed=1, clock=lambda: NOW)
    tags = [
        r
        for r in generator.records(800)
        if r.topic is catalogue.RAW_TAG
        and r.kind == "event"
        and b'"user_id"' not in (r.value or b"")
    ]
    assert tags
    for record in tags:
        original = codec.loads(record.value or b"")
        query, headers = beacon_request(original, COOKIE)
        cookies = dict(
            part.split("=", 1) for part in headers.get("Cookie", "").split(";") if "=" in part
        )
        event = beacon(query, headers, cookies)
        out = prepare_event("tag", event, now=NOW)
        assert isinstance(out, Prepared), out
        rebuilt = codec.loads(out.value)
        for name in ("event_id", "event_name", "event_time", "advertiser_id"):
            assert rebuilt[name] == original[name]
        assert rebuilt["user_data"].get("click_id") == original["user_data"].get("click_id")
        assert len(rebuilt["user_data"]["em"]) == len(original["user_data"]["em"])
        assert rebuilt["browser"] == original["browser"]
        value = original.get("custom_data", {}).get("value")
        assert rebuilt.get("custom_data", {}).get("value") == value
    assert any(codec.loads(r.value or b"")["browser"]["dnt"] for r in tags)


def test_browser_signals_ignore_case_and_whitespace() -> None:
    assert browser_signals({"DNT": " 1 ", "Sec-GPC": "TRUE"}, {}, COOKIE) == {
        "dnt": True,
        "gpc": True,
        "daa_opt_out": False,
    }


@pytest.mark.parametrize(
    ("event", "trusted", "optional", "expected"),
    [
        ({"event_id": "e"}, False, False, {"event_id": "e", "advertiser_id": "shop-1"}),
        ({"advertiser_id": "shop-1"}, False, False, {"advertiser_id": "shop-1"}),
        (
            {"advertiser_id": "shop-2"},
            True,
            False,
            Forbidden("advertiser_id: another advertiser's"),
        ),
        ({"user_id": "u-1"}, False, False, Invalid(UNTRUSTED_USER_ID)),
        ({"user_id": "u-1"}, True, False, {"user_id": "u-1", "advertiser_id": "shop-1"}),
        ({"user_id": None}, False, False, {"user_id": None, "advertiser_id": "shop-1"}),
        ({"site_domain": "blog.example.org"}, False, True, {"site_domain": "blog.example.org"}),
        ("not an object", False, False, "not an object"),
    ],
)
def test_a_token_writes_for_its_advertiser_and_only_a_trusted_one_names_a_user(
    event: object, trusted: bool, optional: bool, expected: object
) -> None:
    assert (
        for_advertiser(event, "shop-1", trusted=trusted, advertiser_optional=optional) == expected
    )
