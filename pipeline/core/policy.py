"""The consent policy (v1): `decide(event, consent, config) -> Decision`.

Each rule is a condition on the event and the user's consent state, and the purposes it
denies (the table in `pipeline.core.reasons`); the most restrictive outcome wins. A
decision lists the code of every rule whose condition held for the event, even one that
changed nothing (say `browser.dnt` on an event the account settings already deny), so an
audit answers "why" completely.

How the rules read where the table leaves room:

- Account and profile rules (`account.*`, `user.*`) read a live consent record. Without
  one, `subject.anonymous`, `consent.missing` or `account.deleted` alone explains the
  account side, and they already deny every identified use a profile rule could.
  A consent state for a different user than the event's counts as no record.
- A setting never set (or cleared) takes the region default: `false` for EEA/GB/CH
  users, `true` elsewhere, and `false` when the country is unknown (fail closed). The
  `account.*` codes report the effective value.
- Browser rules apply to web events: tag and widget events, and sdk events with
  `action_source: web` that carry browser signals; `browser.daa_opt_out` to tag only.
- ATT: the event's status and the device record's status are both consulted; the device
  counts as authorized only when every known status is `authorized` (none known is
  not authorized). The iOS version is the first `major[.minor]` in `os_version`.
- The on-platform purchase exception waives exactly the rules the table names (the two
  account settings, browser and device rules) for every purpose they deny, GPC's
  partner-sharing denial included; account deletion, event flags, the sharing setting
  and the age and region rules still apply.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, NamedTuple, TypeVar

from pipeline.core.consent import ConsentState, DeviceState, Stamped
from pipeline.core.errors import PolicyConfigError
from pipeline.core.reasons import (
    PURPOSES,
    RULES,
    WAIVED_FOR_ON_PLATFORM_PURCHASE,
    Purpose,
    Reason,
)
from schemas.events import Device, Event, SdkEvent, TagEvent, WidgetEvent
from schemas.outputs import Allow, Measurement

T = TypeVar("T")

POLICY_VERSION: Final = "v1"
SUPPORTED_POLICY_VERSIONS: Final = frozenset({POLICY_VERSION})

EEA_GB_CH: Final = frozenset(
    # EU-27
    {"AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE"}
    | {"IT", "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE"}
    # rest of the EEA, the United Kingdom, Switzerland
    | {"IS", "LI", "NO", "GB", "CH"}
    # codes in common use for Greece and the United Kingdom, though not ISO 3166-1
    | {"EL", "UK"}
)
"""Countries whose users are never shared with partners and whose settings are opt-in."""

UNDER_AGE: Final = 16


# Purposes as bits, so a rule's denials combine with `|`.
_PERSONALIZATION: Final = 1
_ADS: Final = 2
_SHARING: Final = 4
_BITS: Final[Mapping[Purpose, int]] = MappingProxyType(
    {"personalization": _PERSONALIZATION, "ads": _ADS, "partner_sharing": _SHARING}
)

_DENIES: Final[Mapping[Reason, int]] = MappingProxyType(
    {rule.reason: sum(_BITS[purpose] for purpose in rule.denies) for rule in RULES}
)
"""The purposes each rule denies, from the rule table; measurement follows ads."""

_IOS_VERSION = re.compile(r"(\d{1,6})(?:\.(\d{1,6}))?")
_ATT_SINCE: Final = (14, 5)
_APP_SOURCES: Final = frozenset({"app_ios", "app_android"})
_NO_DEVICE: Final = Device()
_NO_DEVICE_RECORD: Final = DeviceState()


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """What an operator may configure; the rest of the policy is fixed by its version."""

    sharing_countries: frozenset[str] = field(default_factory=lambda: frozenset({"US"}))
    """Countries where partner sharing is enabled; EEA/GB/CH are excluded anyway."""
    gpc_enabled: bool = True
    """Whether Global Privacy Control is honoured (`browser.gpc`)."""
    policy_version: str = POLICY_VERSION

    def __post_init__(self) -> None:
        countries = frozenset(code.upper() for code in _iterable(self.sharing_countries))
        if not all(len(code) == 2 and code.isascii() and code.isalpha() for code in countries):
            raise PolicyConfigError("sharing_countries must be ISO 3166-1 alpha-2 codes")
        if self.policy_version not in SUPPORTED_POLICY_VERSIONS:
            raise PolicyConfigError(
                f"policy_version must be one of {sorted(SUPPORTED_POLICY_VERSIONS)}"
            )
        object.__setattr__(self, "sharing_countries", countries)


Tally = tuple[str, str, str, str, tuple[str, ...]]
"""A decision as counted: its four outcomes in `PURPOSES` order, then its reasons."""


def untally(tally: Tally) -> tuple[list[tuple[str, str]], tuple[str, ...]]:
    """A tally's (purpose, outcome) pairs and its reasons: `Decision.tally` read back."""
    *outcomes, reasons = tally
    return list(zip(PURPOSES, outcomes, strict=True)), reasons


@dataclass(frozen=True, slots=True)
class Decision:
    """The four purposes decided for one event, and why."""

    personalization: Allow
    ads: Allow
    measurement: Measurement
    partner_sharing: Allow
    reasons: tuple[str, ...]
    """Codes of every rule whose condition held, sorted."""
    policy_version: str
    consent_version: int | None
    """The `changed_at` (unix ms) of the newest consent change used, if any."""

    def outcomes(self) -> dict[str, str]:
        """The four outcomes by purpose name, as output records spell them."""
        return {
            "personalization": self.personalization,
            "ads": self.ads,
            "measurement": self.measurement,
            "partner_sharing": self.partner_sharing,
        }

    def tally(self) -> Tally:
        """This decision as a batch counts it (`untally` reads it back)."""
        return (
            self.personalization,
            self.ads,
            self.measurement,
            self.partner_sharing,
            self.reasons,
        )


def decide(event: Event, consent: ConsentState | None, config: PolicyConfig) -> Decision:
    """Decide every purpose for `event` given the user's consent state (`None`: no record)."""
    if consent is not None and consent.user_id != event.user_id:
        consent = None
    reasons: set[Reason] = set()
    live = subject_rules(event.user_id, consent, reasons)
    if live is not None:
        _account_rules(event, live, config, reasons)
    _event_rules(event, consent, config, reasons)

    on_platform_purchase = event.surface == "on_platform" and event.event_name == "checkout"
    if on_platform_purchase:
        reasons.add(Reason.EXCEPTION_ON_PLATFORM_PURCHASE)
    denied = 0
    for reason in reasons:
        if not (on_platform_purchase and reason in WAIVED_FOR_ON_PLATFORM_PURCHASE):
            denied |= _DENIES[reason]
    ads = not denied & _ADS
    return Decision(
        personalization="deny" if denied & _PERSONALIZATION else "allow",
        ads="allow" if ads else "deny",
        measurement="identified" if ads else "deidentified",
        partner_sharing="allow" if ads and not denied & _SHARING else "deny",
        reasons=tuple(sorted(reasons)),
        policy_version=config.policy_version,
        consent_version=None if consent is None else consent.version,
    )


def strictest(first: Decision, second: Decision) -> Decision:
    """Both decisions at once: a purpose is allowed only where both allow it.

    Used when a user's consent changed after an event was produced: the event is decided
    under the state it was produced under and under the current one, and the stricter
    answer stands, so a later re-grant never reopens an event produced while revoked.
    """
    ads = first.ads == "allow" and second.ads == "allow"
    return Decision(
        personalization=(
            "allow"
            if first.personalization == "allow" and second.personalization == "allow"
            else "deny"
        ),
        ads="allow" if ads else "deny",
        measurement="identified" if ads else "deidentified",
        partner_sharing=(
            "allow"
            if first.partner_sharing == "allow" and second.partner_sharing == "allow"
            else "deny"
        ),
        reasons=tuple(sorted({*first.reasons, *second.reasons})),
        policy_version=second.policy_version,
        consent_version=max(
            (v for v in (first.consent_version, second.consent_version) if v is not None),
            default=None,
        ),
    )


class EffectiveSettings(NamedTuple):
    """A user's three account settings as they apply: as set, else the region default."""

    personalization: bool
    ads_from_partner_info: bool
    partner_sharing: bool


def subject_rules(
    user_id: str | None, consent: ConsentState | None, reasons: set[Reason]
) -> ConsentState | None:
    """Add the rules about who the subject is (anonymous, no consent record, deleted) to
    `reasons`; the consent whose account settings apply, or None when none do."""
    if user_id is None:
        reasons.add(Reason.SUBJECT_ANONYMOUS)
    elif consent is None:
        reasons.add(Reason.CONSENT_MISSING)
    elif consent.deleted:
        reasons.add(Reason.ACCOUNT_DELETED)
    else:
        return consent
    return None


def effective_settings(consent: ConsentState) -> EffectiveSettings:
    """The settings that apply: a setting never set is off in EEA/GB/CH (opt-in), on
    elsewhere, and off when the country is unknown (fail closed)."""
    country = _value(consent.country)
    default = country is not None and country not in EEA_GB_CH
    return EffectiveSettings(
        _setting(consent.personalization, default),
        _setting(consent.ads_from_partner_info, default),
        _setting(consent.partner_sharing, default),
    )


def _account_rules(
    event: Event, consent: ConsentState, config: PolicyConfig, reasons: set[Reason]
) -> None:
    settings = effective_settings(consent)
    if not settings.personalization:
        reasons.add(Reason.ACCOUNT_PERSONALIZATION_OFF)
    if not isinstance(event, WidgetEvent) and not settings.ads_from_partner_info:
        reasons.add(Reason.ACCOUNT_PARTNER_ADS_OFF)
    if not settings.partner_sharing:
        reasons.add(Reason.ACCOUNT_SHARING_OFF)
    country = _value(consent.country)

    birth_year = _value(consent.birth_year)
    if birth_year is None:
        reasons.add(Reason.USER_AGE_UNKNOWN)
    elif time.gmtime(event.event_time).tm_year - birth_year - 1 < UNDER_AGE:
        reasons.add(Reason.USER_UNDER_16)

    if country is None:
        reasons.add(Reason.USER_COUNTRY_UNKNOWN)
    else:
        if country in EEA_GB_CH:
            reasons.add(Reason.USER_REGION_RESTRICTED)
        if country not in config.sharing_countries:
            reasons.add(Reason.USER_COUNTRY_NOT_ENABLED)


def _event_rules(
    event: Event, consent: ConsentState | None, config: PolicyConfig, reasons: set[Reason]
) -> None:
    if event.opt_out:
        reasons.add(Reason.EVENT_OPT_OUT)
    if event.opt_out_type == "LDP" or (
        event.custom_data is not None and event.custom_data.limited_data_processing
    ):
        reasons.add(Reason.EVENT_LDP)

    browser = event.browser
    if browser is not None and event.action_source == "web":
        if browser.dnt:
            reasons.add(Reason.BROWSER_DNT)
        if browser.gpc and config.gpc_enabled:
            reasons.add(Reason.BROWSER_GPC)
        if browser.daa_opt_out and isinstance(event, TagEvent):
            reasons.add(Reason.BROWSER_DAA_OPT_OUT)

    if isinstance(event, SdkEvent) and event.action_source in _APP_SOURCES:
        _device_rules(event, consent, reasons)


def _device_rules(event: SdkEvent, consent: ConsentState | None, reasons: set[Reason]) -> None:
    device = event.device or _NO_DEVICE
    record = _NO_DEVICE_RECORD
    if consent is not None and device.device_id is not None:
        record = consent.devices.get(device.device_id, _NO_DEVICE_RECORD)

    if event.action_source == "app_ios" and _att_applies(device.os_version):
        recorded = None if record.att_status is None else record.att_status.value
        known = [status for status in (device.att_status, recorded) if status is not None]
        if not known or any(status != "authorized" for status in known):
            reasons.add(Reason.DEVICE_ATT_NOT_AUTHORIZED)

    if device.ads_opt_out or _value(record.ads_opt_out) or _is_zero_id(device.advertising_id):
        reasons.add(Reason.DEVICE_ADS_OPT_OUT)


def _att_applies(os_version: str | None) -> bool:
    """Whether ATT governs this iOS version; an unknown version counts as 14.5 or later."""
    match = _IOS_VERSION.search(os_version) if os_version else None
    if match is None:
        return True
    return (int(match[1]), int(match[2] or 0)) >= _ATT_SINCE


def _is_zero_id(advertising_id: str | None) -> bool:
    """An all-zero advertising id: what iOS and Android report once the user opted out."""
    return advertising_id is not None and "0" in advertising_id and advertising_id.strip("0-") == ""


def _setting(stamped: Stamped[bool | None] | None, default: bool) -> bool:
    value = _value(stamped)
    return default if value is None else value


def _value(stamped: Stamped[T | None] | None) -> T | None:
    return None if stamped is None else stamped.value


def _iterable(values: Iterable[str]) -> Iterable[str]:
    if isinstance(values, str):
        raise PolicyConfigError("sharing_countries must be a collection of codes, not a string")
    return values
