"""The policy's rule table: each reason code, what it denies, where it comes from, in words.

One table serves every reader of a decision: `pipeline.core.policy` takes the purposes
each rule denies from it, and the `explain` and `decide` commands, the settings page, the
live view, `docs/policy.md` and the audit contract's description of `reasons` take their
words from it. A rule's `source` quotes the public help-centre article on personalization
and data that the policy implements, or names the convention or law it follows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final, Literal, TypeAlias

Purpose: TypeAlias = Literal["personalization", "ads", "measurement", "partner_sharing"]
PURPOSES: Final[tuple[Purpose, ...]] = ("personalization", "ads", "measurement", "partner_sharing")
"""The purposes every event is decided for, in the order decisions hold them."""


class Reason(StrEnum):
    """The code of each rule, as audits, `explain` and `decide` report it."""

    SUBJECT_ANONYMOUS = "subject.anonymous"
    CONSENT_MISSING = "consent.missing"
    ACCOUNT_DELETED = "account.deleted"
    ACCOUNT_PERSONALIZATION_OFF = "account.personalization_off"
    ACCOUNT_PARTNER_ADS_OFF = "account.partner_ads_off"
    ACCOUNT_SHARING_OFF = "account.sharing_off"
    BROWSER_DNT = "browser.dnt"
    BROWSER_GPC = "browser.gpc"
    BROWSER_DAA_OPT_OUT = "browser.daa_opt_out"
    DEVICE_ATT_NOT_AUTHORIZED = "device.att_not_authorized"
    DEVICE_ADS_OPT_OUT = "device.ads_opt_out"
    EVENT_OPT_OUT = "event.opt_out"
    EVENT_LDP = "event.ldp"
    USER_UNDER_16 = "user.under_16"
    USER_AGE_UNKNOWN = "user.age_unknown"
    USER_REGION_RESTRICTED = "user.region_restricted"
    USER_COUNTRY_NOT_ENABLED = "user.country_not_enabled"
    USER_COUNTRY_UNKNOWN = "user.country_unknown"
    EXCEPTION_ON_PLATFORM_PURCHASE = "exception.on_platform_purchase"


@dataclass(frozen=True, slots=True)
class Rule:
    """One row of the policy table."""

    reason: Reason
    denies: frozenset[Purpose]
    """Purposes the rule denies; measurement is never denied, only de-identified with ads."""
    condition: str
    """When the rule applies, for an engineer."""
    because: str
    """Completes "... because ___" for the person the event is about."""
    source: str
    """The help-centre sentence the rule comes from, or the convention or law it follows."""


_ALL: Final[frozenset[Purpose]] = frozenset({"personalization", "ads", "partner_sharing"})
_TARGETING: Final[frozenset[Purpose]] = frozenset({"personalization", "ads"})
_ADS: Final[frozenset[Purpose]] = frozenset({"ads"})
_SHARING: Final[frozenset[Purpose]] = frozenset({"partner_sharing"})
_NOTHING: Final[frozenset[Purpose]] = frozenset()

_ARTICLE: Final = "Help centre, Personalization and data: "
_ARTICLE_2020: Final = "Help centre, Personalization and data (2020): "
_SETTINGS_SENTENCE: Final = (
    _ARTICLE + '"Depending on your location, you can choose whether we use or share certain '
    'information to customize Pinterest for you by going to your account settings."'
)
_PARTNERS_SENTENCE: Final = (
    _ARTICLE + '"Our advertising partners may also give us information about your '
    'off-Pinterest activity to give you better personalized ads."'
)
_UNDER_16_SENTENCE: Final = (
    _ARTICLE + '"If you are under the age of 16 or are in the EEA, United Kingdom, or '
    'Switzerland, your data will not be shared with these partners."'
)
_COUNTRIES_SENTENCE: Final = (
    _ARTICLE + '"In certain countries, we may share information about you and your '
    'Pinterest activity with partners to improve the third-party ads you see on Pinterest."'
)
_OPT_OUT_CONVENTION: Final = (
    "Conversions API convention: the advertiser marks the event of a person who opted out "
    "(Pinterest's `opt_out`, Meta's `application_tracking_enabled: false`)"
)
_LDP_CONVENTION: Final = (
    "Conversions API convention: limited data processing under US state privacy laws "
    "(Pinterest's `opt_out_type: LDP`, Meta's `data_processing_options: [\"LDU\"]`)"
)

RULES: Final[tuple[Rule, ...]] = (
    Rule(
        Reason.SUBJECT_ANONYMOUS,
        _ALL,
        "no user: none given by a trusted producer and none resolved from the match keys",
        "nobody could be matched to this activity, so it is used only without identity",
        _PARTNERS_SENTENCE,
    ),
    Rule(
        Reason.CONSENT_MISSING,
        _ALL,
        "the user is known but the pipeline holds no consent record for them (fail closed)",
        "we hold no record of your choices yet, so none of your data is used as yours",
        _SETTINGS_SENTENCE,
    ),
    Rule(
        Reason.ACCOUNT_DELETED,
        _ALL,
        "the account was deleted",
        "your account was deleted",
        _SETTINGS_SENTENCE,
    ),
    Rule(
        Reason.ACCOUNT_PERSONALIZATION_OFF,
        _TARGETING,
        "the account's personalization setting is off (or off by the region's default)",
        "Personalization is off in your settings, which also stops ads based on it",
        _ARTICLE_2020 + "\"If you don't want Pinterest using stuff you do off Pinterest to "
        "personalize your experience ... Go to your account privacy settings and turn off "
        'Personalization"',
    ),
    Rule(
        Reason.ACCOUNT_PARTNER_ADS_OFF,
        _ADS,
        "the account's setting for ads from partners' information is off, on tag and app events",
        "ads based on information from partners is off in your settings",
        _PARTNERS_SENTENCE,
    ),
    Rule(
        Reason.ACCOUNT_SHARING_OFF,
        _SHARING,
        "the account's partner-sharing setting is off",
        "sharing with partners is off in your settings",
        _COUNTRIES_SENTENCE,
    ),
    Rule(
        Reason.BROWSER_DNT,
        _TARGETING,
        "a web event from a browser sending Do Not Track",
        "your browser asked not to be tracked (Do Not Track)",
        _ARTICLE_2020 + "\"Change your browser's Do Not Track feature to keep Pinterest and "
        'other sites from using this info for personalization"',
    ),
    Rule(
        Reason.BROWSER_GPC,
        _ADS | _SHARING,
        "a web event from a browser sending Global Privacy Control (configurable, on by default)",
        "your browser sent Global Privacy Control, which opts out of targeted ads and sale",
        "Global Privacy Control, honoured as an opt-out of sale and targeted ads under US "
        "state privacy laws (beyond the article)",
    ),
    Rule(
        Reason.BROWSER_DAA_OPT_OUT,
        _ADS,
        "a tag event from a browser carrying the web opt-out cookie (that browser's tag "
        "events only)",
        "you opted out of targeted ads in this browser (the industry's web opt-out)",
        _ARTICLE + '"When you opt out on aboutads.info, your choice there only applies to '
        'information the Pinterest tag collects from the browser you use to opt out."',
    ),
    Rule(
        Reason.DEVICE_ATT_NOT_AUTHORIZED,
        _TARGETING,
        "an iOS app event (iOS 14.5 or later, or unknown) whose App Tracking Transparency "
        "status, on the event or the device's record, is not authorized",
        "you asked this iPhone's app not to track you",
        _ARTICLE + "\"If you select 'Ask App Not to Track' ... We will only use this "
        "information for advertising after we've removed or combined it with other "
        "information so it's no longer connected to you.\"",
    ),
    Rule(
        Reason.DEVICE_ADS_OPT_OUT,
        _ADS,
        "an app event from a device that opted out of ads personalization (or an all-zero "
        "advertising id)",
        "you opted out of targeted ads on this device",
        _ARTICLE + '"Android devices allow you to opt out of the use of this identifier for '
        'purposes of showing you targeted ads."',
    ),
    Rule(
        Reason.EVENT_OPT_OUT,
        _TARGETING,
        "the advertiser sent the event with opt_out set",
        "the advertiser told us you opted out",
        _OPT_OUT_CONVENTION,
    ),
    Rule(
        Reason.EVENT_LDP,
        _ALL,
        "the advertiser asked for limited data processing (opt_out_type LDP, Meta's LDU)",
        "the advertiser asked for limited data processing under a state privacy law",
        _LDP_CONVENTION,
    ),
    Rule(
        Reason.USER_UNDER_16,
        _SHARING,
        "the youngest age consistent with the birth year, at the event's time, is under 16",
        "you are under 16",
        _UNDER_16_SENTENCE,
    ),
    Rule(
        Reason.USER_AGE_UNKNOWN,
        _SHARING,
        "the user's birth year is unknown",
        "we do not know that you are 16 or older",
        _UNDER_16_SENTENCE,
    ),
    Rule(
        Reason.USER_REGION_RESTRICTED,
        _SHARING,
        "the user's country is in the EEA (EU-27, IS, LI, NO), the United Kingdom or "
        "Switzerland; not configurable",
        "you are in the EEA, the United Kingdom or Switzerland",
        _UNDER_16_SENTENCE,
    ),
    Rule(
        Reason.USER_COUNTRY_NOT_ENABLED,
        _SHARING,
        "the user's country is not in the configured partner-sharing list (default: US)",
        "partner sharing is not offered in your country",
        _COUNTRIES_SENTENCE,
    ),
    Rule(
        Reason.USER_COUNTRY_UNKNOWN,
        _SHARING,
        "the user's country is unknown",
        "we do not know your country",
        _COUNTRIES_SENTENCE,
    ),
    Rule(
        Reason.EXCEPTION_ON_PLATFORM_PURCHASE,
        _NOTHING,
        "a checkout initiated on the platform: the account settings, browser and device "
        "rules do not block it; deletion, event flags, sharing, age and region still do",
        "it was a purchase you made on the platform, which your personalization setting "
        "does not cover",
        _ARTICLE + '"Please keep in mind that this setting does not apply to information '
        'about purchases you initiate on Pinterest."',
    ),
)
"""The rules in the order the policy states them; the most restrictive outcome wins."""

RULE: Final = MappingProxyType({rule.reason: rule for rule in RULES})
"""Each rule by its reason code."""

OUTCOME_WORDS: Final[MappingProxyType[tuple[Purpose, str], str]] = MappingProxyType(
    {
        ("personalization", "allow"): "used to personalize what you see",
        ("personalization", "deny"): "not used to personalize what you see",
        ("ads", "allow"): "used to personalize ads",
        ("ads", "deny"): "not used to personalize ads",
        ("measurement", "identified"): "used to measure ads, under a pseudonym",
        ("measurement", "deidentified"): "used only after removing what identifies you",
        ("partner_sharing", "allow"): "shared with advertising partners",
        ("partner_sharing", "deny"): "not shared with partners",
    }
)
"""What each purpose's outcome means for the person, as the settings page and `explain` say it."""

PURPOSE_WORDS: Final[MappingProxyType[Purpose, str]] = MappingProxyType(
    {
        "personalization": "personalization",
        "ads": "ads",
        "measurement": "measurement",
        "partner_sharing": "partner sharing",
    }
)

_IDENTITY_WORDS: Final = MappingProxyType(
    {
        "provided": "named by a trusted producer's user id",
        "session": "found by a widget session linked to the account",
        "click": "found by a click id linked to the account",
        "em": "found by a hashed email address",
        "ph": "found by a hashed phone number",
        "maid": "found by a mobile advertising id",
        "none": "nobody: no match key named a person",
    }
)


def withheld(outcomes: Mapping[str, str]) -> list[str]:
    """The purposes an outcome set denied, in words ("partner sharing"); de-identified
    measurement is a use, not a denial."""
    return [PURPOSE_WORDS[purpose] for purpose in PURPOSES if outcomes.get(purpose) == "deny"]


def because(codes: Iterable[str]) -> str:
    """The person's "because" of each known code, joined: "you are under 16; and ..."."""
    return "; and ".join(RULE[Reason(code)].because for code in codes if rule(code) is not None)


def identity_words(match: str) -> str:
    """How the subject was found, in words (the audit's `identity.match`)."""
    return _IDENTITY_WORDS.get(match, match)


def rule(code: str) -> Rule | None:
    """The rule of a reason code, or None for a code this policy version does not know."""
    try:
        return RULE[Reason(code)]
    except ValueError:
        return None


def denied_by(codes: list[str] | tuple[str, ...], purpose: Purpose) -> list[str]:
    """The codes among `codes` whose rule denies `purpose` (measurement follows ads)."""
    wanted: Purpose = "ads" if purpose == "measurement" else purpose
    found = []
    for code in codes:
        known = rule(code)
        if known is not None and wanted in known.denies:
            found.append(code)
    return found


def sentence(purpose: Purpose, outcome: str, codes: list[str] | tuple[str, ...]) -> str:
    """What happened to the person's data for one purpose, and why when it was withheld.

    Partner sharing needs ads, so a sharing denial with no sharing rule is explained by
    the rules that denied ads; a waived rule (on-platform purchase) is not named.
    """
    words = OUTCOME_WORDS.get((purpose, outcome), f"{PURPOSE_WORDS[purpose]}: {outcome}")
    if outcome in ("allow", "identified"):
        return words[0].upper() + words[1:] + "."
    waived = Reason.EXCEPTION_ON_PLATFORM_PURCHASE in codes
    causes = [
        code
        for code in denied_by(codes, purpose)
        if not (waived and Reason(code) in WAIVED_FOR_ON_PLATFORM_PURCHASE)
    ]
    if not causes and purpose == "partner_sharing":
        causes = [
            code
            for code in denied_by(codes, "ads")
            if not (waived and Reason(code) in WAIVED_FOR_ON_PLATFORM_PURCHASE)
        ]
    if Reason.USER_REGION_RESTRICTED in causes and Reason.USER_COUNTRY_NOT_ENABLED in causes:
        causes.remove(Reason.USER_COUNTRY_NOT_ENABLED)  # the region says it already
    if not causes:
        return words[0].upper() + words[1:] + "."
    reasons = "; and because ".join(RULE[Reason(code)].because for code in causes)
    return f"{words[0].upper()}{words[1:]} because {reasons}."


WAIVED_FOR_ON_PLATFORM_PURCHASE: Final = frozenset(
    {
        Reason.ACCOUNT_PERSONALIZATION_OFF,
        Reason.ACCOUNT_PARTNER_ADS_OFF,
        Reason.BROWSER_DNT,
        Reason.BROWSER_GPC,
        Reason.BROWSER_DAA_OPT_OUT,
        Reason.DEVICE_ATT_NOT_AUTHORIZED,
        Reason.DEVICE_ADS_OPT_OUT,
    }
)
"""Rules that do not block a purchase initiated on the platform."""


_DLQ_WORDS: Final = {
    "invalid_json": "the record's bytes are not a JSON document",
    "invalid_utf8": "the record's bytes are not UTF-8",
    "schema_violation": "a field is missing, of the wrong type or out of its limits",
    "too_old": "the event's time is older than the accepted window",
    "in_future": "the event's time is further in the future than the accepted window",
    "oversized": "the record is larger than the accepted maximum",
    "missing_key": "a table input (consent change, identity link) has no key",
    "wrong_partition": "a table input is on another partition than its key hashes to",
    "processing_error": "the record raised while being processed, alone, after a retry",
}
"""Each DLQ reason in words; a test fails when a reason has none."""


def dlq_words(reason: str) -> str:
    """What a DLQ reason means, for `explain`, `dlq`, the live view and the docs."""
    return _DLQ_WORDS.get(reason, reason)
