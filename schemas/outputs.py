"""Every record the pipeline writes: the documented schema of each output topic.

The hot path builds these records as plain dicts (see `pipeline.core.route`); the unit
tests validate those dicts against these models, which forbid extra fields, so the two
cannot drift apart. Every record carries the `policy_version` it was decided under.
"""

from __future__ import annotations

from typing import Final, Literal, TypeAlias, get_args

from pydantic import BaseModel, ConfigDict, Field

from schemas.audience import Operation
from schemas.events import ActionSource, RecordSource, Source, Surface
from schemas.identity import IdentityMatch

DlqReason: TypeAlias = Literal[
    "invalid_json",
    "invalid_utf8",
    "schema_violation",
    "too_old",
    "in_future",
    "oversized",
    "missing_key",
    "wrong_partition",
    "processing_error",
]
DLQ_REASONS: Final[tuple[DlqReason, ...]] = get_args(DlqReason)
"""Every DLQ reason, in the order the type lists them."""
Allow: TypeAlias = Literal["allow", "deny"]
Measurement: TypeAlias = Literal["identified", "deidentified"]

OUTPUT_CONFIG = ConfigDict(extra="forbid", frozen=True, strict=True)


class ActivityRecord(BaseModel):
    """An identified event for `activity.personalization` and `activity.ads`.

    No IP address, user agent or email/phone hashes.
    """

    model_config = OUTPUT_CONFIG

    policy_version: str
    consent_version: int | None
    source: Source
    action_source: ActionSource
    surface: Surface
    user_id: str
    event_id: str
    event_name: str
    event_time: int
    advertiser_id: str | None
    site_domain: str | None
    content_ids: list[str]
    value: float | None
    currency: str | None


class PartnerShareRecord(ActivityRecord):
    """An `activity.partner_share` record: the ads record plus hashed contact points."""

    hashed_emails: list[str]
    hashed_phones: list[str]


class MeasurementRecord(BaseModel):
    """A pseudonymous `activity.measurement` record: keyed HMAC instead of the user id.

    No raw identifiers (user, event, order, cookie, device, click ids, hashes); the IP
    address truncated to /24 (IPv4) or /48 (IPv6); the user agent reduced to families.
    """

    model_config = OUTPUT_CONFIG

    policy_version: str
    key_id: str
    user_key: str
    source: Source
    action_source: ActionSource
    surface: Surface
    event_name: str
    event_time: int
    advertiser_id: str | None
    site_domain: str | None
    content_ids: list[str]
    value: float | None
    currency: str | None
    ip_prefix: str | None
    browser_family: str
    os_family: str


class DeidentifiedRecord(BaseModel):
    """An `activity.deidentified` record, no longer connected to the person.

    No user, event, cookie, device, advertising, click or order id, no hashes, no IP;
    the page URL reduced to scheme and host, the user agent to browser and OS family,
    the event time to the hour. `country` comes from the consent profile when known.
    """

    model_config = OUTPUT_CONFIG

    policy_version: str
    source: Source
    action_source: ActionSource
    surface: Surface
    event_name: str
    event_hour: int
    advertiser_id: str | None
    site_domain: str | None
    page_origin: str | None
    browser_family: str
    os_family: str
    country: str | None
    value: float | None
    currency: str | None


class AggregateRecord(BaseModel):
    """An `aggregates.deidentified` cell: one hour x advertiser x event x source x country.

    Cells are also split by currency (values in different currencies cannot be summed)
    and policy version; only cells with `count >= k` are ever emitted.
    """

    model_config = OUTPUT_CONFIG

    policy_version: str
    hour: int
    advertiser_id: str | None
    event_name: str
    action_source: ActionSource
    country: str | None
    currency: str | None
    count: int
    value_sum: float
    k: int


class Outcomes(BaseModel):
    """The four purposes decided for every valid event."""

    model_config = OUTPUT_CONFIG

    personalization: Allow
    ads: Allow
    measurement: Measurement
    partner_sharing: Allow


class Origin(BaseModel):
    """Where an input record was read from (Kafka's partition and offset types)."""

    model_config = OUTPUT_CONFIG

    topic: str
    partition: int = Field(ge=0, le=2**31 - 1)
    offset: int = Field(ge=-1, le=2**63 - 1)


class Timings(BaseModel):
    """When the event happened, reached the pipeline and was decided (unix seconds)."""

    model_config = OUTPUT_CONFIG

    event_time: int
    received_at: float | None
    decided_at: float


class Identity(BaseModel):
    """How the subject of an event was found: the kind of key, never the key."""

    model_config = OUTPUT_CONFIG

    match: IdentityMatch
    conflict: bool
    """Another match key of the event was linked to another user (the first one won)."""


MembershipChangeReason: TypeAlias = Literal["consent.revoked", "consent.granted"]
"""Why a consent change moved a membership: withdrawn by a revocation, restored by a grant."""

MembershipOutcome: TypeAlias = Literal[
    "added",
    "denied",
    "unmatched",
    "removed",
    "already_withdrawn",
    "not_a_member",
    "duplicate",
    "superseded",
]


class Membership(BaseModel):
    """What a customer-list record did: the audience, the change, its outcome.

    `added`: allowed and emitted; `denied`: the member's consent excludes it, kept
    suppressed (a later grant adds it); `unmatched`: no match key named anyone; `removed`:
    the advertiser's remove, emitted; `already_withdrawn`: removed by the advertiser after
    consent had withdrawn it (nothing emitted twice); `not_a_member`: a remove of nothing;
    `duplicate`: a copy of a record already applied; `superseded`: older (by `uploaded_at`)
    than the change of that membership already applied, so it changes nothing.
    """

    model_config = OUTPUT_CONFIG

    audience_id: str
    operation: Operation
    outcome: MembershipOutcome


class AudienceRecord(BaseModel):
    """An `activity.audiences` record: a membership consent allows, or its withdrawal.

    `reason` is null for the advertiser's own changes, `consent.revoked` when a consent
    change withdrew the membership, `consent.granted` when one restored it.
    """

    model_config = OUTPUT_CONFIG

    advertiser_id: str
    audience_id: str
    user_id: str
    operation: Operation
    reason: MembershipChangeReason | None
    policy_version: str
    consent_version: int | None


class AuditRecord(BaseModel):
    """A `decisions.audit` record: why each purpose was decided as it was; no raw PII.

    The subject appears only as `user_key`, the keyed HMAC of the subject key.
    """

    model_config = OUTPUT_CONFIG

    policy_version: str
    consent_version: int | None
    event_id: str
    """The event's id; for a customer-list record, its deterministic member id."""
    source: RecordSource
    advertiser_id: str | None
    key_id: str
    user_key: str
    outcomes: Outcomes
    reasons: list[str]
    duplicate: bool
    raw_pii_hashed: bool
    identity: Identity
    membership: Membership | None = None
    """For customer-list records only."""
    destinations: list[str]
    origin: Origin | None
    timings: Timings


class DlqRecord(BaseModel):
    """A `dlq` record: an input that could not be processed, kept byte for byte.

    `detail` names the field and the error type, never the value; `original` and
    `key` are the input's bytes, base64-encoded.
    """

    model_config = OUTPUT_CONFIG

    reason: DlqReason
    detail: str
    origin: Origin | None
    received_at: float | None
    size: int
    key: str | None
    original: str
