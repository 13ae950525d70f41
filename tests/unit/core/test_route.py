"""Outputs: which records go where, and what each may contain."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from pipeline import catalogue
from pipeline.core.consent import fold
from pipeline.core.parse import Rejected
from pipeline.core.policy import Decision, PolicyConfig, decide
from pipeline.core.route import (
    Origin,
    Output,
    audit_record,
    dlq_record,
    route,
    subject_key,
)
from schemas import codec
from schemas.events import Source
from schemas.outputs import (
    ActivityRecord,
    AuditRecord,
    DeidentifiedRecord,
    DlqRecord,
    MeasurementRecord,
    PartnerShareRecord,
)
from tests.unit.core.policy_cases import CASES, Case
from tests.unit.factories import (
    HASH_A,
    NOW,
    RAW_EVENTS,
    USER,
    adult_in,
    change,
    parsed,
    pseudonymizer,
    sdk_event,
    tag_event,
    widget_event,
)

SCHEMAS: dict[str, type[BaseModel]] = {
    "personalization": ActivityRecord,
    "ads": ActivityRecord,
    "partner_share": PartnerShareRecord,
    "measurement": MeasurementRecord,
    "deidentified": DeidentifiedRecord,
}


def routed(source: Source, raw: dict[str, Any], country: str | None = "US") -> list[Output]:
    event = parsed(source, raw)
    consent = adult_in(country)
    return route(event, decide(event, consent, PolicyConfig()), consent, pseudonymizer())


def by_destination(outputs: list[Output]) -> dict[str, Output]:
    return {output.destination: output for output in outputs}


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (tag_event(), USER),
        (tag_event(user_id=...), "anon:cookie-1"),
        (tag_event(user_id=..., browser=...), "anon:evt-1"),
        (sdk_event(user_id=...), "anon:device-1"),
        (
            sdk_event(user_id=..., device=..., action_source="web", browser={"cookie_id": "c9"}),
            "anon:c9",
        ),
        (widget_event(user_id=...), "anon:cookie-3"),
    ],
)
def test_subject_key(raw: dict[str, Any], key: str) -> None:
    source: Source = (
        "sdk" if "device" in raw or "app" in raw else "widget" if "widget_type" in raw else "tag"
    )

    assert subject_key(parsed(source, raw)) == key


@pytest.mark.parametrize("case", CASES, ids=[case.rule for case in CASES])
def test_identified_outputs_only_for_allowed_purposes(case: Case) -> None:
    event = parsed(case.source, case.event)
    consent = None if case.consent is None else fold(change(**raw) for raw in case.consent)
    decision = decide(event, consent, PolicyConfig(**case.config))

    destinations = [
        output.destination for output in route(event, decision, consent, pseudonymizer())
    ]

    expected = [
        name
        for name, allowed in [
            ("personalization", decision.personalization == "allow"),
            ("ads", decision.ads == "allow"),
            ("partner_share", decision.partner_sharing == "allow"),
            ("measurement", decision.measurement == "identified"),
            ("deidentified", True),
        ]
        if allowed
    ]
    assert destinations == expected


@pytest.mark.parametrize("source", ["tag", "sdk", "widget"])
def test_every_record_matches_its_documented_schema(source: Source) -> None:
    outputs = routed(source, RAW_EVENTS[source]())

    assert {output.destination for output in outputs} == set(SCHEMAS)
    for output in outputs:
        SCHEMAS[output.destination].model_validate(output.record)
        codec.dumps(output.record)


def test_keys_never_carry_the_user_id_outside_identified_outputs() -> None:
    outputs = by_destination(routed("tag", tag_event()))
    user_key = pseudonymizer().user_key(USER)

    for name in ("personalization", "ads", "partner_share"):
        assert outputs[name].key == USER.encode()
    assert outputs["measurement"].key == user_key.encode()
    assert outputs["deidentified"].key == b"1699999200|adv-1|page_visit|web|US"


def test_personalization_and_ads_records_carry_no_ip_user_agent_or_hashes() -> None:
    outputs = by_destination(routed("tag", tag_event()))

    for name in ("personalization", "ads"):
        record = outputs[name].record
        assert record["user_id"] == USER
        assert (record["event_id"], record["event_name"], record["source"]) == (
            "evt-1",
            "page_visit",
            "tag",
        )
        assert (record["content_ids"], record["value"], record["currency"]) == (
            ["sku-1"],
            12.5,
            "USD",
        )
        dumped = codec.dumps(record).decode()
        for forbidden in ("198.51.100", "Mozilla", "Firefox", HASH_A, "cookie-1", "click-1"):
            assert forbidden not in dumped


def test_partner_share_is_the_ads_record_plus_hashed_contact_points() -> None:
    raw = tag_event(user_data={"em": [HASH_A], "ph": ["+1 650 555 1234"]})
    outputs = by_destination(routed("tag", raw))

    share = outputs["partner_share"].record
    assert {k: v for k, v in share.items() if not k.startswith("hashed_")} == outputs["ads"].record
    assert share["hashed_emails"] == [HASH_A]
    assert share["hashed_phones"] == [hashlib.sha256(b"16505551234").hexdigest()]


def test_measurement_is_pseudonymous() -> None:
    record = by_destination(routed("tag", tag_event()))["measurement"].record

    assert record["user_key"] == pseudonymizer().user_key(USER)
    assert record["key_id"] == "test-1"
    assert record["ip_prefix"] == "198.51.100.0/24"
    assert (record["browser_family"], record["os_family"]) == ("Firefox", "Linux")
    dumped = codec.dumps(record).decode()
    for raw_id in (
        USER,
        "evt-1",
        "order-1",
        "click-1",
        "cookie-1",
        "ext-1",
        HASH_A,
        "198.51.100.23",
    ):
        assert raw_id not in dumped


def test_measurement_truncates_ipv6_to_48_bits() -> None:
    record = by_destination(routed("sdk", sdk_event()))["measurement"].record

    assert record["ip_prefix"] == "2001:db8:1234::/48"


def test_deidentified_record_is_reduced() -> None:
    record = by_destination(routed("widget", widget_event()))["deidentified"].record

    assert record == {
        "policy_version": "v1",
        "source": "widget",
        "action_source": "web",
        "surface": "off_platform",
        "event_name": "save_click",
        "event_hour": 1_699_999_200,
        "advertiser_id": None,
        "site_domain": "blog.example.org",
        "page_origin": "https://blog.example.org",
        "browser_family": "Safari",
        "os_family": "macOS",
        "country": "US",
        "value": None,
        "currency": None,
    }


def test_deidentified_record_is_emitted_even_when_everything_is_denied() -> None:
    event = parsed("tag", tag_event(user_id=...))
    decision = decide(event, None, PolicyConfig())

    outputs = route(event, decision, None, pseudonymizer())

    assert [output.destination for output in outputs] == ["deidentified"]
    assert outputs[0].record["country"] is None


def test_audit_record_explains_the_decision_without_the_raw_id() -> None:
    raw = tag_event(user_data={"em": ["alice@example.com"]}, browser={"dnt": True})
    event = parsed("tag", raw)
    decision = decide(event, adult_in("US"), PolicyConfig())

    output = audit_record(
        event,
        decision,
        pseudonymizer=pseudonymizer(),
        destinations=["deidentified"],
        duplicate=False,
        origin=Origin(catalogue.RAW_TAG.name, 3, 1234),
        received_at=NOW + 0.5,
        decided_at=NOW + 0.75,
    )

    record = AuditRecord.model_validate(output.record)
    assert record.user_key == pseudonymizer().user_key(USER)
    assert output.key == record.user_key.encode()
    assert record.reasons == ["browser.dnt"]
    assert record.outcomes.ads == "deny"
    assert record.raw_pii_hashed is True
    assert record.origin is not None
    assert (record.origin.topic, record.origin.partition, record.origin.offset) == (
        catalogue.RAW_TAG.name,
        3,
        1234,
    )
    assert record.consent_version == 1
    dumped = codec.dumps(output.record).decode()
    for raw_pii in (USER, "alice", "198.51.100", "cookie-1"):
        assert raw_pii not in dumped


def test_audit_record_of_an_anonymous_event_hashes_the_anonymous_subject() -> None:
    event = parsed("tag", tag_event(user_id=...))

    output = audit_record(
        event,
        decide(event, None, PolicyConfig()),
        pseudonymizer=pseudonymizer(),
        destinations=[],
        duplicate=True,
        origin=None,
        received_at=None,
        decided_at=NOW,
    )

    assert output.record["user_key"] == pseudonymizer().user_key("anon:cookie-1")
    assert output.record["duplicate"] is True
    assert "cookie-1" not in codec.dumps(output.record).decode()


def test_dlq_record_keeps_the_original_bytes_and_key() -> None:
    data, key = b'{"event_id": "\xff', b"user-1"

    output = dlq_record(
        Rejected("invalid_utf8", "body: invalid_utf8 at byte 14"),
        data=data,
        key=key,
        origin=Origin(catalogue.RAW_TAG.name, 0, 7),
        received_at=NOW,
    )

    record = DlqRecord.model_validate(output.record)
    assert (record.reason, record.detail, record.size) == (
        "invalid_utf8",
        "body: invalid_utf8 at byte 14",
        15,
    )
    assert base64.b64decode(record.original) == data
    assert record.key is not None
    assert base64.b64decode(record.key) == key
    assert output.key == key
    codec.dumps(output.record)


def test_dlq_record_of_a_null_record() -> None:
    output = dlq_record(
        Rejected("invalid_json", "body: empty"), data=None, key=None, origin=None, received_at=None
    )

    assert DlqRecord.model_validate(output.record).original == ""
    assert output.key is None


# A de-identified record contains no identifier, for any input.

identifiers = st.text(alphabet="ABCDEFGHJKLMNPQRSTUVWXYZ23456789", min_size=10, max_size=16).map(
    lambda text: "Q" + text
)


@settings(max_examples=150, deadline=None)
@given(
    source=st.sampled_from(["tag", "sdk", "widget"]),
    user_id=identifiers,
    event_id=identifiers,
    cookie_id=identifiers,
    device_id=identifiers,
    advertising_id=identifiers,
    click_id=identifiers,
    order_id=identifiers,
    external_id=identifiers,
    local_part=identifiers,
    ipv4=st.ip_addresses(v=4).map(str),
    ipv6=st.ip_addresses(v=6).map(str),
    use_ipv6=st.booleans(),
    phone=st.integers(9 * 10**10, 10**11 - 1),
    minute=st.integers(0, 3599),
    decision_allows=st.booleans(),
)
def test_a_deidentified_record_contains_no_identifier(
    source: Source,
    user_id: str,
    event_id: str,
    cookie_id: str,
    device_id: str,
    advertising_id: str,
    click_id: str,
    order_id: str,
    external_id: str,
    local_part: str,
    ipv4: str,
    ipv6: str,
    use_ipv6: bool,
    phone: int,
    minute: int,
    decision_allows: bool,
) -> None:
    ip = ipv6 if use_ipv6 else ipv4
    email = f"{local_part}@mail.example.com"
    user_agent = f"Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0 uid/{cookie_id}"
    url = f"https://{source}.example.com/u/{user_id}?email={email}&click={click_id}#{order_id}"
    raw = RAW_EVENTS[source](
        event_id=event_id,
        user_id=user_id,
        event_time=NOW - 7200 + minute,
        event_source_url=url,
        page_url=url,
        browser={"cookie_id": cookie_id},
        client_ip_address=ip,
        client_user_agent=user_agent,
        device={"device_id": device_id, "advertising_id": advertising_id},
        custom_data={"order_id": order_id, "content_ids": [external_id]},
        user_data={
            "em": [email],
            "ph": [f"+{phone}"],
            "external_id": [external_id],
            "client_ip_address": ip,
            "client_user_agent": user_agent,
            "click_id": click_id,
        },
    )
    event = parsed(source, raw)
    consent = adult_in("US") if decision_allows else None
    decision: Decision = decide(event, consent, PolicyConfig())

    record = by_destination(route(event, decision, consent, pseudonymizer()))["deidentified"].record

    DeidentifiedRecord.model_validate(record)
    dumped = codec.dumps(record).decode()
    for identifier in (
        user_id,
        event_id,
        cookie_id,
        device_id,
        advertising_id,
        click_id,
        order_id,
        external_id,
        local_part,
        ip,
        str(phone),
    ):
        assert identifier not in dumped
    assert hashlib.sha256(email.lower().encode()).hexdigest() not in dumped
    assert record["event_hour"] % 3600 == 0
    assert record["page_origin"] == (None if source == "sdk" else f"https://{source}.example.com")
    assert (record["browser_family"], record["os_family"]) == ("Firefox", "Linux")
