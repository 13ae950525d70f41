"""The consent API's bodies: a person's privacy settings, as saved and as the pipeline holds them.

`PUT /v1/users/{user_id}/privacy` takes a `PrivacyUpdate` and answers `PrivacySaved`;
`GET /v1/users/{user_id}/privacy` answers `PrivacySettings`; `GET
/v1/users/{user_id}/privacy/decisions` answers a `DecisionFeed`. `HeldConsent` is what a
worker answers the collector: the state its consent table holds for one person.
"""

from __future__ import annotations

from typing import Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field

from schemas.events import Identifier, RecordSource
from schemas.outputs import Outcomes

SettingName: TypeAlias = Literal["personalization", "ads_from_partner_info", "partner_sharing"]
Region: TypeAlias = Literal["eea_gb_ch", "other", "unknown"]
"""Where the person lives as the policy sees it: EEA, UK or Switzerland (opt-in settings,
never shared with partners), elsewhere (opt-out settings), or not known."""
AgeGroup: TypeAlias = Literal["under_16", "16_or_over", "unknown"]

_REQUEST: ConfigDict = ConfigDict(extra="forbid", frozen=True, strict=True)
_ANSWER: ConfigDict = ConfigDict(extra="forbid", frozen=True)


class PrivacyUpdate(BaseModel):
    """What a person chose on their privacy settings page.

    A setting left out keeps its current value; `null` returns it to the region default.
    Unknown fields and values other than `true`, `false` and `null` are refused.
    """

    model_config = _REQUEST

    personalization: bool | None = None
    ads_from_partner_info: bool | None = None
    partner_sharing: bool | None = None


class SettingState(BaseModel):
    """One setting as the pipeline applies it to the person's events."""

    model_config = _ANSWER

    value: bool
    """What applies: the person's choice, else the region default."""
    chosen: bool | None
    """What the person chose; null when never chosen (the default applies)."""
    default: bool
    """The region default: off in the EEA, UK and Switzerland (opt-in), on elsewhere, off
    when the country is unknown."""
    offered: bool
    """Whether the person's region and age let them turn it on."""
    not_offered_because: list[str] = Field(default_factory=list)
    """The policy's reason codes when it is not offered, sorted."""
    not_offered_said: str | None = None
    """Why it is not offered, for the person, in the policy table's words."""
    affected_by: str | None = None
    """When another setting overrides this one, what that means, for the person."""


class ServedBy(BaseModel):
    """Which worker answered from its consent table, and the partition it holds."""

    model_config = _ANSWER

    worker: str
    partition: int


class PrivacySettings(BaseModel):
    """A person's privacy settings as the worker that owns their partition holds them."""

    model_config = _ANSWER

    user_id: str
    consent_version: int
    """The `changed_at` (unix ms) of the newest consent change folded in."""
    acknowledged_at: int | None
    """When Kafka appended that change (unix ms), if known."""
    country: str | None
    region: Region
    age: AgeGroup
    personalization: SettingState
    ads_from_partner_info: SettingState
    partner_sharing: SettingState
    served_by: ServedBy | None = None


class PrivacySaved(BaseModel):
    """A saved change: the record Kafka acknowledged, and where.

    Every event produced after `acknowledged_at` is decided under it (the revocation
    barrier).
    """

    model_config = _ANSWER

    user_id: str
    changed_at: int
    """The record's `changed_at` (unix ms): the consent version events decided under it cite."""
    acknowledged_at: int
    """When Kafka appended the record (unix ms, the broker's clock)."""
    topic: str
    partition: int
    offset: int
    settings: dict[SettingName, bool | None]
    """The three settings the record carries, as chosen (null: the region default)."""
    rewrites: int = 0
    """How many times the record was written again because another change for the person
    landed while it was being saved (see the README, "The consent API")."""


class HeldConsent(BaseModel):
    """A worker's answer to the collector: one person's row of its consent table."""

    model_config = _ANSWER

    user_id: Identifier
    partition: int
    worker: str
    folded_to: int
    """The next `consent.changes` offset of that partition the table will fold: every
    change before it is in `state`."""
    acknowledged_ms: int
    state: dict[str, Any]
    """The consent state, as `ConsentState.to_dict` writes it."""
    privacy: PrivacySettings


class DecisionSeen(BaseModel):
    """One of the person's events as the audit stream recorded its decision."""

    model_config = _ANSWER

    event_id: str
    source: RecordSource
    advertiser_id: str | None
    event_time: int
    received_at: float | None
    """When Kafka appended the raw record (unix seconds): the moment its consent is taken."""
    decided_at: float
    outcomes: Outcomes
    reasons: list[str]
    destinations: list[str]
    duplicate: bool
    consent_version: int | None
    said: dict[str, str] = Field(default_factory=dict)
    """What happened to the data for each purpose, and why, in the policy table's words."""
    withheld: list[str] = Field(default_factory=list)
    """The purposes the decision did not allow, as the person reads them."""


class DecisionFeed(BaseModel):
    """The person's decisions recorded since a moment, and where to continue reading."""

    model_config = _ANSWER

    decisions: list[DecisionSeen]
    partition: int
    cursor: int
    """The audit offset to continue from (`?cursor=`)."""
