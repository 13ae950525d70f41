"""Meta Conversions API: each row names the part of Meta's reference it follows.

[USING] "Conversions API: Using the API" (send requests, batch requests, test events,
data processing options); [EVENT] "Server Event Parameters" (main body, server event,
customer information, app data, fbp and fbc); [PIXEL-EVENTS] the Ads Pixel Events
reference (`/{ads_pixel_id}/events`, its example, return type and error codes);
[SDK] what `facebook-business` 26.0.3 sends (form-encoded, `data` elements as JSON
strings); [STANDARD] the Meta Pixel reference's standard events.
"""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.core.parse import Rejected, parse_event
from pipeline.core.policy import PolicyConfig, decide
from pipeline.ingest.client import Prepared, prepare_event
from pipeline.ingest.dialects import Invalid, Mapped
from pipeline.ingest.dialects.meta import (
    STANDARD_EVENTS,
    EventsRequest,
    GraphError,
    access_token,
    click_id,
    derived_event_id,
    invalid_parameter,
    map_event,
    read_request,
    response,
)
from schemas import codec, normalize
from schemas.events import Event
from tests.unit.factories import NO_KEY, NOW

PIXEL = "1234567890"
ADVERTISER = "shop-1"
EM = "309a0a5c3e211326ae75ca18196d301a9bdbd1a882a4d2569511033da23f0abd"
FBC = "fb.1.1554763741205.AbCdEfGhIjKlMnOpQrStUvWxYz1234567890"
FBP = "fb.1.1558571054389.1098115397"

SDK_WEBSITE_EVENT = (
    (
        '{"event_name": "Purchase", "event_time": @TIME@, "event_source_url": '
        '"https://shop.example.com/checkout", "event_id": "evt-1", "data_processing_options": '
        '["LDU"], "data_processing_options_country": 0, "data_processing_options_state": 0, '
        '"user_data": {"em": ["2481f36dfc515ca76451aaadf1399026942a01ee50c6d0a61988b43cef039bc2"], '
        '"ph": ["e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176"], '
        '"external_id": ["user-42"], "client_ip_address": "203.0.113.7", "client_user_agent": '
        '"Mozilla/5.0 Test", "fbc": "@FBC@", "fbp": "@FBP@"}, "custom_data": {"value": 123.45, '
        '"currency": "usd"}, "action_source": "website"}'
    )
    .replace("@TIME@", str(NOW - 60))
    .replace("@FBC@", FBC)
    .replace("@FBP@", FBP)
)
"""[SDK] the captured website event, one JSON string inside the `data` array."""

SDK_APP_EVENT = (
    '{"event_name": "CompleteRegistration", "event_time": @TIME@, "user_data": '
    '{"client_ip_address": "203.0.113.8", "madid": "38400000-8cf0-11bd-b23e-10b96e40000d"}, '
    '"app_data": {"application_tracking_enabled": true, "advertiser_tracking_enabled": false, '
    '"extinfo": ["a2", "com.example.app", "1.0", "1.0.0", "13", "Pixel 7", "en_US", "PST", '
    '"T-Mobile", 1080, 2400, "2.75", 8, 128, 64, "America/Los_Angeles"]}, '
    '"action_source": "app"}'
).replace("@TIME@", str(NOW - 60))
"""[SDK] the captured Android app event with `advertiser_tracking_enabled=False`."""


def form_request(*events: str, **fields: str) -> EventsRequest:
    """A form-encoded call as the SDK makes it: `data` a JSON array of JSON strings."""
    form = {"data": [codec.dumps(list(events)).decode()], **{k: [v] for k, v in fields.items()}}
    read = read_request({}, form, None)
    assert isinstance(read, EventsRequest), read
    return read


def mapped(raw: object, index: int = 0) -> Mapped:
    result = map_event(raw, index, PIXEL, ADVERTISER)
    assert isinstance(result, Mapped), result
    return result


def parsed(result: Mapped) -> Event:
    prepared = prepare_event(result.source, result.event, now=NOW)
    assert isinstance(prepared, Prepared), prepared
    event = parse_event(result.source, prepared.value, now=NOW, limits=NO_KEY)
    assert not isinstance(event, Rejected)
    return event


def server_event(**fields: Any) -> dict[str, Any]:
    return {
        "event_name": "Purchase",
        "event_time": NOW - 60,
        "user_data": {"em": [EM]},
        "action_source": "website",
        **fields,
    }


def test_the_sdk_website_event_keeps_ldu_click_id_browser_id_and_contact_points() -> None:
    request = form_request(SDK_WEBSITE_EVENT, test_event_code="TEST123")

    assert request.test_event_code == "TEST123"
    result = mapped(request.events[0])

    assert result.source == "tag"
    record = result.event
    assert record["event_name"] == "checkout"
    assert record["event_id"] == "evt-1"
    assert record["advertiser_id"] == ADVERTISER
    assert record["opt_out_type"] == "LDP"
    assert record["user_data"]["click_id"] == "AbCdEfGhIjKlMnOpQrStUvWxYz1234567890"
    assert record["user_data"]["external_id"] == ["user-42"]
    assert record["browser"] == {"cookie_id": FBP}
    event = parsed(result)
    assert event.custom_data is not None
    assert event.custom_data.currency == "USD"
    assert "event.ldp" in decide(event, None, PolicyConfig()).reasons


def test_the_sdk_android_app_event_maps_tracking_off_to_the_ads_opt_out() -> None:
    """[EVENT] app data: `advertiser_tracking_enabled`, `extinfo` (a2 = Android)."""
    result = mapped(form_request(SDK_APP_EVENT).events[0])

    assert result.source == "sdk"
    record = result.event
    assert record["action_source"] == "app_android"
    assert record["event_name"] == "signup"
    assert record["device"] == {
        "advertising_id": "38400000-8cf0-11bd-b23e-10b96e40000d",
        "os_version": "13",
        "ads_opt_out": True,
    }
    assert record["app"] == {"app_id": "com.example.app", "app_version": "1.0.0"}
    assert record["opt_out"] is False
    assert record["user_data"]["hashed_maids"] == [
        normalize.sha256_hex("38400000-8cf0-11bd-b23e-10b96e40000d")
    ]
    assert record["event_id"].startswith("meta:")
    assert "device.ads_opt_out" in decide(parsed(result), None, PolicyConfig()).reasons


@pytest.mark.parametrize(
    ("tracking", "att_status", "denied"),
    [
        (False, "denied", True),
        (True, "authorized", False),
        (0, "denied", True),
        ("1", "authorized", False),
    ],
)
def test_ios_advertiser_tracking_enabled_is_the_att_choice(
    tracking: object, att_status: str, denied: bool
) -> None:
    """[EVENT] app data: "Use this field to specify ATT permission on an iOS 14.5+
    device. Set to 0 for disabled or 1 for enabled"; `extinfo[0]` i2 = iOS."""
    raw = server_event(
        action_source="app",
        app_data={
            "advertiser_tracking_enabled": tracking,
            "extinfo": ["i2", "com.shop", "1", "1.2", "17.5"],
        },
    )

    result = mapped(raw)

    assert result.event["action_source"] == "app_ios"
    assert result.event["device"]["att_status"] == att_status
    reasons = decide(parsed(result), None, PolicyConfig()).reasons
    assert ("device.att_not_authorized" in reasons) is denied


def test_application_tracking_off_is_the_persons_opt_out() -> None:
    raw = server_event(
        action_source="app",
        app_data={"application_tracking_enabled": False, "extinfo": ["a2"]},
    )

    assert mapped(raw).event["opt_out"] is True


def test_an_app_event_without_a_known_platform_is_refused() -> None:
    """[EVENT] app data: `extinfo` is required for app events, version `a2` or `i2`:
    without it ATT could not be told apart from the Android opt-out."""
    cases: list[object] = [None, {}, {"extinfo": []}, {"extinfo": ["x9"]}, {"extinfo": "i2"}]
    for app_data in cases:
        result = map_event(
            server_event(action_source="app", app_data=app_data), 3, PIXEL, ADVERTISER
        )
        assert isinstance(result, Invalid)
        assert result.detail.startswith("data[3].app_data.extinfo is required for app events")


@pytest.mark.parametrize(
    ("action_source", "source", "spec_source"),
    [
        ("website", "tag", "web"),
        ("email", "sdk", "offline"),
        ("phone_call", "sdk", "offline"),
        ("chat", "sdk", "offline"),
        ("physical_store", "sdk", "offline"),
        ("system_generated", "sdk", "offline"),
        ("business_messaging", "sdk", "offline"),
        ("other", "sdk", "offline"),
    ],
)
def test_action_sources_map_to_spec_sources(
    action_source: str, source: str, spec_source: str
) -> None:
    """[EVENT] server event: the `action_source` values."""
    result = mapped(server_event(action_source=action_source))

    assert (result.source, result.event["action_source"]) == (source, spec_source)
    parsed(result)


def test_a_missing_action_source_is_a_website_event_as_in_metas_own_examples() -> None:
    """[USING] and [PIXEL-EVENTS]: the example requests send no `action_source`."""
    raw = server_event()
    del raw["action_source"]

    assert mapped(raw).source == "tag"


@pytest.mark.parametrize(("meta_name", "spec_name"), sorted(STANDARD_EVENTS.items()))
def test_standard_events_map_to_spec_names(meta_name: str, spec_name: str) -> None:
    """[STANDARD] the Meta Pixel reference's standard events, plus PageView."""
    assert mapped(server_event(event_name=meta_name)).event["event_name"] == spec_name


@pytest.mark.parametrize("name", ["purchase", "MyCustomEvent", "Purchase "])
def test_other_names_are_custom_events(name: str) -> None:
    assert mapped(server_event(event_name=name)).event["event_name"] == "custom"


def test_single_strings_become_one_item_lists() -> None:
    """[EVENT] customer information: hashed fields are "string or list<string>"."""
    raw = server_event(user_data={"em": EM, "ph": "16505551212", "external_id": "u-1"})

    user = mapped(raw).event["user_data"]

    assert user["em"] == [EM]
    assert user["ph"] == ["16505551212"]
    assert user["external_id"] == ["u-1"]


def test_a_raw_email_is_hashed_before_anything_is_written() -> None:
    result = mapped(server_event(user_data={"em": " Jane.Doe@Example.com "}))

    prepared = prepare_event(result.source, result.event, now=NOW)

    assert isinstance(prepared, Prepared)
    assert b"Jane" not in prepared.value
    assert normalize.sha256_hex("jane.doe@example.com").encode() in prepared.value


@pytest.mark.parametrize(
    ("options", "ldp"),
    [(["LDU"], True), (["ldu"], True), ([], False), (None, False), ("LDU", True)],
)
def test_data_processing_options_ldu_is_limited_data_processing(options: object, ldp: bool) -> None:
    """[USING] data processing options: `["LDU"]` enables LDU, `[]` or absent does not."""
    fields = {} if options is None else {"data_processing_options": options}

    record = mapped(server_event(**fields)).event

    assert (record.get("opt_out_type") == "LDP") is ldp


def test_the_documented_ldu_example_with_its_placeholder_address_is_accepted() -> None:
    """[USING] "To enable LDU and have Meta perform geolocation": `client_ip_address`
    is `256.256.256.256`, which is no address: it is dropped, and said so."""
    raw = {
        "event_name": "Purchase",
        "event_time": NOW - 60,
        "user_data": {"em": "jane@example.com", "client_ip_address": "256.256.256.256"},
        "custom_data": {"currency": "USD", "value": "42.00"},
        "data_processing_options": ["LDU"],
        "data_processing_options_country": 0,
        "data_processing_options_state": 0,
    }

    result = mapped(raw, 0)

    assert "client_ip_address" not in result.event["user_data"]
    assert result.warnings == (
        "data[0].user_data.client_ip_address is not an IP address; it was ignored",
    )
    event = parsed(result)
    assert event.custom_data is not None
    assert event.custom_data.value == 42.0
    assert event.opt_out_type == "LDP"


@pytest.mark.parametrize(
    ("fbc", "click"),
    [
        (FBC, "AbCdEfGhIjKlMnOpQrStUvWxYz1234567890"),
        (
            "fb.1.1554763741205.IwAR2F4-dbP0l7Mn1IawQQGCINEz7PYXQvwjNwB_qa2ofrHyiLjcbCRxTDMgk",
            "IwAR2F4-dbP0l7Mn1IawQQGCINEz7PYXQvwjNwB_qa2ofrHyiLjcbCRxTDMgk",
        ),
        ("fb.1.1554763741205.AbC.AQICAQMC", "AbC"),
        ("AbC", None),
        ("fb.1.x.AbC", None),
    ],
)
def test_the_click_id_is_the_fbclid_inside_fbc(fbc: str, click: str | None) -> None:
    """[EVENT] fbp and fbc: `fb.${subdomain_index}.${creation_time}.${fbclid}` (the
    Parameter Builder may append a fifth segment)."""
    assert click_id(fbc) == click


def test_a_malformed_fbc_is_dropped_and_said_so() -> None:
    result = mapped(server_event(user_data={"em": [EM], "fbc": "not-an-fbc"}), 2)

    assert "click_id" not in result.event["user_data"]
    [warning] = result.warnings
    assert warning.startswith("data[2].user_data.fbc is not fb.<subdomain index>.")
    assert warning.endswith("it was ignored")


def test_a_missing_event_id_is_derived_from_pixel_name_time_and_user_data() -> None:
    """A missing `event_id` gets a deterministic one."""
    first = mapped(server_event()).event["event_id"]
    again = mapped(server_event()).event["event_id"]
    raw_email = mapped(server_event(user_data={"em": "Jane@Example.com"})).event["event_id"]
    hashed_email = mapped(
        server_event(user_data={"em": [normalize.sha256_hex("jane@example.com")]})
    ).event["event_id"]

    assert first == again
    assert raw_email == hashed_email, "the same person sent hashed or plain gets the same id"
    assert first != mapped(server_event(event_time=NOW - 61)).event["event_id"]
    assert first != mapped(server_event(event_name="Lead")).event["event_id"]
    assert first != derived_event_id("999", "Purchase", NOW - 60, {"em": [EM]})
    assert first == derived_event_id(PIXEL, "Purchase", NOW - 60, {"em": [EM]})
    assert len(first) <= 128


@pytest.mark.parametrize(
    ("fields", "detail"),
    [
        ({"event_name": ""}, "data[0].event_name is required"),
        ({"event_name": 7}, "data[0].event_name is required"),
        ({"event_time": "yesterday"}, "data[0].event_time must be a unix time in seconds"),
        ({"event_time": 1.5}, "data[0].event_time must be a unix time in seconds"),
        ({"event_time": True}, "data[0].event_time must be a unix time in seconds"),
        ({"user_data": None}, "data[0].user_data is required"),
        ({"action_source": "web"}, "data[0].action_source is not a documented action source"),
        ({"action_source": []}, "data[0].action_source is not a documented action source"),
        ({"event_id": 12}, "data[0].event_id must be a string"),
        ({"opt_out": "yes"}, "data[0].opt_out must be a boolean"),
        ({"data_processing_options": [1]}, "data[0].data_processing_options must be"),
        ({"custom_data": []}, "data[0].custom_data must be an object"),
        ({"custom_data": {"content_ids": [{"id": 1}]}}, "data[0].custom_data.content_ids"),
        ({"user_data": {"em": [1]}}, "data[0].user_data.em must be a string or an array"),
        ({"event_source_url": 5}, "data[0].event_source_url must be a string"),
    ],
)
def test_an_invalid_event_names_its_index_and_field(fields: dict[str, Any], detail: str) -> None:
    """[EVENT] the required and typed parameters of a server event."""
    result = map_event(server_event(**fields), 0, PIXEL, ADVERTISER)

    assert isinstance(result, Invalid)
    assert result.detail.startswith(detail)


@pytest.mark.parametrize(
    ("query", "form", "body", "events", "test_code"),
    [
        # [SDK] form-encoded, data a JSON array of JSON strings, test code in the form
        (
            {},
            {"data": ['["{\\"event_name\\": \\"Lead\\"}"]'], "test_event_code": ["T1"]},
            None,
            1,
            "T1",
        ),
        # [SDK] requests' expansion of a list: one data field per event
        ({}, {"data": ['{"event_name": "A"}', '{"event_name": "B"}']}, None, 2, None),
        # [SDK] EventRequestAsync: a JSON array of objects in the form
        ({}, {"data": ['[{"event_name": "A"}, {"event_name": "B"}]']}, None, 2, None),
        # [USING] JSON body with a real array and a test code
        ({}, {}, {"data": [{"event_name": "A"}], "test_event_code": "TEST123"}, 1, "TEST123"),
        # a JSON body whose data is a JSON string
        ({}, {}, {"data": '[{"event_name": "A"}]'}, 1, None),
        # everything in the query string
        ({"data": ['[{"event_name": "A"}]'], "test_event_code": ["Q"]}, {}, None, 1, "Q"),
    ],
)
def test_data_and_the_test_code_come_from_wherever_the_client_put_them(
    query: dict[str, list[str]],
    form: dict[str, list[str]],
    body: object,
    events: int,
    test_code: str | None,
) -> None:
    """[USING] curl `-F` (multipart), JSON bodies; [PIXEL-EVENTS] `data`
    list<JSON-encoded string>, form-urlencoded example."""
    read = read_request(query, form, body)

    assert isinstance(read, EventsRequest)
    assert len(read.events) == events
    assert all(isinstance(event, dict) for event in read.events)
    assert read.test_event_code == test_code


@pytest.mark.parametrize(
    ("form", "body", "message"),
    [
        ({}, None, "(#100) The parameter data is required"),
        ({"data": ["{not json"]}, None, "(#100) data must be a JSON array of events"),
        ({"data": ['["{not json"]']}, None, "(#100) data[0] is not valid JSON"),
        ({"data": ["[]"]}, None, "(#100) data must hold at least one event"),
        ({}, [1], "(#100) the JSON body must be an object"),
        ({}, {"data": [{}], "test_event_code": 5}, "(#100) test_event_code must be a string"),
        ({}, {"data": [{}] * 1001}, "(#100) data holds more than 1000 events"),
    ],
)
def test_a_malformed_call_is_a_400_invalid_parameter(
    form: dict[str, list[str]], body: object, message: str
) -> None:
    """[PIXEL-EVENTS] error code 100, "Invalid parameter"; [USING] up to 1,000 events."""
    read = read_request({}, form, body)

    assert isinstance(read, GraphError)
    assert (read.status, read.code, read.message) == (400, 100, message)


@pytest.mark.parametrize(
    ("query", "form", "body", "authorization", "token"),
    [
        ({"access_token": ["q"]}, {}, None, None, "q"),
        ({}, {"access_token": ["f"]}, None, None, "f"),
        ({}, {}, {"access_token": "b"}, None, "b"),
        ({}, {}, None, "Bearer h", "h"),
        ({}, {}, None, "OAuth h", "h"),
        ({}, {}, None, "Basic h", None),
        ({}, {}, {"access_token": 5}, None, None),
        ({}, {}, None, None, None),
    ],
)
def test_the_access_token_is_read_from_the_query_the_form_or_the_body(
    query: dict[str, list[str]],
    form: dict[str, list[str]],
    body: object,
    authorization: str | None,
    token: str | None,
) -> None:
    """[USING] "Attach your generated secure access token using the `access_token`
    query parameter"; the curl example sends it as a form field."""
    assert access_token(query, form, body, authorization) == token


def test_the_answer_and_the_error_have_the_documented_shapes() -> None:
    """[PIXEL-EVENTS] return type `{events_received, messages, fbtrace_id}`; Graph
    error objects (`message`, `type`, `code`, `error_user_title`, `error_user_msg`,
    `fbtrace_id`)."""
    assert response(2, ["m"], "Atrace") == {
        "events_received": 2,
        "messages": ["m"],
        "fbtrace_id": "Atrace",
    }
    assert invalid_parameter("data[1].event_time is required").body("Atrace") == {
        "error": {
            "message": "(#100) data[1].event_time is required",
            "type": "OAuthException",
            "code": 100,
            "is_transient": False,
            "error_user_title": "Invalid parameter",
            "error_user_msg": "data[1].event_time is required",
            "fbtrace_id": "Atrace",
        }
    }
