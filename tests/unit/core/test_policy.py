"""The policy: every rule, every reason code, and the properties the policy must keep."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.core.consent import ConsentState, fold
from pipeline.core.policy import (
    EEA_GB_CH,
    POLICY_VERSION,
    Decision,
    PolicyConfig,
    decide,
    untally,
)
from pipeline.core.reasons import Reason
from pipeline.errors import PolicyConfigError
from schemas.events import Source
from tests.unit.core.policy_cases import CASES, Case
from tests.unit.factories import (
    DEVICE,
    USER,
    adult_in,
    change,
    ios_event,
    merged,
    parsed,
    sdk_event,
    tag_event,
    widget_event,
)

REASON_CODES = {
    "subject.anonymous",
    "consent.missing",
    "account.deleted",
    "account.personalization_off",
    "account.partner_ads_off",
    "account.sharing_off",
    "browser.dnt",
    "browser.gpc",
    "browser.daa_opt_out",
    "device.att_not_authorized",
    "device.ads_opt_out",
    "event.opt_out",
    "event.ldp",
    "user.under_16",
    "user.age_unknown",
    "user.region_restricted",
    "user.country_not_enabled",
    "user.country_unknown",
    "exception.on_platform_purchase",
}


def decide_case(case: Case) -> Decision:
    event = parsed(case.source, case.event)
    consent = None if case.consent is None else fold(change(**raw) for raw in case.consent)
    return decide(event, consent, PolicyConfig(**case.config))


@pytest.mark.parametrize("case", CASES, ids=[case.rule for case in CASES])
def test_rule(case: Case) -> None:
    decision = decide_case(case)

    outcomes = (
        decision.personalization,
        decision.ads,
        decision.measurement,
        decision.partner_sharing,
    )
    assert (outcomes, decision.reasons) == (case.outcomes, case.reasons)
    assert decision.policy_version == POLICY_VERSION


def test_reason_codes_are_exactly_the_spec_codes() -> None:
    assert {reason.value for reason in Reason} == REASON_CODES


def test_every_reason_code_has_a_case() -> None:
    covered = {reason for case in CASES for reason in case.reasons}
    assert covered == REASON_CODES


def test_eea_list_is_eu27_plus_iceland_liechtenstein_norway_uk_switzerland() -> None:
    eu27 = {
        *("AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE"),
        *("IT", "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE"),
    }
    assert len(eu27) == 27
    assert eu27 | {"IS", "LI", "NO", "GB", "CH"} <= EEA_GB_CH
    assert not {"US", "CA", "BR", "JP", "AU", "IN"} & EEA_GB_CH


def test_decision_carries_the_consent_version_used() -> None:
    consent = fold([change(changed_at=1_000, profile={"country": "US", "birth_year": 1980})])
    consent = fold([change(changed_at=7_000, settings={"personalization": True})], consent)

    decision = decide(parsed("tag", tag_event()), consent, PolicyConfig())

    assert decision.consent_version == 7_000
    assert decide(parsed("tag", tag_event()), None, PolicyConfig()).consent_version is None


def test_consent_state_of_another_user_counts_as_missing() -> None:
    decision = decide(parsed("tag", tag_event(user_id="user-2")), adult_in("US"), PolicyConfig())

    assert decision.reasons == ("consent.missing",)
    assert decision.ads == "deny"


def test_reasons_are_sorted() -> None:
    for case in CASES:
        reasons = decide_case(case).reasons
        assert list(reasons) == sorted(reasons)


def test_outcomes_spell_the_four_purposes() -> None:
    decision = decide(parsed("tag", tag_event()), adult_in("US"), PolicyConfig())

    assert decision.outcomes() == {
        "personalization": "allow",
        "ads": "allow",
        "measurement": "identified",
        "partner_sharing": "allow",
    }


def test_a_tally_reads_back_as_the_decisions_outcomes_and_reasons() -> None:
    for case in CASES:
        decision = decide_case(case)
        pairs, reasons = untally(decision.tally())
        assert pairs == list(decision.outcomes().items())
        assert reasons == decision.reasons


@pytest.mark.parametrize(
    ("os_version", "att_applies"),
    [
        ("14.5", True),
        ("14.5.1", True),
        ("15", True),
        ("17.2", True),
        ("iOS 16.0", True),
        ("14.4", False),
        ("14", False),
        ("13.7", False),
        ("", True),
        ("unknown", True),
        (None, True),
    ],
)
def test_att_rule_reads_the_ios_version(os_version: str | None, att_applies: bool) -> None:
    event = parsed("sdk", ios_event(device={"os_version": os_version, "att_status": "denied"}))

    decision = decide(event, adult_in("US"), PolicyConfig())

    assert ("device.att_not_authorized" in decision.reasons) is att_applies


def test_policy_config_normalizes_and_validates() -> None:
    assert PolicyConfig(sharing_countries=frozenset({"us", "ca"})).sharing_countries == {"US", "CA"}
    assert PolicyConfig().sharing_countries == {"US"}
    assert PolicyConfig().gpc_enabled is True
    with pytest.raises(PolicyConfigError):
        PolicyConfig(sharing_countries=frozenset({"USA"}))
    with pytest.raises(PolicyConfigError):
        PolicyConfig(sharing_countries="US")  # type: ignore[arg-type]
    with pytest.raises(PolicyConfigError):
        PolicyConfig(policy_version="v0")


# Adding any opt-out signal never turns a deny into an allow.

Signal = Callable[[dict[str, Any], list[dict[str, Any]]], None]


def _browser(flag: str) -> Signal:
    def add(event: dict[str, Any], _: list[dict[str, Any]]) -> None:
        event.setdefault("browser", {})[flag] = True

    return add


def _event_field(name: str, value: Any) -> Signal:
    def add(event: dict[str, Any], _: list[dict[str, Any]]) -> None:
        event[name] = value

    return add


def _device_field(name: str, value: Any) -> Signal:
    def add(event: dict[str, Any], _: list[dict[str, Any]]) -> None:
        event.setdefault("device", {})[name] = value

    return add


def _later_change(**fields: Any) -> Signal:
    def add(_: dict[str, Any], changes: list[dict[str, Any]]) -> None:
        changes.append({"user_id": USER, "changed_at": 10**9, **fields})

    return add


OPT_OUT_SIGNALS: dict[str, Signal] = {
    "browser.dnt": _browser("dnt"),
    "browser.gpc": _browser("gpc"),
    "browser.daa_opt_out": _browser("daa_opt_out"),
    "event.opt_out": _event_field("opt_out", True),
    "event.ldp": _event_field("opt_out_type", "LDP"),
    "device att denied": _device_field("att_status", "denied"),
    "device ads_opt_out": _device_field("ads_opt_out", True),
    "device zero advertising id": _device_field("advertising_id", "0000-0000"),
    "setting personalization off": _later_change(settings={"personalization": False}),
    "setting partner ads off": _later_change(settings={"ads_from_partner_info": False}),
    "setting sharing off": _later_change(settings={"partner_sharing": False}),
    "account deleted": _later_change(deleted=True),
    "record att denied": _later_change(device={"device_id": DEVICE, "att_status": "denied"}),
    "record ads opt-out": _later_change(device={"device_id": DEVICE, "ads_opt_out": True}),
}
SOURCES: dict[str, tuple[Source, Callable[..., dict[str, Any]]]] = {
    "tag": ("tag", tag_event),
    "android": ("sdk", sdk_event),
    "ios": ("sdk", ios_event),
    "web upload": ("sdk", lambda **kw: sdk_event(action_source="web", browser={}, **kw)),
    "widget": ("widget", widget_event),
}
maybe_bool = st.sampled_from([True, False, None])


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Source, dict[str, Any], list[dict[str, Any]] | None]:
    source, build = SOURCES[draw(st.sampled_from(sorted(SOURCES)))]
    event = build(
        opt_out=draw(st.booleans()),
        surface=draw(st.sampled_from(["off_platform", "on_platform"])),
        event_name=draw(st.sampled_from(["checkout", "page_visit"]))
        if source != "widget"
        else "save_click",
    )
    if draw(st.booleans()):
        event = merged(event, {"user_id": ...})
    if draw(st.booleans()):
        return source, event, None
    profile = {
        "country": draw(st.sampled_from(["US", "DE", "CA", None])),
        "birth_year": draw(st.sampled_from([1980, 2012, None])),
    }
    setting_values = {
        name: value
        for name in ("personalization", "ads_from_partner_info", "partner_sharing")
        if (value := draw(maybe_bool)) is not None
    }
    changes = [
        {"user_id": USER, "changed_at": 1, "profile": profile},
        {"user_id": USER, "changed_at": 2, "settings": setting_values},
    ]
    return source, event, changes


def _decide(
    source: Source, event: dict[str, Any], changes: list[dict[str, Any]] | None, gpc: bool
) -> Decision:
    consent: ConsentState | None = None
    if changes is not None:
        consent = fold(change(**raw) for raw in changes)
    return decide(parsed(source, event), consent, PolicyConfig(gpc_enabled=gpc))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    scenario=scenarios(),
    signal=st.sampled_from(sorted(OPT_OUT_SIGNALS)),
    gpc=st.booleans(),
)
def test_adding_an_opt_out_never_turns_a_deny_into_an_allow(
    scenario: tuple[Source, dict[str, Any], list[dict[str, Any]] | None], signal: str, gpc: bool
) -> None:
    source, event, changes = scenario
    before = _decide(source, event, changes, gpc)
    stricter_event = merged(event, {})
    stricter_changes = None if changes is None else list(changes)
    OPT_OUT_SIGNALS[signal](
        stricter_event, stricter_changes if stricter_changes is not None else []
    )

    after = _decide(source, stricter_event, stricter_changes, gpc)

    for purpose in ("personalization", "ads", "partner_sharing"):
        if getattr(before, purpose) == "deny":
            assert getattr(after, purpose) == "deny", purpose
    if before.measurement == "deidentified":
        assert after.measurement == "deidentified"
    assert set(before.reasons) <= set(after.reasons) | _dropped_by_deletion(after)


def _dropped_by_deletion(decision: Decision) -> set[str]:
    """Account and profile codes a deletion replaces with `account.deleted`."""
    if "account.deleted" not in decision.reasons:
        return set()
    return {reason.value for reason in Reason if reason.value.startswith(("account.", "user."))}


def test_deny_all_when_every_signal_is_added() -> None:
    event = ios_event(opt_out_type="LDP")
    changes: list[dict[str, Any]] = [
        {"user_id": USER, "changed_at": 1, "profile": {"country": "US"}}
    ]
    for add in OPT_OUT_SIGNALS.values():
        add(event, changes)

    decision = _decide("sdk", event, changes, gpc=True)

    assert decision.outcomes() == {
        "personalization": "deny",
        "ads": "deny",
        "measurement": "deidentified",
        "partner_sharing": "deny",
    }
