"""Deduplication: every copy of an (advertiser, event id) meets here, however produced.

Records arrive on `by-event`, keyed by (advertiser, event id), so the copies of one event
are on one partition whatever topic, partition and partitioner they came through.
Customer-list records are keyed by their membership (advertiser, audience, member keys)
instead, so an add and a later remove of one membership keep their order; they are
deduplicated by the member id of their upload. The first copy within the window is new;
later ones are marked `duplicate` and still travel on, so the decision audits them (and
emits nothing for them). The dedup
entry remembers where the first copy was read: a record read again after an aborted
batch is itself, not a copy. Then each record goes on to resolution: straight to the
decision when a trusted producer named its user or it has no match keys, else to the
partition of its first match key.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from pipeline import catalogue
from pipeline.catalogue import TableName
from pipeline.core import stored
from pipeline.core.parse import processing_error
from pipeline.core.route import Output
from pipeline.runtime.reporting import BatchStats
from pipeline.runtime.stage import Forward, InputRecord, Stage
from pipeline.stages.errors import reject
from pipeline.stages.hops import (
    carry_on,
    hop_of,
    note_latency,
    raised_on_the_way,
    to_decision,
)
from pipeline.state.tables import Table
from schemas import fast
from schemas.internal import Hop

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DedupConfig:
    """How long an (advertiser, event id) is remembered."""

    window_s: int = 48 * 3600


class DedupStage(Stage):
    """Marks later copies of an event as duplicates, then sends it on to resolution."""

    name = "dedup"
    table_inputs = ()
    stream_inputs = (catalogue.BY_EVENT,)
    tables: tuple[TableName, ...] = ("dedup",)
    outputs = (catalogue.BY_MATCH_KEY, catalogue.BY_SUBJECT, catalogue.DLQ)
    partitioned_by = catalogue.BY_EVENT

    def __init__(self, config: DedupConfig) -> None:
        self.config = config

    def bind(self, tables: Mapping[TableName, Table]) -> None:
        self.dedup = tables["dedup"]

    def fold(self, record: InputRecord, now: float, stats: BatchStats) -> list[Output]:
        raise NotImplementedError("dedup has no table inputs")

    def process(self, record: InputRecord, now: float, stats: BatchStats) -> list[Output | Forward]:
        try:
            hop = hop_of(record)
        except Exception as exc:
            log.warning("unreadable hop header: %s", type(exc).__name__)
            return [reject(record, processing_error(exc, "dedup"), stats, "internal")]
        note_latency(record, now, stats)
        duplicate = self._seen_before(record, hop, now)
        if duplicate:
            stats.duplicates[hop.source] += 1
            hop = fast.replace(hop, duplicate=True)
        return [route_to_resolution(hop, record, stats)]

    def raised(self, record: InputRecord, exc: Exception, stats: BatchStats) -> Output:
        return raised_on_the_way(record, exc, stats, "dedup")

    def _seen_before(self, record: InputRecord, hop: Hop, now: float) -> bool:
        key = hop.dedup_key.encode()
        partition = record.origin.partition
        origin = hop.origin
        value = self.dedup.get(partition, key)
        if value is not None:
            entry = stored.decode_dedup(value)
            if now - entry.seen_at < self.config.window_s:
                return (entry.topic, entry.partition, entry.offset) != (
                    origin.topic,
                    origin.partition,
                    origin.offset,
                )
        entry = stored.DedupEntry(origin.topic, origin.partition, origin.offset, now)
        self.dedup.put(partition, key, stored.encode_dedup(entry))
        return False

    def tick(self, now: float, stats: BatchStats, *, sweep: bool) -> list[Output]:
        if sweep:
            self.sweep(now)
        return []

    def sweep(self, now: float) -> int:
        """Delete dedup entries past the window; returns how many."""
        expired = 0
        for partition, store in self.dedup.stores.items():
            for key in store.scan():
                entry = store.get(key)
                if entry is not None and now - stored.decode_dedup(entry).seen_at >= (
                    self.config.window_s
                ):
                    self.dedup.put(partition, key, None)
                    expired += 1
        return expired


def route_to_resolution(hop: Hop, record: InputRecord, stats: BatchStats) -> Forward:
    """Where a deduplicated event goes next: its first match key, or straight to decide."""
    if hop.trusted_user_id is not None:
        hop = fast.replace(hop, match="provided", user_id=hop.trusted_user_id)
        return to_decision(hop, record, stats)
    if not hop.keys:
        return to_decision(fast.replace(hop, match="none"), record, stats)
    return carry_on(catalogue.BY_MATCH_KEY, hop.keys[0].encode(), record, hop)
