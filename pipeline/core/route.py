"""Turn a decided event into the records each output topic receives.

Records are plain dicts for the codec, built from named fields only, so unknown input
fields can never leak through; their schemas are the models in `schemas.outputs`.

Keys: identified outputs are keyed by the subject key, like every input. Keying the
pseudonymous and de-identified outputs by it would put the raw user id next to records
meant to be free of it, so `activity.measurement` and `decisions.audit` are keyed by the
`user_key` (HMAC) instead, and `activity.deidentified` by its aggregation cell (hour,
advertiser, event, action source, country), which also puts every record of a cell on
one partition. A de-identified record is emitted for every valid event, whatever the
decision: nothing in it is connected to the person.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, TypeAlias

from pipeline.core.audience import Change, MembershipDecision, member_id
from pipeline.core.consent import ConsentState
from pipeline.core.deidentify import (
    Pseudonymizer,
    truncate_ip,
    truncate_to_hour,
    url_origin,
    user_agent_family,
)
from pipeline.core.parse import Rejected
from pipeline.core.policy import Decision
from schemas.audience import AudienceMember
from schemas.events import Event, SdkEvent, WidgetEvent
from schemas.identity import IdentityMatch
from schemas.outputs import MembershipOutcome

Destination: TypeAlias = Literal[
    "personalization",
    "ads",
    "measurement",
    "partner_share",
    "deidentified",
    "aggregates",
    "audiences",
    "audit",
    "dlq",
]
"""Where a routed record goes; `pipeline.catalogue` names the topic of each."""


class Output(NamedTuple):
    """One record for one destination, with its Kafka key."""

    destination: Destination
    key: bytes | None
    record: dict[str, Any]


@dataclass(slots=True)
class Origin:
    """Where an input record was read from; never changed once made (not frozen, which
    would cost a `__setattr__` call per field, for one per record and hop)."""

    topic: str
    partition: int
    offset: int


def subject_key(event: Event) -> str:
    """The key every input topic is partitioned by.

    `user_id` when the collector resolved one, else `anon:` and the first of the device
    id, cookie id and event id the event carries.
    """
    if event.user_id is not None:
        return event.user_id
    device_id = None
    if isinstance(event, SdkEvent) and event.device is not None:
        device_id = event.device.device_id
    cookie_id = None if event.browser is None else event.browser.cookie_id
    return "anon:" + (device_id or cookie_id or event.event_id)


def list_key(advertiser_id: str, audience_id: str) -> str:
    """The key `raw.audience` records are written with: their list (advertiser, audience).

    Every change of one list is then on one partition, in the order it was uploaded, so an
    add and a later remove of a member are decided in that order.
    """
    return f"{advertiser_id}\x1f{audience_id}"


def route(
    event: Event, decision: Decision, consent: ConsentState | None, pseudonymizer: Pseudonymizer
) -> list[Output]:
    """The records `event` produces under `decision`, one per permitted destination."""
    outputs: list[Output] = []
    user_id = event.user_id
    if user_id is not None:
        key = user_id.encode()
        if decision.personalization == "allow" or decision.ads == "allow":
            activity = activity_record(event, decision, user_id)
            if decision.personalization == "allow":
                outputs.append(Output("personalization", key, activity))
            if decision.ads == "allow":
                outputs.append(Output("ads", key, activity))
            if decision.partner_sharing == "allow":
                outputs.append(Output("partner_share", key, partner_share_record(event, activity)))
    families = user_agent_family(event.client_user_agent)
    if user_id is not None and decision.measurement == "identified":
        user_key = pseudonymizer.user_key(user_id)
        record = measurement_record(event, decision, pseudonymizer.key_id, user_key, families)
        outputs.append(Output("measurement", user_key.encode(), record))
    deidentified = deidentified_record(event, decision, consent, families)
    outputs.append(Output("deidentified", cell_key(deidentified), deidentified))
    return outputs


def activity_record(event: Event, decision: Decision, user_id: str) -> dict[str, Any]:
    """An identified record for `activity.personalization` and `activity.ads`.

    The same dict serves both destinations; treat it as read-only.
    """
    custom = event.custom_data
    return {
        "policy_version": decision.policy_version,
        "consent_version": decision.consent_version,
        "source": event.source,
        "action_source": event.action_source,
        "surface": event.surface,
        "user_id": user_id,
        "event_id": event.event_id,
        "event_name": event.event_name,
        "event_time": event.event_time,
        "advertiser_id": event.advertiser_id,
        "site_domain": _site_domain(event),
        "content_ids": [] if custom is None else list(custom.content_ids),
        "value": None if custom is None else custom.value,
        "currency": None if custom is None else custom.currency,
    }


def partner_share_record(event: Event, activity: dict[str, Any]) -> dict[str, Any]:
    """An `activity.partner_share` record: the ads record plus hashed email and phone."""
    user_data = None if isinstance(event, WidgetEvent) else event.user_data
    return {
        **activity,
        "hashed_emails": [] if user_data is None else list(user_data.em),
        "hashed_phones": [] if user_data is None else list(user_data.ph),
    }


def measurement_record(
    event: Event,
    decision: Decision,
    key_id: str,
    user_key: str,
    families: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """A pseudonymous `activity.measurement` record: HMAC user key, truncated IP.

    `families` is the event's `user_agent_family`, when the caller already has it.
    """
    custom = event.custom_data
    browser, system = families or user_agent_family(event.client_user_agent)
    return {
        "policy_version": decision.policy_version,
        "key_id": key_id,
        "user_key": user_key,
        "source": event.source,
        "action_source": event.action_source,
        "surface": event.surface,
        "event_name": event.event_name,
        "event_time": event.event_time,
        "advertiser_id": event.advertiser_id,
        "site_domain": _site_domain(event),
        "content_ids": [] if custom is None else list(custom.content_ids),
        "value": None if custom is None else custom.value,
        "currency": None if custom is None else custom.currency,
        "ip_prefix": truncate_ip(event.client_ip_address),
        "browser_family": browser,
        "os_family": system,
    }


def deidentified_record(
    event: Event,
    decision: Decision,
    consent: ConsentState | None,
    families: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """An `activity.deidentified` record: nothing left that points at the person.

    `families` is the event's `user_agent_family`, when the caller already has it.
    """
    custom = event.custom_data
    browser, system = families or user_agent_family(event.client_user_agent)
    country = None
    if consent is not None and consent.user_id == event.user_id and consent.country is not None:
        country = consent.country.value
    return {
        "policy_version": decision.policy_version,
        "source": event.source,
        "action_source": event.action_source,
        "surface": event.surface,
        "event_name": event.event_name,
        "event_hour": truncate_to_hour(event.event_time),
        "advertiser_id": event.advertiser_id,
        "site_domain": _site_domain(event),
        "page_origin": url_origin(event.page_url),
        "browser_family": browser,
        "os_family": system,
        "country": country,
        "value": None if custom is None else custom.value,
        "currency": None if custom is None else custom.currency,
    }


def cell_key(deidentified: dict[str, Any]) -> bytes:
    """The aggregation cell of a de-identified record, as a Kafka key."""
    fields = (
        deidentified["event_hour"],
        deidentified["advertiser_id"],
        deidentified["event_name"],
        deidentified["action_source"],
        deidentified["country"],
    )
    return "|".join("" if value is None else str(value) for value in fields).encode()


def audit_record(
    event: Event,
    decision: Decision,
    *,
    pseudonymizer: Pseudonymizer,
    destinations: list[Destination],
    duplicate: bool,
    origin: Origin | None,
    received_at: float | None,
    decided_at: float,
    identity: tuple[IdentityMatch, bool] | None = None,
) -> Output:
    """The `decisions.audit` record for a processed event, keyed by its `user_key`.

    Args:
        destinations: where the event's records went (empty for a duplicate).
        duplicate: the event was seen before and not emitted again.
        received_at: when the input reached the pipeline (its Kafka timestamp).
        decided_at: when the decision was made.
        identity: how the subject was found, and whether another match key
            named another user; by default the event's own `user_id` (`provided`) or none.
    """
    match, conflict = identity or ("provided" if event.user_id is not None else "none", False)
    membership = None
    user_key = pseudonymizer.user_key(subject_key(event))
    record = {
        "policy_version": decision.policy_version,
        "consent_version": decision.consent_version,
        "event_id": event.event_id,
        "source": event.source,
        "advertiser_id": event.advertiser_id,
        "key_id": pseudonymizer.key_id,
        "user_key": user_key,
        "outcomes": decision.outcomes(),
        "reasons": list(decision.reasons),
        "duplicate": duplicate,
        "raw_pii_hashed": event.raw_pii_hashed,
        "identity": {"match": match, "conflict": conflict},
        "membership": membership,
        "destinations": list(destinations),
        "origin": _origin(origin),
        "timings": {
            "event_time": event.event_time,
            "received_at": received_at,
            "decided_at": decided_at,
        },
    }
    return Output("audit", user_key.encode(), record)


def audience_record(change: Change, user_id: str, decision: MembershipDecision) -> Output:
    """An `activity.audiences` record: a membership change to emit, keyed by the user id."""
    record = {
        "advertiser_id": change.advertiser_id,
        "audience_id": change.audience_id,
        "user_id": user_id,
        "operation": change.operation,
        "reason": change.reason,
        "policy_version": decision.policy_version,
        "consent_version": decision.consent_version,
    }
    return Output("audiences", user_id.encode(), record)


def membership_audit_record(
    member: AudienceMember,
    decision: MembershipDecision,
    *,
    subject: str,
    outcome: MembershipOutcome,
    emitted: bool,
    pseudonymizer: Pseudonymizer,
    duplicate: bool,
    identity: tuple[IdentityMatch, bool],
    origin: Origin | None,
    received_at: float | None,
    decided_at: float,
) -> Output:
    """The `decisions.audit` record of a customer-list record, keyed by its `user_key`.

    Its outcomes say whether the membership was allowed (as ads and personalization);
    nothing of a list is measured or shared with partners.
    """
    user_key = pseudonymizer.user_key(subject)
    allowed = "allow" if decision.allowed else "deny"
    record = {
        "policy_version": decision.policy_version,
        "consent_version": decision.consent_version,
        "event_id": member_id(member),
        "source": "audience",
        "advertiser_id": member.advertiser_id,
        "key_id": pseudonymizer.key_id,
        "user_key": user_key,
        "outcomes": {
            "personalization": allowed,
            "ads": allowed,
            "measurement": "deidentified",
            "partner_sharing": "deny",
        },
        "reasons": list(decision.reasons),
        "duplicate": duplicate,
        "raw_pii_hashed": False,
        "identity": {"match": identity[0], "conflict": identity[1]},
        "membership": {
            "audience_id": member.audience_id,
            "operation": member.operation,
            "outcome": outcome,
        },
        "destinations": ["audiences"] if emitted else [],
        "origin": _origin(origin),
        "timings": {
            "event_time": member.uploaded_at // 1000,
            "received_at": received_at,
            "decided_at": decided_at,
        },
    }
    return Output("audit", user_key.encode(), record)


def dlq_record(
    rejected: Rejected,
    *,
    data: bytes | None,
    key: bytes | None,
    origin: Origin | None,
    received_at: float | None,
) -> Output:
    """The `dlq` record for an input that could not be processed, keyed as the input was."""
    original = data or b""
    record = {
        "reason": rejected.reason,
        "detail": rejected.detail,
        "origin": _origin(origin),
        "received_at": received_at,
        "size": len(original),
        "key": None if key is None else base64.b64encode(key).decode("ascii"),
        "original": base64.b64encode(original).decode("ascii"),
    }
    return Output("dlq", key, record)


def _site_domain(event: Event) -> str | None:
    return event.site_domain if isinstance(event, WidgetEvent) else None


def _origin(origin: Origin | None) -> dict[str, Any] | None:
    if origin is None:
        return None
    return {"topic": origin.topic, "partition": origin.partition, "offset": origin.offset}
