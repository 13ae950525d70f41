"""Pinterest Conversions API v5: each row names the part of Pinterest's reference it follows.

[OPENAPI] is `pinterest/api-description` `v5/openapi.yaml` (v5.23.0), operation
`events/create` and the schemas `ConversionEvents`, `ConversionEventsUserData`,
`ConversionApiResponse`, `Error`, `DetailedError`; [SDK] is what `pinterest-api-sdk`
0.2.7 sends (`Conversion.create_conversion_event` + `send_conversion_events`).
"""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.core.parse import Rejected, parse_event
from pipeline.core.policy import PolicyConfig, decide
from pipeline.ingest.client import Prepared, prepare_event
from pipeline.ingest.dialects import Invalid, Mapped
from pipeline.ingest.dialects.pinterest import (
    INVALID_REQUEST,
    V5_EVENT_NAMES,
    Batch,
    EventResult,
    is_test,
    map_event,
    read_batch,
    response,
)
from schemas import codec
from tests.unit.factories import NO_KEY, NOW

ADVERTISER = "shop-1"
HASH = "411e44ce1261728ffd2c0686e44e3fffe413c0e2c5adc498bc7da883d476b9c8"
MAID = "b" * 64

SDK_BODY = (
    '{"data": [{"event_name": "checkout", "action_source": "web", "event_time": 1699999900, '
    '"event_id": "evt-1", "user_data": {"em": ["' + HASH + '"], "client_ip_address": '
    '"203.0.113.7", "client_user_agent": "Mozilla/5.0"}, "custom_data": {"currency": "USD", '
    '"value": "72.39", "order_id": "o-1", "content_ids": ["sku-1"], "num_items": 1}, '
    '"event_source_url": "https://shop.example/checkout", "partner_name": null, "app_id": null, '
    '"app_name": null, "app_version": null, "device_brand": null, "device_carrier": null, '
    '"device_model": null, "device_type": null, "os_version": null, "language": null}]}'
)
"""[SDK] the captured body of `send_conversion_events` (nulls for unset optional fields)."""

OPENAPI_APP_EVENT: dict[str, Any] = {
    "event_name": "checkout",
    "action_source": "app_ios",
    "event_time": NOW - 100,
    "event_id": "eventId0001",
    "event_source_url": "https://www.my-clothing-shop.org/",
    "opt_out": False,
    "partner_name": "ss-partnername",
    "user_data": {"em": [HASH], "hashed_maids": [MAID], "click_id": "dj0yJnU9abc"},
    "custom_data": {
        "currency": "USD",
        "value": "72.39",
        "content_ids": ["product-id-001", "product-id-002"],
        "content_name": "pinterest-themed-clothing",
        "content_category": "shirts",
        "content_brand": "pinterest-brand",
        "contents": [{"id": "product-id-001", "item_price": "14.99", "quantity": 3}],
        "num_items": 5,
        "order_id": "my_order_id",
        "search_string": "sample string",
        "opt_out_type": "LDP",
        "np": "ss-company",
    },
    "app_id": "429047995",
    "app_name": "Pinterest",
    "app_version": "7.9",
    "device_brand": "Apple",
    "device_carrier": "T-Mobile",
    "device_model": "iPhone X",
    "device_type": "iPhone",
    "os_version": "12.1.4",
    "wifi": False,
    "language": "en",
}
"""[OPENAPI] an event built from each field's documented `example`."""


def event(**fields: Any) -> dict[str, Any]:
    return {
        "event_name": "page_visit",
        "action_source": "web",
        "event_time": NOW - 60,
        "event_id": "e-1",
        "user_data": {"em": [HASH]},
        **fields,
    }


def batch(*events: dict[str, Any]) -> Batch:
    read = read_batch(codec.dumps({"data": list(events)}))
    assert isinstance(read, Batch), read
    return read


def mapped(raw: dict[str, Any]) -> Mapped:
    [one] = batch(raw).events
    result = map_event(one, ADVERTISER)
    assert isinstance(result, Mapped), result
    return result


def valid(result: Mapped) -> Prepared:
    prepared = prepare_event(result.source, result.event, now=NOW)
    assert isinstance(prepared, Prepared), prepared
    return prepared


def test_the_sdk_request_maps_to_a_tag_event_with_its_decimal_value() -> None:
    read = read_batch(SDK_BODY.encode())
    assert isinstance(read, Batch)

    result = map_event(read.events[0], ADVERTISER)

    assert isinstance(result, Mapped)
    assert result.source == "tag"
    assert result.event == {
        "event_id": "evt-1",
        "event_name": "checkout",
        "event_time": 1699999900,
        "advertiser_id": ADVERTISER,
        "action_source": "web",
        "opt_out": False,
        "event_source_url": "https://shop.example/checkout",
        "user_data": {
            "em": [HASH],
            "client_ip_address": "203.0.113.7",
            "client_user_agent": "Mozilla/5.0",
        },
        "custom_data": {
            "currency": "USD",
            "value": "72.39",
            "num_items": 1,
            "order_id": "o-1",
            "content_ids": ["sku-1"],
        },
    }
    parsed = parse_event("tag", valid(result).value, now=NOW, limits=NO_KEY)
    assert not isinstance(parsed, Rejected)
    assert parsed.custom_data is not None
    assert parsed.custom_data.value == 72.39


def test_the_documented_app_event_keeps_app_device_click_id_and_ldp() -> None:
    result = mapped(OPENAPI_APP_EVENT)

    assert result.source == "sdk"
    record = result.event
    assert record["app"] == {"app_id": "429047995", "app_name": "Pinterest", "app_version": "7.9"}
    assert record["device"] == {"os_version": "12.1.4"}
    assert record["user_data"]["hashed_maids"] == [MAID]
    assert record["user_data"]["click_id"] == "dj0yJnU9abc"
    assert record["custom_data"]["opt_out_type"] == "LDP"
    assert "event_source_url" not in record, "an app event has no page"
    parsed = parse_event("sdk", valid(result).value, now=NOW, limits=NO_KEY)
    assert not isinstance(parsed, Rejected)
    decision = decide(parsed, None, PolicyConfig())
    assert "event.ldp" in decision.reasons


@pytest.mark.parametrize(("v5_name", "spec_name"), sorted(V5_EVENT_NAMES.items()))
def test_every_v5_event_name_maps_to_a_spec_name(v5_name: str, spec_name: str) -> None:
    """[OPENAPI] `event_name`: the 15 names of the v5.23 description."""
    result = mapped(event(event_name=v5_name))

    assert result.event["event_name"] == spec_name
    valid(result)


def test_the_v5_list_is_the_documented_one() -> None:
    assert set(V5_EVENT_NAMES) == {
        "add_payment_info",
        "add_to_cart",
        "add_to_wishlist",
        "app_install",
        "checkout",
        "custom",
        "initiate_checkout",
        "lead",
        "page_visit",
        "search",
        "signup",
        "subscribe",
        "view_category",
        "view_content",
        "watch_video",
    }
    assert V5_EVENT_NAMES["initiate_checkout"] != "checkout", "checkout means a purchase"


@pytest.mark.parametrize(
    ("action_source", "source"),
    [("web", "tag"), ("app_ios", "sdk"), ("app_android", "sdk"), ("offline", "sdk")],
)
def test_action_sources_choose_the_raw_topic(action_source: str, source: str) -> None:
    """[OPENAPI] `action_source`: `app_android`, `app_ios`, `web`, `offline`."""
    result = mapped(event(action_source=action_source))

    assert result.source == source
    assert result.event["action_source"] == action_source
    valid(result)


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"event_name": "purchase"}, "event_name is not a v5 event name"),
        ({"action_source": "website"}, "action_source must be one of"),
        ({"user_data": {"ph": [HASH]}}, "user_data needs em, hashed_maids"),
        ({"user_data": {"client_ip_address": "203.0.113.7"}}, "user_data needs em"),
        ({"custom_data": {"value": "12,50"}}, "custom_data.value must be a decimal"),
        (
            {"custom_data": {"contents": [{"item_price": "cheap"}]}},
            "custom_data.contents.0.item_price must be a decimal",
        ),
        ({"custom_data": {"predicted_ltv": "NaN"}}, "custom_data.predicted_ltv must be"),
    ],
)
def test_events_pinterest_would_not_process_fail_with_a_message(
    fields: dict[str, Any], error: str
) -> None:
    """[OPENAPI] the event-name and action-source lists, the `user_data` anyOf, the
    decimal strings ("it will be parsed into a double")."""
    [one] = batch(event(**fields)).events

    result = map_event(one, ADVERTISER)

    assert isinstance(result, Invalid)
    assert result.detail.startswith(error)


def test_user_data_with_the_client_pair_is_enough() -> None:
    """[OPENAPI] `ConversionEventsUserData`: em, or hashed_maids, or address and agent."""
    result = mapped(
        event(user_data={"client_ip_address": "203.0.113.7", "client_user_agent": "UA/1"})
    )

    valid(result)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "Invalid request: the body is not JSON"),
        (b"[]", "Invalid request: body: must be an object"),
        (b'{"data": []}', "Invalid request: data: must have at least 1 item"),
        (b'{"data": [], "extra": 1}', "Additional properties are not allowed ('extra'"),
        (
            codec.dumps({"data": [event(custom_data={"category_name": "x"})]}),
            "Invalid request: data.0.custom_data: Additional properties are not allowed "
            "('category_name' was unexpected)",
        ),
        (
            codec.dumps({"data": [{k: v for k, v in event().items() if k != "event_id"}]}),
            "Invalid request: data.0.event_id: is a required property",
        ),
        (
            codec.dumps({"data": [event(event_time=str(NOW))]}),
            "Invalid request: data.0.event_time: must be an integer",
        ),
        (
            codec.dumps({"data": [event(user_data={"em": HASH})]}),
            "Invalid request: data.0.user_data.em: must be an array",
        ),
        (codec.dumps({"data": [event(opt_out=None)]}), "data.0.opt_out: must be a boolean"),
        (codec.dumps({"data": [event()] * 1001}), "data: must have at most 1000 items"),
    ],
)
def test_a_body_outside_the_schema_is_one_400_error_for_the_request(
    body: bytes, message: str
) -> None:
    """[OPENAPI] `ConversionEvents`: `additionalProperties: false`, required fields,
    types, 1 to 1,000 events; answered as Pinterest does ("Invalid request: Additional
    properties are not allowed ('category_name' was unexpected)")."""
    result = read_batch(body)

    assert isinstance(result, Invalid)
    assert message in result.detail


def test_an_unexpected_property_name_that_could_be_data_is_not_echoed() -> None:
    result = read_batch(codec.dumps({"data": [event(**{"jane@example.com": 1})]}))

    assert isinstance(result, Invalid)
    assert "jane" not in result.detail
    assert "Additional properties are not allowed" in result.detail


def test_a_decimal_value_may_also_be_a_number() -> None:
    result = mapped(event(custom_data={"value": 72.39}))

    assert result.event["custom_data"]["value"] == 72.39
    valid(result)


def test_content_ids_come_from_contents_when_not_given() -> None:
    result = mapped(
        event(custom_data={"contents": [{"id": "a"}, {"item_price": "1"}, {"id": "b"}]})
    )

    assert result.event["custom_data"]["content_ids"] == ["a", "b"]


def test_an_app_user_who_limited_ad_tracking_is_opted_out_on_the_device_too() -> None:
    """[OPENAPI] `opt_out`: on app events, Limit Ad Tracking (iOS) or the Android
    ads-personalization opt-out."""
    result = mapped(event(action_source="app_android", opt_out=True, os_version="14"))

    assert result.event["opt_out"] is True
    assert result.event["device"] == {"os_version": "14", "ads_opt_out": True}


def test_5_23_app_info_and_device_info_are_read() -> None:
    """[OPENAPI] 5.23's `ConversionEventAppInfo` and `ConversionEventDeviceInfo`."""
    result = mapped(
        event(
            action_source="app_ios",
            app_info={"app_package_name": "com.example.shop", "app_version": "3.1"},
            device_info={"os_version": "17.5", "os_family": "ios", "screen_density": 2.5},
        )
    )

    assert result.event["app"] == {"app_id": "com.example.shop", "app_version": "3.1"}
    assert result.event["device"] == {"os_version": "17.5"}
    valid(result)


def test_hashed_maids_on_a_web_event_are_named_in_a_warning() -> None:
    result = mapped(event(user_data={"hashed_maids": [MAID], "em": [HASH]}))

    assert "hashed_maids" not in result.event["user_data"]
    assert result.warnings == ("user_data.hashed_maids is not kept on web events",)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, False),
        ("true", True),
        ("True", True),
        ("false", False),
        ("False", False),
        ("1", Invalid("test: must be true or false")),
    ],
)
def test_the_test_flag_is_a_boolean_in_any_case(value: str | None, expected: object) -> None:
    """[OPENAPI] `test`: `in: query`, boolean; [SDK] sends `test=True` / `test=False`."""
    assert is_test(value) == expected


def test_all_processed_is_200_with_the_documented_response() -> None:
    """[OPENAPI] `ConversionApiResponse`: required num_events_received,
    num_events_processed and events[] with status processed|failed."""
    status, body = response(
        [EventResult("processed"), EventResult("processed", warning_message="w")]
    )

    assert status == 200
    assert body == {
        "num_events_received": 2,
        "num_events_processed": 2,
        "events": [
            {"status": "processed", "error_message": "", "warning_message": ""},
            {"status": "processed", "error_message": "", "warning_message": "w"},
        ],
    }


def test_a_failed_event_makes_the_answer_a_422_detailed_error() -> None:
    """[OPENAPI] 422 "Not all events were successfully processed." with `DetailedError`
    (required code, message, details)."""
    status, body = response([EventResult("processed"), EventResult("failed", "bad")])

    assert status == 422
    assert body["code"] == INVALID_REQUEST
    assert body["message"] == "Not all events were successfully processed."
    assert body["details"]["num_events_received"] == 2
    assert body["details"]["num_events_processed"] == 1
    assert body["details"]["events"][1] == {
        "status": "failed",
        "error_message": "bad",
        "warning_message": "",
    }
