"""What the collector accepts, a worker decides: every request shape of every dialect, with
unicode, control characters, empty and longest strings, IPv6 and event times at the edges of
the window. An event the collector accepts (`prepare_event`, with the collector's limits)
goes through the worker's stages, appended by Kafka as late as the collector allows, and
through `decide`: each gives a decision, never a DLQ record or an error."""

from __future__ import annotations

import io
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.core.parse import ParseLimits, Rejected
from pipeline.core.policy import PolicyConfig
from pipeline.ingest.client import APPEND_MARGIN_S, Prepared, prepare_event
from pipeline.ingest.dialects import Invalid, Mapped, meta, pinterest
from pipeline.ingest.dialects.native import events_source
from pipeline.offline.replay import run_decide
from schemas import codec
from tests.unit.factories import NOW
from tests.unit.stages.chain import Chain

REQUEST_TIMEOUT_S = 10
"""The collector's default delivery timeout (`PIPELINE_COLLECTOR_DELIVERY_TIMEOUT_SECONDS`)."""
COLLECTOR = ParseLimits(require_key=False, age_margin_s=REQUEST_TIMEOUT_S + APPEND_MARGIN_S)
WEEK = 7 * 24 * 3600
CONTRACT = settings(
    max_examples=500,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# -- values ---------------------------------------------------------------------------------

edge_texts = st.sampled_from(
    ["", " ", "clk-é", "a\x00b", "x" * 256, "x" * 257, "🙂", "\u200b", "\r\n", "é" * 128]
)
texts = st.one_of(
    st.text(st.characters(codec="utf-8"), min_size=1, max_size=256),
    st.text(st.characters(min_codepoint=0, max_codepoint=31), min_size=1, max_size=5),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=256),
    edge_texts,
)
"""Strings of every kind: unicode, control characters, empty and longest."""
addresses = st.one_of(
    st.ip_addresses().map(str),
    st.ip_addresses(v=6).map(lambda a: a.exploded),
    st.sampled_from(["::ffff:203.0.113.9", "fe80::1%eth0", "2001:db8::1", "203.0.113.5"]),
    edge_texts,
)
times = st.one_of(
    st.integers(NOW - WEEK - 60, NOW + 3600 + 60),
    st.sampled_from(
        [
            NOW - WEEK + COLLECTOR.age_margin_s,
            NOW - WEEK + COLLECTOR.age_margin_s - 1,
            NOW - WEEK,
            NOW + 3600,
            NOW + 3601,
        ]
    ),
)
hashes = st.text("0123456789abcdef", min_size=64, max_size=64)
emails = st.one_of(hashes, st.emails(), edge_texts)
currencies = st.one_of(st.sampled_from(["USD", "eur", "GBP"]), edge_texts)
decimals = st.one_of(st.sampled_from(["72.39", "0", "1000", "0.5"]), edge_texts)
appended_after = st.integers(0, (REQUEST_TIMEOUT_S + APPEND_MARGIN_S) * 1000)
"""How long after the collector's check Kafka appends the record (ms)."""


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


def without_nones(document: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in document.items() if v is not None}


# -- request shapes --------------------------------------------------------------------------

pinterest_events = st.builds(
    lambda name, source, when, event_id, user, custom, url, opt_out, app: without_nones(
        {
            "event_name": name,
            "action_source": source,
            "event_time": when,
            "event_id": event_id,
            "user_data": user,
            "custom_data": custom,
            "event_source_url": url,
            "opt_out": opt_out,
            **app,
        }
    ),
    st.sampled_from(sorted(pinterest.V5_EVENT_NAMES)),
    st.sampled_from(sorted(pinterest.ACTION_SOURCES)),
    times,
    texts,
    st.builds(
        lambda em, maids, ip, ua, click, external: without_nones(
            {
                "em": em,
                "hashed_maids": maids,
                "client_ip_address": ip,
                "client_user_agent": ua,
                "click_id": click,
                "external_id": external,
            }
        ),
        st.lists(emails, max_size=2),
        st.lists(hashes, max_size=2),
        optional(addresses),
        optional(texts),
        optional(texts),
        optional(st.lists(texts, max_size=2)),
    ),
    optional(
        st.builds(
            lambda value, currency, ids, order, opt: without_nones(
                {
                    "value": value,
                    "currency": currency,
                    "content_ids": ids,
                    "order_id": order,
                    "opt_out_type": opt,
                }
            ),
            optional(decimals),
            optional(currencies),
            optional(st.lists(texts, max_size=2)),
            optional(texts),
            optional(st.sampled_from(["LDP", "LDP,other", "", "é"])),
        )
    ),
    optional(texts),
    st.booleans(),
    st.fixed_dictionaries(
        {},
        optional={
            "app_id": texts,
            "app_name": texts,
            "app_version": texts,
            "os_version": texts,
            "device_model": texts,
        },
    ),
)

meta_events = st.builds(
    lambda name, source, when, event_id, user, custom, url, options, app: without_nones(
        {
            "event_name": name,
            "action_source": source,
            "event_time": when,
            "event_id": event_id,
            "user_data": user,
            "custom_data": custom,
            "event_source_url": url,
            "data_processing_options": options,
            "app_data": app,
        }
    ),
    st.one_of(st.sampled_from(sorted(meta.STANDARD_EVENTS)), texts),
    st.sampled_from(["website", "app", "physical_store", "email", "system_generated"]),
    times,
    optional(texts),
    st.builds(
        lambda em, ph, external, ip, ua, fbc, fbp, madid: without_nones(
            {
                "em": em,
                "ph": ph,
                "external_id": external,
                "client_ip_address": ip,
                "client_user_agent": ua,
                "fbc": fbc,
                "fbp": fbp,
                "madid": madid,
            }
        ),
        st.one_of(emails, st.lists(emails, max_size=2)),
        optional(st.one_of(hashes, st.lists(hashes, max_size=2))),
        optional(st.one_of(texts, st.lists(texts, max_size=2))),
        optional(addresses),
        optional(texts),
        optional(st.one_of(texts.map(lambda t: f"fb.1.1554763741205.{t}"), texts)),
        optional(texts),
        optional(texts),
    ),
    optional(
        st.fixed_dictionaries(
            {},
            optional={
                "value": st.one_of(st.floats(allow_nan=False, width=32), decimals),
                "currency": currencies,
                "content_ids": st.lists(texts, max_size=2),
                "order_id": texts,
            },
        )
    ),
    optional(texts),
    optional(st.lists(st.sampled_from(["LDU", ""]), max_size=1)),
    optional(
        st.fixed_dictionaries(
            {"extinfo": st.sampled_from([["i2", "app", "1.0", "1", "17.4"], ["a2"], ["x"]])},
            optional={"advertiser_tracking_enabled": st.booleans()},
        )
    ),
)

native_events = st.one_of(
    st.builds(
        lambda name, when, event_id, user, browser, url: without_nones(
            {
                "event_id": event_id,
                "event_name": name,
                "event_time": when,
                "action_source": "web",
                "user_data": user,
                "browser": browser,
                "event_source_url": url,
            }
        ),
        st.sampled_from(["checkout", "page_visit", "custom"]),
        times,
        texts,
        st.fixed_dictionaries(
            {},
            optional={
                "em": st.lists(emails, max_size=2),
                "ph": st.lists(hashes, max_size=1),
                "click_id": texts,
                "client_ip_address": addresses,
                "client_user_agent": texts,
            },
        ),
        optional(
            st.fixed_dictionaries(
                {}, optional={"cookie_id": texts, "dnt": st.booleans(), "gpc": st.booleans()}
            )
        ),
        optional(texts),
    ),
    st.builds(
        lambda name, when, event_id, session, domain, kind, ip: without_nones(
            {
                "event_id": event_id,
                "event_name": name,
                "event_time": when,
                "session_id": session,
                "site_domain": domain,
                "widget_type": kind,
                "client_ip_address": ip,
            }
        ),
        st.sampled_from(["save_click", "widget_view"]),
        times,
        texts,
        optional(texts),
        texts,
        st.sampled_from(["save_button", "pin_widget"]),
        optional(addresses),
    ),
    st.builds(
        lambda source, when, event_id, device: without_nones(
            {
                "event_id": event_id,
                "event_name": "add_to_cart",
                "event_time": when,
                "action_source": source,
                "device": device,
            }
        ),
        st.sampled_from(["app_ios", "app_android", "offline"]),
        times,
        texts,
        optional(
            st.fixed_dictionaries(
                {},
                optional={
                    "device_id": texts,
                    "advertising_id": texts,
                    "att_status": st.sampled_from(["authorized", "denied"]),
                    "os_version": texts,
                },
            )
        ),
    ),
)


# -- the contract ------------------------------------------------------------------------------


def accepted(source: str, document: dict[str, Any]) -> Prepared | None:
    """The record the collector would write for `document`, or None if it refuses it."""
    prepared = prepare_event(source, document, now=NOW, limits=COLLECTOR)  # type: ignore[arg-type]
    return None if isinstance(prepared, Rejected) else prepared


def assert_decided(source: str, prepared: Prepared, appended_ms: int) -> None:
    outputs = Chain(in_process=True).raw(
        source, prepared.value, NOW * 1000 + appended_ms, key=prepared.key
    )
    reasons = [o.record.get("reason") for o in outputs if o.destination == "dlq"]
    assert reasons == [], reasons
    assert [o.destination for o in outputs].count("audit") == 1

    line = {"source": source, "event": codec.loads(prepared.value), "now": NOW + appended_ms / 1000}
    sink = io.BytesIO()
    run_decide(io.BytesIO(json.dumps(line).encode()), sink, io.StringIO(), PolicyConfig())
    decided = codec.loads(sink.getvalue().splitlines()[0])
    assert "error" not in decided, decided


@CONTRACT
@given(event=pinterest_events, appended=appended_after)
def test_what_the_pinterest_endpoint_accepts_is_decided(
    event: dict[str, Any], appended: int
) -> None:
    batch = pinterest.read_batch(codec.dumps({"data": [event]}))
    if isinstance(batch, Invalid):
        return
    mapped = pinterest.map_event(batch.events[0], "adv-1")
    if isinstance(mapped, Mapped) and (prepared := accepted(mapped.source, mapped.event)):
        assert_decided(mapped.source, prepared, appended)


@CONTRACT
@given(event=meta_events, appended=appended_after)
def test_what_the_meta_endpoint_accepts_is_decided(event: dict[str, Any], appended: int) -> None:
    mapped = meta.map_event(event, 0, "pixel-1", "adv-1")
    if isinstance(mapped, Mapped) and (prepared := accepted(mapped.source, mapped.event)):
        assert_decided(mapped.source, prepared, appended)


@CONTRACT
@given(event=native_events, appended=appended_after)
def test_what_the_native_endpoint_accepts_is_decided(event: dict[str, Any], appended: int) -> None:
    source = events_source(event, "widget" if "widget_type" in event else None)
    document = {**event, "advertiser_id": "adv-1"}
    if (prepared := accepted(source, document)) is not None:
        assert_decided(source, prepared, appended)


def test_a_click_id_the_platform_could_not_have_issued_is_refused_naming_the_field() -> None:
    for click in ("clk-é", "clk 1", "clk\x00", ""):
        document = {
            "event_id": "e-1",
            "event_name": "checkout",
            "event_time": NOW - 30,
            "action_source": "web",
            "advertiser_id": "adv-1",
            "user_data": {"click_id": click},
        }
        refused = prepare_event("tag", document, now=NOW, limits=COLLECTOR)

        assert isinstance(refused, Rejected), click
        assert refused.detail.startswith("user_data.click_id: string_"), refused.detail


def test_an_event_at_the_edge_of_the_window_is_refused_unless_decided_when_appended() -> None:
    edge = {
        "event_id": "e-edge",
        "event_name": "checkout",
        "action_source": "web",
        "advertiser_id": "adv-1",
    }
    too_close = {**edge, "event_time": NOW - WEEK + COLLECTOR.age_margin_s - 1}
    in_time = {**edge, "event_time": NOW - WEEK + COLLECTOR.age_margin_s}

    assert isinstance(prepare_event("tag", too_close, now=NOW, limits=COLLECTOR), Rejected)
    prepared = accepted("tag", in_time)
    assert prepared is not None
    assert_decided("tag", prepared, (REQUEST_TIMEOUT_S + APPEND_MARGIN_S) * 1000)


def test_an_event_is_bounded_by_when_kafka_appended_it_not_by_when_it_is_read() -> None:
    """A worker reading a day-long backlog decides what the collector accepted: the window
    is checked against the moment of the append, so a decision never depends on lag."""
    appended_ms = (NOW - WEEK + 600) * 1000  # read now: a week after it was appended
    document = {
        "event_id": "e-backlog",
        "event_name": "checkout",
        "event_time": appended_ms // 1000 - 24 * 3600,
        "action_source": "web",
        "advertiser_id": "adv-1",
    }
    prepared = prepare_event("tag", document, now=appended_ms / 1000 - 1, limits=COLLECTOR)
    assert not isinstance(prepared, Rejected)

    outputs = Chain(in_process=True).raw("tag", prepared.value, appended_ms, key=prepared.key)

    assert [o.destination for o in outputs].count("audit") == 1
    assert "dlq" not in [o.destination for o in outputs]
