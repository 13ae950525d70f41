"""Records between the worker's stages (internal topics `<app_id>.*`).

A raw record travels from intake through deduplication and identity resolution to the
decision with its value untouched (the raw event's bytes); what the stages learn about
it rides in one Kafka header, `pipeline-hop`, whose value is a `Hop` as JSON.
"""

from __future__ import annotations

from typing import Final

from pydantic import BaseModel

from schemas.events import RecordSource
from schemas.identity import IdentityMatch, MatchKey, MatchKind
from schemas.outputs import OUTPUT_CONFIG, Origin

HOP_HEADER: Final = "pipeline-hop"


class Found(BaseModel):
    """What one match key resolved to (None: no live link)."""

    model_config = OUTPUT_CONFIG

    kind: MatchKind
    user_id: str | None


class Hop(BaseModel):
    """What the stages know about a raw record on its way to the decision."""

    model_config = OUTPUT_CONFIG

    origin: Origin
    """Where the raw record was read: every audit or DLQ record names it."""
    produced_ms: int
    """When Kafka appended the raw record (unix ms): the barriers' reference time."""
    source: RecordSource
    dedup_key: str
    """What deduplication compares: the advertiser and event id; for a customer-list
    record, the advertiser and its member id (the same member of the same upload)."""
    duplicate: bool = False
    """Set by deduplication: another record carried this (advertiser, event id) first."""
    trusted_user_id: str | None = None
    """A `user_id` a trusted producer signed; skips resolution (identity match `provided`)."""
    anonymous_subject: str
    """The subject key the event has if nobody is resolved: `anon:<device, cookie or event id>`."""
    keys: list[MatchKey] = []
    """Match keys still to look up, in try order."""
    found: list[Found] = []
    """What the keys looked up so far resolved to, in try order."""
    match: IdentityMatch | None = None
    """Set once resolved: which kind of key named the subject (`none`: nobody)."""
    user_id: str | None = None
    """Set once resolved: the subject's user id (None: anonymous)."""
    conflict: bool = False
    """Another key of the event was linked to another user."""
