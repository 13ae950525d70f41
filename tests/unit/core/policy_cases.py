"""The policy's rules as test cases: one or more per rule and per reason code.

Each case names the rule it exercises and gives the exact outcomes and reason codes, so
removing or weakening any rule fails at least one case. Shared by the policy tests and
the `decide` command tests (the command must give the same answers).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from schemas.events import Source
from tests.unit.factories import DEVICE, USER, ios_event, sdk_event, tag_event, widget_event

ALLOW_ALL: Final = ("allow", "allow", "identified", "allow")
DENY_ALL: Final = ("deny", "deny", "deidentified", "deny")
NO_ADS: Final = ("allow", "deny", "deidentified", "deny")
NO_SHARING: Final = ("allow", "allow", "identified", "deny")


@dataclass(frozen=True)
class Case:
    """One row: an event, the user's consent changes, and the decision the policy requires."""

    rule: str
    source: Source
    event: dict[str, Any]
    consent: list[dict[str, Any]] | None
    outcomes: tuple[str, str, str, str]
    reasons: tuple[str, ...]
    config: dict[str, Any] = field(default_factory=dict)


def profile(
    country: str | None = "US", birth_year: int | None = 1980, user_id: str = USER
) -> dict[str, Any]:
    """The consent change setting a user's profile (an unset field stays unknown)."""
    fields: dict[str, Any] = {}
    if country is not None:
        fields["country"] = country
    if birth_year is not None:
        fields["birth_year"] = birth_year
    return {"user_id": user_id, "changed_at": 1_000, "profile": fields}


def settings(changed_at: int = 2_000, **values: bool | None) -> dict[str, Any]:
    """A consent change setting account settings."""
    return {"user_id": USER, "changed_at": changed_at, "settings": values}


def device(changed_at: int = 3_000, device_id: str = DEVICE, **values: Any) -> dict[str, Any]:
    """A consent change recording a choice on one of the user's devices."""
    return {"user_id": USER, "changed_at": changed_at, "device": {"device_id": device_id, **values}}


US_ADULT: Final = [profile()]
ON_PLATFORM_CHECKOUT: Final = {"surface": "on_platform", "event_name": "checkout"}
ALL_SETTINGS_ON: Final = {
    "personalization": True,
    "ads_from_partner_info": True,
    "partner_sharing": True,
}

CASES: Final = [
    # Baselines: an adult in the US with nothing opted out gets every purpose.
    Case("baseline: tag event, US adult, defaults", "tag", tag_event(), US_ADULT, ALLOW_ALL, ()),
    Case("baseline: sdk event, US adult, defaults", "sdk", sdk_event(), US_ADULT, ALLOW_ALL, ()),
    Case("baseline: iOS event with ATT authorized", "sdk", ios_event(), US_ADULT, ALLOW_ALL, ()),
    Case("baseline: widget event", "widget", widget_event(), US_ADULT, ALLOW_ALL, ()),
    # subject.anonymous
    Case(
        "subject.anonymous: no user_id denies personalization, ads, partner_sharing",
        "tag",
        tag_event(user_id=...),
        None,
        DENY_ALL,
        ("subject.anonymous",),
    ),
    Case(
        "subject.anonymous: an anonymous widget event",
        "widget",
        widget_event(user_id=...),
        None,
        DENY_ALL,
        ("subject.anonymous",),
    ),
    # consent.missing
    Case(
        "consent.missing: user_id known, no consent record: fail closed",
        "tag",
        tag_event(),
        None,
        DENY_ALL,
        ("consent.missing",),
    ),
    Case(
        "consent.missing: an empty list of changes is no record either",
        "sdk",
        sdk_event(),
        [],
        DENY_ALL,
        ("consent.missing",),
    ),
    # account.deleted
    Case(
        "account.deleted: denies all identified use",
        "tag",
        tag_event(),
        [*US_ADULT, {"user_id": USER, "changed_at": 5_000, "deleted": True}],
        DENY_ALL,
        ("account.deleted",),
    ),
    Case(
        "account.deleted: final, whatever changes come after it",
        "tag",
        tag_event(),
        [
            {"user_id": USER, "changed_at": 500, "deleted": True},
            *US_ADULT,
            settings(**ALL_SETTINGS_ON),
        ],
        DENY_ALL,
        ("account.deleted",),
    ),
    # account.personalization_off
    Case(
        "account.personalization_off: denies personalization and ads",
        "tag",
        tag_event(),
        [*US_ADULT, settings(personalization=False)],
        DENY_ALL,
        ("account.personalization_off",),
    ),
    Case(
        "account.personalization_off: applies to widget events too",
        "widget",
        widget_event(),
        [*US_ADULT, settings(personalization=False)],
        DENY_ALL,
        ("account.personalization_off",),
    ),
    # account.partner_ads_off: tag and sdk only
    Case(
        "account.partner_ads_off: tag event, denies ads (and so sharing)",
        "tag",
        tag_event(),
        [*US_ADULT, settings(ads_from_partner_info=False)],
        NO_ADS,
        ("account.partner_ads_off",),
    ),
    Case(
        "account.partner_ads_off: sdk event, denies ads",
        "sdk",
        sdk_event(),
        [*US_ADULT, settings(ads_from_partner_info=False)],
        NO_ADS,
        ("account.partner_ads_off",),
    ),
    Case(
        "account.partner_ads_off: not on widget events",
        "widget",
        widget_event(),
        [*US_ADULT, settings(ads_from_partner_info=False)],
        ALLOW_ALL,
        (),
    ),
    # account.sharing_off
    Case(
        "account.sharing_off: denies partner_sharing only",
        "tag",
        tag_event(),
        [*US_ADULT, settings(partner_sharing=False)],
        NO_SHARING,
        ("account.sharing_off",),
    ),
    # settings: last writer wins, and a cleared setting takes the region default
    Case(
        "settings: the later change wins, whatever the order given",
        "tag",
        tag_event(),
        [
            settings(changed_at=9_000, personalization=True),
            *US_ADULT,
            settings(personalization=False),
        ],
        ALLOW_ALL,
        (),
    ),
    Case(
        "settings: a cleared setting falls back to the region default (US: on)",
        "tag",
        tag_event(),
        [
            *US_ADULT,
            settings(personalization=False),
            settings(changed_at=3_000, personalization=None),
        ],
        ALLOW_ALL,
        (),
    ),
    # browser.dnt: web events, tag and widget
    Case(
        "browser.dnt: tag event with DNT denies personalization and ads",
        "tag",
        tag_event(browser={"dnt": True}),
        US_ADULT,
        DENY_ALL,
        ("browser.dnt",),
    ),
    Case(
        "browser.dnt: widget event with DNT",
        "widget",
        widget_event(browser={"dnt": True}),
        US_ADULT,
        DENY_ALL,
        ("browser.dnt",),
    ),
    Case(
        "browser.dnt: a server upload of a web event carrying the browser's DNT",
        "sdk",
        sdk_event(action_source="web", browser={"dnt": True}),
        US_ADULT,
        DENY_ALL,
        ("browser.dnt",),
    ),
    Case(
        "browser.dnt: browser signals do not apply to app events",
        "sdk",
        sdk_event(browser={"dnt": True, "gpc": True}),
        US_ADULT,
        ALLOW_ALL,
        (),
    ),
    # browser.gpc (configurable, on by default)
    Case(
        "browser.gpc: tag event with GPC denies ads and partner_sharing",
        "tag",
        tag_event(browser={"gpc": True}),
        US_ADULT,
        NO_ADS,
        ("browser.gpc",),
    ),
    Case(
        "browser.gpc: widget event with GPC",
        "widget",
        widget_event(browser={"gpc": True}),
        US_ADULT,
        NO_ADS,
        ("browser.gpc",),
    ),
    Case(
        "browser.gpc: ignored when the GPC switch is off",
        "tag",
        tag_event(browser={"gpc": True}),
        US_ADULT,
        ALLOW_ALL,
        (),
        config={"gpc_enabled": False},
    ),
    # browser.daa_opt_out: tag events only
    Case(
        "browser.daa_opt_out: tag event from an opted-out browser denies ads",
        "tag",
        tag_event(browser={"daa_opt_out": True}),
        US_ADULT,
        NO_ADS,
        ("browser.daa_opt_out",),
    ),
    Case(
        "browser.daa_opt_out: not on widget events",
        "widget",
        widget_event(browser={"daa_opt_out": True}),
        US_ADULT,
        ALLOW_ALL,
        (),
    ),
    Case(
        "browser.daa_opt_out: not on sdk events, web or app",
        "sdk",
        sdk_event(action_source="web", browser={"daa_opt_out": True}),
        US_ADULT,
        ALLOW_ALL,
        (),
    ),
    # device.att_not_authorized
    Case(
        "device.att_not_authorized: iOS 17 event, ATT denied",
        "sdk",
        ios_event(device={"att_status": "denied"}),
        US_ADULT,
        DENY_ALL,
        ("device.att_not_authorized",),
    ),
    Case(
        "device.att_not_authorized: ATT not determined is not authorized",
        "sdk",
        ios_event(device={"att_status": "not_determined"}),
        US_ADULT,
        DENY_ALL,
        ("device.att_not_authorized",),
    ),
    Case(
        "device.att_not_authorized: iOS 14.5 exactly",
        "sdk",
        ios_event(device={"os_version": "14.5", "att_status": "restricted"}),
        US_ADULT,
        DENY_ALL,
        ("device.att_not_authorized",),
    ),
    Case(
        "device.att_not_authorized: unknown iOS version counts as 14.5 or later",
        "sdk",
        ios_event(device={"os_version": None, "att_status": "denied"}),
        US_ADULT,
        DENY_ALL,
        ("device.att_not_authorized",),
    ),
    Case(
        "device.att_not_authorized: no status anywhere is not authorized",
        "sdk",
        ios_event(device={"att_status": None}),
        US_ADULT,
        DENY_ALL,
        ("device.att_not_authorized",),
    ),
    Case(
        "device.att_not_authorized: not before iOS 14.5",
        "sdk",
        ios_event(device={"os_version": "14.4.2", "att_status": "denied"}),
        US_ADULT,
        ALLOW_ALL,
        (),
    ),
    Case(
        "device.att_not_authorized: from the user's device record for that device",
        "sdk",
        ios_event(device={"att_status": None}),
        [*US_ADULT, device(att_status="denied")],
        DENY_ALL,
        ("device.att_not_authorized",),
    ),
    Case(
        "device.att_not_authorized: the record authorizes when the event says nothing",
        "sdk",
        ios_event(device={"att_status": None}),
        [*US_ADULT, device(att_status="authorized")],
        ALLOW_ALL,
        (),
    ),
    Case(
        "device.att_not_authorized: the record denies though the event says authorized",
        "sdk",
        ios_event(),
        [*US_ADULT, device(att_status="denied")],
        DENY_ALL,
        ("device.att_not_authorized",),
    ),
    Case(
        "device.att_not_authorized: another device's record does not apply",
        "sdk",
        ios_event(),
        [*US_ADULT, device(device_id="device-2", att_status="denied")],
        ALLOW_ALL,
        (),
    ),
    Case(
        "device.att_not_authorized: not on Android",
        "sdk",
        sdk_event(device={"att_status": "denied"}),
        US_ADULT,
        ALLOW_ALL,
        (),
    ),
    # device.ads_opt_out
    Case(
        "device.ads_opt_out: app event from a device with ads opt-out denies ads",
        "sdk",
        sdk_event(device={"ads_opt_out": True}),
        US_ADULT,
        NO_ADS,
        ("device.ads_opt_out",),
    ),
    Case(
        "device.ads_opt_out: an all-zero advertising id",
        "sdk",
        sdk_event(device={"advertising_id": "00000000-0000-0000-0000-000000000000"}),
        US_ADULT,
        NO_ADS,
        ("device.ads_opt_out",),
    ),
    Case(
        "device.ads_opt_out: from the user's device record for that device",
        "sdk",
        sdk_event(),
        [*US_ADULT, device(ads_opt_out=True)],
        NO_ADS,
        ("device.ads_opt_out",),
    ),
    Case(
        "device.ads_opt_out: another device's record does not apply",
        "sdk",
        sdk_event(),
        [*US_ADULT, device(device_id="device-2", ads_opt_out=True)],
        ALLOW_ALL,
        (),
    ),
    Case(
        "device.ads_opt_out: applies to iOS app events too",
        "sdk",
        ios_event(device={"ads_opt_out": True}),
        US_ADULT,
        NO_ADS,
        ("device.ads_opt_out",),
    ),
    Case(
        "device.ads_opt_out: not on offline uploads (not an app event)",
        "sdk",
        sdk_event(action_source="offline", device={"ads_opt_out": True}),
        US_ADULT,
        ALLOW_ALL,
        (),
    ),
    # event.opt_out, event.ldp (Conversions API)
    Case(
        "event.opt_out: denies personalization and ads",
        "tag",
        tag_event(opt_out=True),
        US_ADULT,
        DENY_ALL,
        ("event.opt_out",),
    ),
    Case(
        "event.ldp: limited data processing denies personalization, ads, sharing",
        "sdk",
        sdk_event(opt_out_type="LDP"),
        US_ADULT,
        DENY_ALL,
        ("event.ldp",),
    ),
    Case(
        "event.ldp: Pinterest's custom_data.opt_out_type LDP is limited data processing",
        "tag",
        tag_event(custom_data={"opt_out_type": "LDP"}),
        US_ADULT,
        DENY_ALL,
        ("event.ldp",),
    ),
    Case(
        "event.ldp: LDP among other comma-separated flags, any case",
        "sdk",
        sdk_event(custom_data={"value": "72.39", "opt_out_type": "CCPA, ldp"}),
        US_ADULT,
        DENY_ALL,
        ("event.ldp",),
    ),
    Case(
        "event.ldp: an empty custom_data.opt_out_type is no restriction",
        "tag",
        tag_event(custom_data={"opt_out_type": ""}),
        US_ADULT,
        ALLOW_ALL,
        (),
    ),
    # user.under_16 / user.age_unknown: event year - birth_year - 1 < 16
    Case(
        "user.under_16: born 2007, event in 2023: youngest possible age 15",
        "tag",
        tag_event(),
        [profile(birth_year=2007)],
        NO_SHARING,
        ("user.under_16",),
    ),
    Case(
        "user.under_16: born 2006, event in 2023: youngest possible age 16 is not under 16",
        "tag",
        tag_event(),
        [profile(birth_year=2006)],
        ALLOW_ALL,
        (),
    ),
    Case(
        "user.age_unknown: no birth year denies partner_sharing",
        "tag",
        tag_event(),
        [profile(birth_year=None)],
        NO_SHARING,
        ("user.age_unknown",),
    ),
    # user.region_restricted and the region defaults
    Case(
        "user.region_restricted: EEA user with every setting on",
        "tag",
        tag_event(),
        [profile(country="DE"), settings(**ALL_SETTINGS_ON)],
        NO_SHARING,
        ("user.country_not_enabled", "user.region_restricted"),
    ),
    Case(
        "user.region_restricted: not configurable, even if listed for sharing",
        "tag",
        tag_event(),
        [profile(country="FR"), settings(**ALL_SETTINGS_ON)],
        NO_SHARING,
        ("user.region_restricted",),
        config={"sharing_countries": frozenset({"US", "FR"})},
    ),
    Case(
        "user.region_restricted: United Kingdom",
        "tag",
        tag_event(),
        [profile(country="GB"), settings(**ALL_SETTINGS_ON)],
        NO_SHARING,
        ("user.country_not_enabled", "user.region_restricted"),
    ),
    Case(
        "user.region_restricted: Switzerland",
        "widget",
        widget_event(),
        [profile(country="CH"), settings(**ALL_SETTINGS_ON)],
        NO_SHARING,
        ("user.country_not_enabled", "user.region_restricted"),
    ),
    Case(
        "user.region_restricted: EEA outside the EU (Norway)",
        "sdk",
        sdk_event(),
        [profile(country="NO"), settings(**ALL_SETTINGS_ON)],
        NO_SHARING,
        ("user.country_not_enabled", "user.region_restricted"),
    ),
    Case(
        "region default: settings never set are off for EEA users (opt-in)",
        "tag",
        tag_event(),
        [profile(country="IE")],
        DENY_ALL,
        (
            "account.partner_ads_off",
            "account.personalization_off",
            "account.sharing_off",
            "user.country_not_enabled",
            "user.region_restricted",
        ),
    ),
    Case(
        "region default: settings never set are on elsewhere (opt-out)",
        "tag",
        tag_event(),
        [profile(country="BR")],
        NO_SHARING,
        ("user.country_not_enabled",),
    ),
    Case(
        "region default: unknown country fails closed (settings off)",
        "tag",
        tag_event(),
        [profile(country=None)],
        DENY_ALL,
        (
            "account.partner_ads_off",
            "account.personalization_off",
            "account.sharing_off",
            "user.country_unknown",
        ),
    ),
    # user.country_not_enabled / user.country_unknown
    Case(
        "user.country_not_enabled: not in the sharing list (default US)",
        "tag",
        tag_event(),
        [profile(country="CA")],
        NO_SHARING,
        ("user.country_not_enabled",),
    ),
    Case(
        "user.country_not_enabled: a configured sharing country is enabled",
        "tag",
        tag_event(),
        [profile(country="CA")],
        ALLOW_ALL,
        (),
        config={"sharing_countries": frozenset({"US", "CA"})},
    ),
    Case(
        "user.country_unknown: no country denies partner_sharing",
        "tag",
        tag_event(),
        [profile(country=None), settings(**ALL_SETTINGS_ON)],
        NO_SHARING,
        ("user.country_unknown",),
    ),
    # partner_sharing needs ads; measurement is identified only when ads is allowed
    Case(
        "partner_sharing needs ads allowed (sharing setting on, ads denied)",
        "tag",
        tag_event(browser={"daa_opt_out": True}),
        [*US_ADULT, settings(partner_sharing=True)],
        NO_ADS,
        ("browser.daa_opt_out",),
    ),
    # purchases initiated on the platform
    Case(
        "exception.on_platform_purchase: not blocked by account.personalization_off",
        "tag",
        tag_event(**ON_PLATFORM_CHECKOUT),
        [*US_ADULT, settings(personalization=False)],
        ALLOW_ALL,
        ("account.personalization_off", "exception.on_platform_purchase"),
    ),
    Case(
        "exception.on_platform_purchase: not blocked by account.partner_ads_off",
        "sdk",
        sdk_event(**ON_PLATFORM_CHECKOUT),
        [*US_ADULT, settings(ads_from_partner_info=False)],
        ALLOW_ALL,
        ("account.partner_ads_off", "exception.on_platform_purchase"),
    ),
    Case(
        "exception.on_platform_purchase: not blocked by browser rules",
        "tag",
        tag_event(**ON_PLATFORM_CHECKOUT, browser={"dnt": True, "gpc": True, "daa_opt_out": True}),
        US_ADULT,
        ALLOW_ALL,
        ("browser.daa_opt_out", "browser.dnt", "browser.gpc", "exception.on_platform_purchase"),
    ),
    Case(
        "exception.on_platform_purchase: not blocked by device rules",
        "sdk",
        ios_event(**ON_PLATFORM_CHECKOUT, device={"att_status": "denied", "ads_opt_out": True}),
        US_ADULT,
        ALLOW_ALL,
        ("device.ads_opt_out", "device.att_not_authorized", "exception.on_platform_purchase"),
    ),
    Case(
        "exception.on_platform_purchase: account.deleted still applies",
        "tag",
        tag_event(**ON_PLATFORM_CHECKOUT),
        [*US_ADULT, {"user_id": USER, "changed_at": 5_000, "deleted": True}],
        DENY_ALL,
        ("account.deleted", "exception.on_platform_purchase"),
    ),
    Case(
        "exception.on_platform_purchase: event.opt_out still applies",
        "tag",
        tag_event(**ON_PLATFORM_CHECKOUT, opt_out=True),
        US_ADULT,
        DENY_ALL,
        ("event.opt_out", "exception.on_platform_purchase"),
    ),
    Case(
        "exception.on_platform_purchase: event.ldp still applies",
        "tag",
        tag_event(**ON_PLATFORM_CHECKOUT, opt_out_type="LDP"),
        US_ADULT,
        DENY_ALL,
        ("event.ldp", "exception.on_platform_purchase"),
    ),
    Case(
        "exception.on_platform_purchase: sharing setting, age and region still apply",
        "tag",
        tag_event(**ON_PLATFORM_CHECKOUT),
        [profile(country="DE", birth_year=2010), settings(personalization=False)],
        NO_SHARING,
        (
            "account.partner_ads_off",
            "account.personalization_off",
            "account.sharing_off",
            "exception.on_platform_purchase",
            "user.country_not_enabled",
            "user.region_restricted",
            "user.under_16",
        ),
    ),
    Case(
        "exception.on_platform_purchase: an anonymous subject is still denied",
        "tag",
        tag_event(**ON_PLATFORM_CHECKOUT, user_id=...),
        None,
        DENY_ALL,
        ("exception.on_platform_purchase", "subject.anonymous"),
    ),
    Case(
        "exception.on_platform_purchase: only checkout, not other on-platform events",
        "tag",
        tag_event(surface="on_platform", event_name="add_to_cart"),
        [*US_ADULT, settings(personalization=False)],
        DENY_ALL,
        ("account.personalization_off",),
    ),
    Case(
        "exception.on_platform_purchase: only on-platform, not an off-platform checkout",
        "tag",
        tag_event(event_name="checkout"),
        [*US_ADULT, settings(personalization=False)],
        DENY_ALL,
        ("account.personalization_off",),
    ),
    # most restrictive wins, and every rule that held is listed
    Case(
        "most restrictive wins: every code whose condition held is listed",
        "tag",
        tag_event(opt_out=True, browser={"dnt": True, "gpc": True, "daa_opt_out": True}),
        [profile(country="US", birth_year=2012), settings(partner_sharing=False)],
        DENY_ALL,
        (
            "account.sharing_off",
            "browser.daa_opt_out",
            "browser.dnt",
            "browser.gpc",
            "event.opt_out",
            "user.under_16",
        ),
    ),
]
