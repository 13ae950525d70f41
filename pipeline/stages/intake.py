"""Intake: raw records, partitioned any way, validated and sent on to deduplication.

Events and customer-list records (`raw.audience`) alike: a list record is resolved by the
match keys of its member and deduplicated by a deterministic member id.

The first hop of every raw record. A record that cannot be parsed goes
to the DLQ with its origin; a valid one is forwarded, value untouched, to the internal
`by-event` topic keyed by (advertiser, event id), with a `pipeline-hop` header that
carries its origin, the time Kafka appended it, its match keys in try order, the subject
key it has if nobody is resolved, and its `user_id` when a trusted producer signed it
(`pipeline.core.trust`); any other `user_id` is ignored and counted.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace

from pipeline import catalogue
from pipeline.catalogue import TableName
from pipeline.core import stored
from pipeline.core.audience import member_id, member_keys
from pipeline.core.identity import match_keys
from pipeline.core.parse import (
    ParseLimits,
    Rejected,
    decode_event,
    parse_audience_member,
    processing_error,
)
from pipeline.core.route import Output, subject_key
from pipeline.core.trust import TRUST_HEADER, is_trusted
from pipeline.runtime.reporting import BatchStats
from pipeline.runtime.stage import Forward, InputRecord, Stage
from pipeline.stages.errors import reject
from pipeline.stages.hops import HOP
from pipeline.state.tables import Table
from schemas import fast

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IntakeConfig:
    """What intake needs: the parse limits and the key trusted producers sign with."""

    limits: ParseLimits
    trust_key: bytes | None


class IntakeStage(Stage):
    """Validates raw records and forwards them to deduplication."""

    name = "intake"
    table_inputs = ()
    stream_inputs = (
        catalogue.RAW_TAG,
        catalogue.RAW_SDK,
        catalogue.RAW_WIDGET,
        catalogue.RAW_AUDIENCE,
    )
    tables: tuple[TableName, ...] = ()
    outputs = (catalogue.BY_EVENT, catalogue.DLQ)
    partitioned_by = None

    def __init__(self, config: IntakeConfig) -> None:
        self.config = replace(config, limits=replace(config.limits, require_key=False))

    def bind(self, tables: Mapping[TableName, Table]) -> None:
        return None

    def fold(self, record: InputRecord, now: float, stats: BatchStats) -> list[Output]:
        raise NotImplementedError("intake has no table inputs")

    def process(self, record: InputRecord, now: float, stats: BatchStats) -> list[Output | Forward]:
        source = record.topic.source
        assert source is not None
        stats.events_in[source] += 1
        if source == "audience":
            return [self._member(record, stats)]
        # Bounded by the moment Kafka appended it: decided the same whenever it is read.
        event = decode_event(
            source, record.value, now=record.timestamp_ms / 1000, limits=self.config.limits
        )
        if isinstance(event, Rejected):
            return [reject(record, event, stats, source)]
        trusted = None
        if event.user_id is not None:
            if self._trusted(record):
                trusted = event.user_id
            else:
                stats.untrusted_user_ids[source] += 1
            event = fast.replace(event, user_id=None)
        key = stored.dedup_key(event.advertiser_id, event.event_id)
        hop = HOP.build(
            origin=_origin(record),
            produced_ms=record.timestamp_ms,
            source=source,
            dedup_key=key.decode(),
            trusted_user_id=trusted,
            keys=[] if trusted is not None else match_keys(event),
            anonymous_subject=subject_key(event),
        )
        return [Forward(catalogue.BY_EVENT, key, record.value, hop, event)]

    def raised(self, record: InputRecord, exc: Exception, stats: BatchStats) -> Output:
        source = record.topic.source or "internal"
        stats.processing_errors[source] += 1
        return reject(record, processing_error(exc, "intake"), stats, source)

    def _member(self, record: InputRecord, stats: BatchStats) -> Output | Forward:
        """A customer-list record: forwarded like an event, its keys from the list."""
        member = parse_audience_member(record.value, limits=self.config.limits)
        if isinstance(member, Rejected):
            return reject(record, member, stats, "audience")
        identifier = member_id(member)
        keys = member_keys(member)
        hop = HOP.build(
            origin=_origin(record),
            produced_ms=record.timestamp_ms,
            source="audience",
            dedup_key=stored.dedup_key(member.advertiser_id, identifier).decode(),
            keys=keys,
            anonymous_subject=f"anon:{identifier}",
        )
        membership = "\x1f".join([member.advertiser_id, member.audience_id, *sorted(keys)])
        return Forward(catalogue.BY_EVENT, membership.encode(), record.value, hop, member)

    def _trusted(self, record: InputRecord) -> bool:
        key = self.config.trust_key
        return key is not None and is_trusted(key, record.value, record.header(TRUST_HEADER))


def _origin(record: InputRecord) -> dict[str, str | int]:
    """The hop's `origin` (built with the hop)."""
    origin = record.origin
    return {"topic": origin.topic, "partition": origin.partition, "offset": origin.offset}
