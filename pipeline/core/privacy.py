"""A person's privacy settings: what applies, what their region and age offer, what a save writes.

Pure functions over a `ConsentState`:

- `privacy_settings`: the three account settings as they apply (the person's choice, else
  the region default), and which of them the person may turn on. Personalization and ads
  from partners' information are offered everywhere (opt-in in the EEA, the UK and
  Switzerland, opt-out elsewhere); sharing with partners only where it can take effect:
  a known age of 16 or over, a known country in the configured sharing countries, never
  the EEA, the UK or Switzerland. A setting not offered says why, with the
  policy's reason codes and their words; a setting another one overrides says so.
- `refusals`: the settings an update would turn on although they are not offered.
- `saved_record`: the full `consent.changes` record a save writes. `consent.changes` is
  compacted by user id, so each record must carry the person's whole consent: the three
  settings as chosen (a setting the update leaves out keeps its value), the profile and
  the device changed most recently as the pipeline holds them. Other devices stay in the
  table (a record has room for one), and every field is stamped with the record's
  `changed_at`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Final

from pipeline.core.consent import ConsentState, DeviceState, Stamped
from pipeline.core.policy import (
    EEA_GB_CH,
    UNDER_AGE,
    EffectiveSettings,
    PolicyConfig,
    effective_settings,
)
from pipeline.core.reasons import RULE, Reason, because
from schemas.privacy import (
    AgeGroup,
    PrivacySettings,
    PrivacyUpdate,
    Region,
    SettingName,
    SettingState,
)

SETTINGS: Final[tuple[SettingName, ...]] = (
    "personalization",
    "ads_from_partner_info",
    "partner_sharing",
)
_DEVICE_FIELDS: Final = ("platform", "att_status", "ads_opt_out")


def region_of(country: str | None) -> Region:
    """The policy's region of a country code."""
    if country is None:
        return "unknown"
    return "eea_gb_ch" if country in EEA_GB_CH else "other"


def age_group(birth_year: int | None, year: int) -> AgeGroup:
    """The youngest age consistent with `birth_year` in `year`, as the policy counts it."""
    if birth_year is None:
        return "unknown"
    return "under_16" if year - birth_year - 1 < UNDER_AGE else "16_or_over"


def sharing_not_offered(
    country: str | None, birth_year: int | None, config: PolicyConfig, year: int
) -> list[str]:
    """Why partner sharing cannot take effect for this person (empty: it can)."""
    reasons: list[str] = []
    age = age_group(birth_year, year)
    if age == "unknown":
        reasons.append(Reason.USER_AGE_UNKNOWN)
    elif age == "under_16":
        reasons.append(Reason.USER_UNDER_16)
    if country is None:
        reasons.append(Reason.USER_COUNTRY_UNKNOWN)
    else:
        if country in EEA_GB_CH:
            reasons.append(Reason.USER_REGION_RESTRICTED)
        if country not in config.sharing_countries:
            reasons.append(Reason.USER_COUNTRY_NOT_ENABLED)
    return sorted(reasons)


def privacy_settings(
    state: ConsentState,
    config: PolicyConfig,
    *,
    now: float,
    acknowledged_ms: int | None = None,
) -> PrivacySettings:
    """The person's settings as they apply at `now` (unix seconds), and what is offered.

    Raises:
        ValueError: `state` is a deleted account's (nothing is offered to it).
    """
    if state.deleted:
        raise ValueError("a deleted account has no privacy settings")
    country, birth_year = _value(state.country), _value(state.birth_year)
    year = time.gmtime(now).tm_year
    applied = effective_settings(state)
    default = country is not None and country not in EEA_GB_CH
    sharing = sharing_not_offered(country, birth_year, config, year)
    not_offered: dict[SettingName, list[str]] = {
        "personalization": [],
        "ads_from_partner_info": [],
        "partner_sharing": sharing,
    }
    states = {
        name: SettingState(
            value=getattr(applied, name),
            chosen=_value(getattr(state, name)),
            default=default,
            offered=not not_offered[name],
            not_offered_because=not_offered[name],
            not_offered_said=_not_offered_said(not_offered[name]),
            affected_by=None if not_offered[name] else _affected_by(name, applied),
        )
        for name in SETTINGS
    }
    return PrivacySettings(
        user_id=state.user_id,
        consent_version=state.version,
        acknowledged_at=acknowledged_ms
        if acknowledged_ms is not None and acknowledged_ms >= 0
        else None,
        country=country,
        region=region_of(country),
        age=age_group(birth_year, year),
        **states,
    )


def _not_offered_said(codes: list[str]) -> str | None:
    """Why a setting is not offered, for the person: the first code's words, or the age's
    and the region's (a country merely not enabled says nothing more than the region)."""
    if not codes:
        return None
    said = [code for code in codes if code != Reason.USER_COUNTRY_NOT_ENABLED] or codes
    return "Not available for your account because " + because(said) + "."


def _affected_by(name: SettingName, applied: EffectiveSettings) -> str | None:
    """What another setting's value does to this one, from the rules' denials."""
    personalization = RULE[Reason.ACCOUNT_PERSONALIZATION_OFF]
    partner_ads = RULE[Reason.ACCOUNT_PARTNER_ADS_OFF]
    if (
        name == "ads_from_partner_info"
        and not applied.personalization
        and "ads" in personalization.denies
    ):
        return (
            "Personalization is off, and that also stops ads based on your activity off the "
            "platform: this setting takes effect again when Personalization is on."
        )
    if name == "partner_sharing" and (
        (not applied.personalization and "ads" in personalization.denies)
        or (not applied.ads_from_partner_info and "ads" in partner_ads.denies)
    ):
        return (
            "Nothing is shared with partners while your data is not used for ads "
            "(Personalization or Ads based on information from partners is off)."
        )
    return None


def refusals(settings: PrivacySettings, update: PrivacyUpdate) -> list[str]:
    """What in `update` the person may not choose: a setting turned on that is not offered.

    Each item names the setting and why (`partner_sharing: not offered (user.region_restricted)`).
    """
    refused: list[str] = []
    for name in update.model_fields_set:
        current: SettingState = getattr(settings, name)
        if getattr(update, name) is True and not current.offered:
            why = ", ".join(current.not_offered_because)
            refused.append(f"{name}: not offered ({why})")
    return sorted(refused)


def chosen_settings(state: ConsentState, update: PrivacyUpdate) -> dict[SettingName, bool | None]:
    """The three settings after `update`: what it names, else what `state` holds."""
    return {
        name: getattr(update, name)
        if name in update.model_fields_set
        else _value(getattr(state, name))
        for name in SETTINGS
    }


def changed_at_for(state: ConsentState, now_ms: int) -> int:
    """The `changed_at` of a save at `now_ms`: later than every change already folded in,
    so that each field it carries wins (last writer wins by `changed_at`)."""
    return max(now_ms, state.version + 1)


def saved_record(
    state: ConsentState, settings: Mapping[SettingName, bool | None], changed_at: int
) -> dict[str, Any]:
    """The full `consent.changes` record of a save: `settings`, and the rest as held."""
    record: dict[str, Any] = {
        "user_id": state.user_id,
        "changed_at": changed_at,
        "settings": {name: settings[name] for name in SETTINGS},
        "profile": {"country": _value(state.country), "birth_year": _value(state.birth_year)},
    }
    device = _latest_device(state.devices)
    if device is not None:
        device_id, held = device
        record["device"] = {"device_id": device_id} | {
            name: stamped.value
            for name in _DEVICE_FIELDS
            if (stamped := getattr(held, name)) is not None
        }
    return record


def _latest_device(devices: Mapping[str, DeviceState]) -> tuple[str, DeviceState] | None:
    """The device whose newest field was changed last (ties: the greatest id)."""
    best: tuple[int, str] | None = None
    for device_id, device in devices.items():
        stamps = [s.changed_at for name in _DEVICE_FIELDS if (s := getattr(device, name))]
        candidate = (max(stamps, default=-1), device_id)
        if best is None or candidate > best:
            best = candidate
    return None if best is None else (best[1], devices[best[1]])


def _value(stamped: Stamped[Any] | None) -> Any:
    return None if stamped is None else stamped.value
