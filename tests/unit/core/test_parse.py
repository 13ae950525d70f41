"""Inputs and DLQ reasons: parsing returns a valid record or a reject, never raises."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.parse import (
    ParseLimits,
    Rejected,
    parse_consent_change,
    parse_event,
    processing_error,
)
from schemas import codec
from schemas.consent import ConsentChange
from schemas.events import SdkEvent, Source, TagEvent, WidgetEvent
from tests.unit.factories import NOW, RAW_EVENTS, merged, sdk_event, tag_event, widget_event

KEY = b"user-1"


def parse(source: Source, raw: dict[str, Any] | bytes, **kwargs: Any) -> Any:
    data = raw if isinstance(raw, bytes) else codec.dumps(raw)
    return parse_event(
        source, data, now=kwargs.pop("now", NOW), key=kwargs.pop("key", KEY), **kwargs
    )


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize(
    ("source", "model"), [("tag", TagEvent), ("sdk", SdkEvent), ("widget", WidgetEvent)]
)
def test_a_valid_event_of_each_source_parses(
    source: Source, model: type[TagEvent | SdkEvent | WidgetEvent]
) -> None:
    event = parse(source, RAW_EVENTS[source]())

    assert isinstance(event, model)
    assert event.source == source
    assert event.raw_pii_hashed is False


def test_optional_fields_take_their_defaults() -> None:
    event = parse(
        "tag",
        {"event_id": "e", "event_name": "lead", "event_time": NOW, "advertiser_id": "a"},
    )

    assert isinstance(event, TagEvent)
    assert (event.surface, event.opt_out, event.opt_out_type, event.user_id) == (
        "off_platform",
        False,
        None,
        None,
    )
    assert event.action_source == "web"


def test_unknown_fields_are_tolerated_and_dropped() -> None:
    raw = tag_event(
        new_top_level_field={"x": 1},
        user_data={"future_id": "secret"},
        custom_data={"coupon": "SAVE10"},
    )

    event = parse("tag", raw)

    assert isinstance(event, TagEvent)
    dumped = event.model_dump()
    assert "new_top_level_field" not in dumped
    assert "future_id" not in dumped["user_data"]
    assert "coupon" not in dumped["custom_data"]


@pytest.mark.parametrize(
    ("value", "parsed_value"),
    [("72.39", 72.39), ("14", 14.0), ("-0.5", -0.5), ("1e3", 1000.0), (72.39, 72.39), (3, 3.0)],
)
def test_a_value_may_be_a_decimal_string_or_a_number_and_is_kept_as_a_float(
    value: str | float, parsed_value: float
) -> None:
    event = parse("tag", tag_event(custom_data={"value": value}))

    assert isinstance(event, TagEvent)
    assert event.custom_data is not None
    assert event.custom_data.value == parsed_value
    assert isinstance(event.custom_data.value, float)


def test_sdk_events_keep_a_click_id() -> None:
    event = parse("sdk", sdk_event(user_data={"click_id": "dj0yJnU9abc"}))

    assert isinstance(event, SdkEvent)
    assert event.user_data is not None
    assert event.user_data.click_id == "dj0yJnU9abc"


def test_raw_email_and_phone_are_hashed_at_ingest_and_flagged() -> None:
    raw = tag_event(user_data={"em": ["  Alice@Example.com"], "ph": ["+1 (650) 555-1234"]})

    event = parse("tag", raw)

    assert isinstance(event, TagEvent)
    assert event.user_data is not None
    assert event.user_data.em == (sha("alice@example.com"),)
    assert event.user_data.ph == (sha("16505551234"),)
    assert event.raw_pii_hashed is True
    assert "alice" not in event.model_dump_json().lower()


def test_uppercase_digests_are_lowercased_without_the_raw_flag() -> None:
    event = parse("sdk", sdk_event(user_data={"em": [sha("a").upper()]}))

    assert isinstance(event, SdkEvent)
    assert event.user_data is not None
    assert event.user_data.em == (sha("a"),)
    assert event.raw_pii_hashed is False


def test_the_raw_flag_cannot_be_set_by_the_input() -> None:
    event = parse("tag", tag_event(user_data={"raw_pii_hashed": True, "_raw_pii_hashed": True}))

    assert isinstance(event, TagEvent)
    assert event.raw_pii_hashed is False


def test_a_contact_point_that_is_neither_hash_nor_email_is_a_schema_violation() -> None:
    result = parse("tag", tag_event(user_data={"em": [sha("a"), "N0T-AN-EMAIL"]}))

    assert result == Rejected("schema_violation", "user_data.em.1: string_pattern_mismatch")


def test_raw_contact_points_do_not_hide_other_errors() -> None:
    result = parse("tag", tag_event(event_time="yesterday", user_data={"em": ["a@example.com"]}))

    assert isinstance(result, Rejected)
    assert result.reason == "schema_violation"
    assert "event_time: int_type" in result.detail
    assert "example.com" not in result.detail


def test_hashed_maids_must_be_digests() -> None:
    result = parse(
        "sdk", sdk_event(user_data={"hashed_maids": ["38400000-8cf0-11bd-b23e-10b96e40000d"]})
    )

    assert result == Rejected(
        "schema_violation", "user_data.hashed_maids.0: string_pattern_mismatch"
    )


@pytest.mark.parametrize(
    ("source", "raw", "detail"),
    [
        ("tag", tag_event(event_id=...), "event_id: missing"),
        ("tag", tag_event(event_id=""), "event_id: string_too_short"),
        ("tag", tag_event(event_id="e" * 129), "event_id: string_too_long"),
        ("tag", tag_event(event_name="purchase"), "event_name: literal_error"),
        ("tag", tag_event(event_time="1700000000"), "event_time: int_type"),
        ("tag", tag_event(event_time=1.7e9), "event_time: int_type"),
        ("tag", tag_event(advertiser_id=...), "advertiser_id: missing"),
        ("tag", tag_event(action_source="app_ios"), "action_source: literal_error"),
        ("tag", tag_event(opt_out=1), "opt_out: bool_type"),
        ("tag", tag_event(opt_out_type="LDU"), "opt_out_type: literal_error"),
        ("tag", tag_event(surface="elsewhere"), "surface: literal_error"),
        ("tag", tag_event(browser={"dnt": "1"}), "browser.dnt: bool_type"),
        (
            "tag",
            tag_event(user_data={"client_ip_address": "999.1.1.1"}),
            "user_data.client_ip_address: value_error",
        ),
        ("tag", tag_event(custom_data={"value": "12,50"}), "custom_data.value: value_error"),
        ("tag", tag_event(custom_data={"value": "NaN"}), "custom_data.value: value_error"),
        ("tag", tag_event(custom_data={"value": "1e999"}), "custom_data.value: value_error"),
        ("tag", tag_event(custom_data={"value": True}), "custom_data.value: float_type"),
        (
            "tag",
            tag_event(custom_data={"opt_out_type": ["LDP"]}),
            "custom_data.opt_out_type: string_type",
        ),
        (
            "tag",
            tag_event(custom_data={"currency": "dollars"}),
            "custom_data.currency: string_pattern_mismatch",
        ),
        ("sdk", sdk_event(action_source=...), "action_source: missing"),
        ("sdk", sdk_event(device={"att_status": "maybe"}), "device.att_status: literal_error"),
        ("widget", widget_event(event_name="page_visit"), "event_name: literal_error"),
        ("widget", widget_event(widget_type=...), "widget_type: missing"),
        ("widget", widget_event(site_domain=...), "site_domain: missing"),
        ("widget", b"[1, 2]", "body: model_type"),
        ("widget", b'"a string"', "body: model_type"),
    ],
)
def test_schema_violations_name_the_field_and_the_error_type(
    source: Source, raw: dict[str, Any] | bytes, detail: str
) -> None:
    assert parse(source, raw) == Rejected("schema_violation", detail)


def test_widget_events_may_omit_the_advertiser() -> None:
    event = parse("widget", widget_event(advertiser_id=...))

    assert isinstance(event, WidgetEvent)
    assert event.advertiser_id is None


def test_many_errors_are_summarized() -> None:
    result = parse("tag", b"{}")

    assert isinstance(result, Rejected)
    assert result.detail.startswith("event_id: missing; event_time: missing; event_name: missing")
    assert result.detail.endswith("(+1 more)")


def test_invalid_json() -> None:
    assert parse("tag", b'{"event_id": ') == Rejected("invalid_json", "body: json_invalid")


@pytest.mark.parametrize("data", [b"", b"   "])
def test_empty_body_is_invalid_json(data: bytes) -> None:
    assert parse("tag", data) == Rejected("invalid_json", "body: empty")


def test_a_null_record_is_invalid_json() -> None:
    assert parse_event("tag", None, now=NOW, key=KEY) == Rejected("invalid_json", "body: empty")


def test_invalid_utf8() -> None:
    data = b'{"event_id": "caf\xe9"}'

    assert parse("tag", data) == Rejected("invalid_utf8", "body: invalid_utf8 at byte 17")


def test_too_old_is_more_than_seven_days_before_now() -> None:
    week = 7 * 24 * 3600

    assert parse("tag", tag_event(event_time=NOW - week)) != Rejected(
        "too_old", "event_time: too_old"
    )
    assert parse("tag", tag_event(event_time=NOW - week - 1)) == Rejected(
        "too_old", "event_time: too_old"
    )


def test_in_future_is_more_than_one_hour_after_now() -> None:
    assert isinstance(parse("tag", tag_event(event_time=NOW + 3600)), TagEvent)
    assert parse("tag", tag_event(event_time=NOW + 3601)) == Rejected(
        "in_future", "event_time: in_future"
    )


def test_oversized() -> None:
    limits = ParseLimits(max_bytes=100)
    data = codec.dumps(tag_event())

    assert parse("tag", data, limits=limits) == Rejected(
        "oversized", f"body: oversized ({len(data)} > 100 bytes)"
    )


def test_default_size_limit_is_64_kib() -> None:
    padding = "x" * (64 * 1024)

    result = parse("tag", tag_event(padding=padding))

    assert isinstance(result, Rejected)
    assert result.reason == "oversized"


@pytest.mark.parametrize("key", [None, b""])
def test_missing_key_when_required(key: bytes | None) -> None:
    assert parse("tag", tag_event(), key=key) == Rejected("missing_key", "key: missing")


def test_missing_key_is_accepted_when_not_required() -> None:
    event = parse("tag", tag_event(), key=None, limits=ParseLimits(require_key=False))

    assert isinstance(event, TagEvent)


def test_consent_change_parses_partial_fields() -> None:
    data = codec.dumps(
        {"user_id": "u", "changed_at": 5, "settings": {"personalization": None}, "extra": 1}
    )

    result = parse_consent_change(data, key=b"u")

    assert isinstance(result, ConsentChange)
    assert result.settings is not None
    assert result.settings.model_fields_set == {"personalization"}


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        ({"changed_at": 5}, "user_id: missing"),
        ({"user_id": "u", "changed_at": "5"}, "changed_at: int_type"),
        (
            {"user_id": "u", "changed_at": 5, "profile": {"country": "USA"}},
            "profile.country: string_pattern_mismatch",
        ),
        (
            {"user_id": "u", "changed_at": 5, "profile": {"birth_year": 1800}},
            "profile.birth_year: greater_than_equal",
        ),
        (
            {"user_id": "u", "changed_at": 5, "device": {"ads_opt_out": True}},
            "device.device_id: missing",
        ),
    ],
)
def test_consent_change_schema_violations(raw: dict[str, Any], detail: str) -> None:
    assert parse_consent_change(codec.dumps(raw), key=b"u") == Rejected("schema_violation", detail)


def test_consent_change_from_the_future_is_rejected_when_now_is_given() -> None:
    data = codec.dumps({"user_id": "u", "changed_at": (NOW + 7200) * 1000})

    assert isinstance(parse_consent_change(data, key=b"u"), ConsentChange)
    assert parse_consent_change(data, key=b"u", now=NOW) == Rejected(
        "in_future", "changed_at: in_future"
    )


def test_processing_error_names_only_the_exception_type() -> None:
    rejected = processing_error(KeyError("user-1@example.com"), "route")

    assert rejected == Rejected("processing_error", "route: KeyError")


# The parser never raises, and a reject's detail never repeats the input.

SECRET = "S3CR3T-alice@example.com"


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=512), source=st.sampled_from(["tag", "sdk", "widget"]))
def test_parser_never_raises_on_arbitrary_bytes(data: bytes, source: Source) -> None:
    result = parse_event(source, data, now=NOW, key=KEY)

    assert isinstance(result, TagEvent | SdkEvent | WidgetEvent | Rejected)
    assert isinstance(parse_consent_change(data, key=KEY), ConsentChange | Rejected)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    source=st.sampled_from(["tag", "sdk", "widget"]),
    path=st.sampled_from(
        [
            ("event_id",),
            ("event_time",),
            ("user_id",),
            ("custom_data",),
            ("custom_data", "value"),
            ("user_data",),
            ("user_data", "em"),
            ("user_data", "client_ip_address"),
            ("browser",),
            ("browser", "gpc"),
            ("device",),
            ("device", "os_version"),
            ("client_ip_address",),
        ]
    ),
    value=json_values,
)
def test_parser_never_raises_on_mutated_events(
    source: Source, path: tuple[str, ...], value: Any
) -> None:
    raw = RAW_EVENTS[source]()
    override: dict[str, Any] = {path[-1]: value}
    for name in reversed(path[:-1]):
        override = {name: override}

    result = parse(source, merged(raw, override))

    assert isinstance(result, TagEvent | SdkEvent | WidgetEvent | Rejected)


@settings(max_examples=200, deadline=None)
@given(
    source=st.sampled_from(["tag", "sdk", "widget"]),
    field=st.sampled_from(
        [
            "event_id",
            "event_time",
            "event_name",
            "user_id",
            "surface",
            "opt_out",
            "opt_out_type",
            "custom_data",
            "browser",
            "widget_type",
            "action_source",
        ]
    ),
    wrap=st.sampled_from(["plain", "list", "long", "object"]),
)
def test_reject_details_never_contain_the_value(source: Source, field: str, wrap: str) -> None:
    value: Any = {
        "plain": SECRET,
        "list": [SECRET],
        "long": SECRET * 100,
        "object": {SECRET: SECRET},
    }[wrap]
    raw = RAW_EVENTS[source](**{field: value})
    raw["user_data"] = {"em": [SECRET], "client_ip_address": SECRET}
    raw["client_ip_address"] = SECRET

    result = parse(source, raw)

    assert isinstance(result, Rejected)
    assert "S3CR3T" not in result.detail
    assert "example.com" not in result.detail
