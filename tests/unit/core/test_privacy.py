"""A person's privacy settings: what applies, what is offered where, what a save writes."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.core.consent import apply_change, fold
from pipeline.core.parse import Rejected, parse_consent_change
from pipeline.core.policy import PolicyConfig, effective_settings
from pipeline.core.privacy import (
    age_group,
    changed_at_for,
    chosen_settings,
    privacy_settings,
    refusals,
    saved_record,
)
from schemas import codec
from schemas.consent import ConsentChange
from schemas.privacy import PrivacyUpdate
from tests.unit.factories import NO_KEY, NOW, USER, change

POLICY = PolicyConfig()
YEAR = 2023  # NOW's year


def person(country: str | None, birth_year: int | None, **settings: bool | None) -> Any:
    state = fold(
        [
            change(
                changed_at=100,
                settings=settings,
                profile={"country": country, "birth_year": birth_year},
            )
        ]
    )
    assert state is not None
    return state


def record(document: dict[str, Any]) -> ConsentChange:
    parsed = parse_consent_change(codec.dumps(document), limits=NO_KEY)
    assert not isinstance(parsed, Rejected), parsed
    return parsed


@pytest.mark.parametrize(
    ("birth_year", "group"),
    [(None, "unknown"), (YEAR - 16, "under_16"), (YEAR - 17, "16_or_over"), (1980, "16_or_over")],
)
def test_the_age_group_is_the_youngest_age_the_birth_year_allows(
    birth_year: int | None, group: str
) -> None:
    assert age_group(birth_year, YEAR) == group


def test_an_adult_in_the_us_is_offered_everything_on_by_default() -> None:
    view = privacy_settings(person("US", 1980), POLICY, now=NOW, acknowledged_ms=123)

    assert (view.region, view.age, view.country) == ("other", "16_or_over", "US")
    for setting in (view.personalization, view.ads_from_partner_info, view.partner_sharing):
        assert (setting.value, setting.chosen, setting.default, setting.offered) == (
            True,
            None,
            True,
            True,
        )
        assert setting.not_offered_because == []
    assert (view.consent_version, view.acknowledged_at) == (100, 123)


def test_in_the_eea_settings_are_opt_in_and_partner_sharing_is_never_offered() -> None:
    view = privacy_settings(person("DE", 1980, personalization=True), POLICY, now=NOW)

    assert view.region == "eea_gb_ch"
    assert (view.personalization.value, view.personalization.chosen) == (True, True)
    assert (view.ads_from_partner_info.value, view.ads_from_partner_info.default) == (False, False)
    assert view.ads_from_partner_info.offered
    assert not view.partner_sharing.offered
    assert "user.region_restricted" in view.partner_sharing.not_offered_because


@pytest.mark.parametrize(
    ("country", "birth_year", "reasons"),
    [
        ("US", YEAR - 14, ["user.under_16"]),
        ("US", None, ["user.age_unknown"]),
        ("GB", 1980, ["user.country_not_enabled", "user.region_restricted"]),
        ("CH", YEAR - 14, ["user.country_not_enabled", "user.region_restricted", "user.under_16"]),
        ("CA", 1980, ["user.country_not_enabled"]),
        (None, 1980, ["user.country_unknown"]),
    ],
)
def test_partner_sharing_is_offered_only_where_it_can_take_effect(
    country: str | None, birth_year: int | None, reasons: list[str]
) -> None:
    view = privacy_settings(person(country, birth_year), POLICY, now=NOW)

    assert not view.partner_sharing.offered
    assert view.partner_sharing.not_offered_because == reasons
    assert view.personalization.offered
    assert view.ads_from_partner_info.offered


def test_an_unknown_country_defaults_every_setting_off() -> None:
    view = privacy_settings(person(None, 1980), POLICY, now=NOW)

    assert view.region == "unknown"
    assert not view.personalization.value
    assert not view.personalization.default


def test_a_deleted_account_has_no_settings() -> None:
    state = apply_change(person("US", 1980), change(changed_at=200, deleted=True))

    with pytest.raises(ValueError, match="deleted"):
        privacy_settings(state, POLICY, now=NOW)


def test_turning_on_what_is_not_offered_is_refused_turning_it_off_is_not() -> None:
    view = privacy_settings(person("DE", 1980), POLICY, now=NOW)

    assert refusals(view, PrivacyUpdate(partner_sharing=True)) == [
        "partner_sharing: not offered (user.country_not_enabled, user.region_restricted)"
    ]
    assert refusals(view, PrivacyUpdate(partner_sharing=False, personalization=True)) == []
    assert refusals(view, PrivacyUpdate(partner_sharing=None)) == []


def test_a_setting_left_out_keeps_what_is_held_and_null_returns_to_the_default() -> None:
    state = person("US", 1980, personalization=False, partner_sharing=False)

    chosen = chosen_settings(state, PrivacyUpdate(personalization=True, partner_sharing=None))

    assert chosen == {
        "personalization": True,
        "ads_from_partner_info": None,
        "partner_sharing": None,
    }


def test_a_saved_record_restates_the_profile_and_the_latest_device() -> None:
    state = fold(
        [
            change(changed_at=10, profile={"country": "US", "birth_year": 1980}),
            change(
                changed_at=20,
                device={"device_id": "old", "platform": "ios", "att_status": "denied"},
            ),
            change(
                changed_at=30,
                device={"device_id": "new", "platform": "android", "ads_opt_out": True},
            ),
        ]
    )
    assert state is not None
    settings = chosen_settings(state, PrivacyUpdate(personalization=False))

    saved = saved_record(state, settings, changed_at=40)

    assert saved == {
        "user_id": USER,
        "changed_at": 40,
        "settings": {
            "personalization": False,
            "ads_from_partner_info": None,
            "partner_sharing": None,
        },
        "profile": {"country": "US", "birth_year": 1980},
        "device": {"device_id": "new", "platform": "android", "ads_opt_out": True},
    }


def test_folding_a_saved_record_changes_only_the_settings_chosen() -> None:
    state = fold(
        [
            change(
                changed_at=10,
                settings={"ads_from_partner_info": False},
                profile={"country": "FR", "birth_year": 1990},
                device={"device_id": "d1", "platform": "ios", "att_status": "authorized"},
            )
        ]
    )
    assert state is not None
    settings = chosen_settings(state, PrivacyUpdate(personalization=True))

    after = apply_change(state, record(saved_record(state, settings, changed_at_for(state, 5))))

    assert after.version == 11
    assert effective_settings(after) == effective_settings(state)._replace(personalization=True)
    assert (after.country, after.birth_year) == (
        state.country._replace(changed_at=11) if state.country else None,
        state.birth_year._replace(changed_at=11) if state.birth_year else None,
    )
    assert after.devices["d1"].att_status is not None
    assert after.devices["d1"].att_status.value == "authorized"


def test_a_save_is_stamped_after_everything_already_folded() -> None:
    state = person("US", 1980)

    assert changed_at_for(state, now_ms=50) == 101
    assert changed_at_for(state, now_ms=5_000) == 5_000


def test_a_setting_not_offered_says_why_in_the_policy_tables_words() -> None:
    minor = privacy_settings(person("US", YEAR - 14), POLICY, now=NOW)
    assert minor.partner_sharing.not_offered_said == (
        "Not available for your account because you are under 16."
    )
    eea = privacy_settings(person("GB", 1980), POLICY, now=NOW)
    assert eea.partner_sharing.not_offered_said == (
        "Not available for your account because you are in the EEA, the United Kingdom "
        "or Switzerland."
    )
    assert eea.personalization.not_offered_said is None


def test_a_setting_another_one_overrides_says_so() -> None:
    off = privacy_settings(person("US", 1980, personalization=False), POLICY, now=NOW)
    assert off.ads_from_partner_info.value  # still on, yet without effect
    assert off.ads_from_partner_info.affected_by is not None
    assert "Personalization is off" in off.ads_from_partner_info.affected_by
    assert off.partner_sharing.affected_by is not None
    assert off.personalization.affected_by is None
    on = privacy_settings(person("US", 1980), POLICY, now=NOW)
    assert on.ads_from_partner_info.affected_by is None
    assert on.partner_sharing.affected_by is None
