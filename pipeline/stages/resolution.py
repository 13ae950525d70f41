"""Identity resolution: match keys looked up in a table partitioned by match key.

The table input is `identity.links` (compacted, keyed by match key), folded last-writer
-wins into the `identity` table; the barrier reads every link acknowledged before a
batch is processed. The stream input is `by-match-key`: an event arrives on the
partition of the next key it must look up, like a subscription in Kafka Streams'
foreign-key join. The stage looks that key up (and the following ones that live on the
same partition) as of the moment the raw record was produced, then sends the event on to
the partition of its next key, or, when every key was looked up, to the decision, keyed
by the subject the first linked key names (`by-subject`). No worker holds the whole
identity graph: each holds the partitions of the keys it owns.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from pipeline import catalogue
from pipeline.catalogue import TableName
from pipeline.core import identity, stored
from pipeline.core.parse import Rejected, parse_identity_link, processing_error
from pipeline.core.route import Output
from pipeline.kafka.writer import KeyPartitioner
from pipeline.runtime.reporting import BatchStats
from pipeline.runtime.stage import Forward, InputRecord, Stage
from pipeline.stages.errors import reject
from pipeline.stages.hops import (
    FOUND,
    carry_on,
    hop_of,
    note_latency,
    raised_on_the_way,
    to_decision,
)
from pipeline.state.tables import Table
from schemas import fast
from schemas.internal import Found, Hop

log = logging.getLogger(__name__)

NOT_MATCH_KEY = Rejected("schema_violation", "key: not_match_key")
"""An identity link keyed by something else than its match key sits in another partition
than the events looking that key up: it cannot be applied."""


@dataclass(frozen=True)
class ResolutionConfig:
    """How long each key's recent link changes are kept to resolve late events."""

    history_keep_ms: int = identity.HISTORY_KEEP_MS
    history_max_entries: int = identity.HISTORY_MAX_ENTRIES


class ResolutionStage(Stage):
    """Looks events' match keys up in the identity table and forwards them."""

    name = "resolve"
    table_inputs = (catalogue.IDENTITY_LINKS,)
    stream_inputs = (catalogue.BY_MATCH_KEY,)
    tables: tuple[TableName, ...] = ("identity",)
    outputs = (catalogue.BY_MATCH_KEY, catalogue.BY_SUBJECT, catalogue.DLQ)
    partitioned_by = catalogue.IDENTITY_LINKS

    def __init__(self, config: ResolutionConfig) -> None:
        self.config = config
        self.partition_count = 1
        self._hash = KeyPartitioner()

    def bind(self, tables: Mapping[TableName, Table]) -> None:
        self.identity = tables["identity"]

    def assigned(self, partitions: set[int], partition_count: int) -> None:
        self.partition_count = partition_count

    # -- links ----------------------------------------------------------------------

    def fold(self, record: InputRecord, now: float, stats: BatchStats) -> list[Output]:
        if record.key is None:
            return [reject(record, Rejected("missing_key", "key: missing"), stats, "identity")]
        link = None
        if record.value is not None:  # a tombstone unlinks the key
            parsed = parse_identity_link(record.value, key=record.key)
            if isinstance(parsed, Rejected):
                return [reject(record, parsed, stats, "identity")]
            if parsed.match_key.encode() != record.key:
                return [reject(record, NOT_MATCH_KEY, stats, "identity")]
            link = parsed
        partition = record.origin.partition
        row = self._row(partition, record.key)
        updated = identity.apply_link(
            row,
            link,
            record.timestamp_ms,
            keep_ms=self.config.history_keep_ms,
            max_entries=self.config.history_max_entries,
        )
        if updated != row:
            self.identity.put(partition, record.key, stored.encode_link_row(updated))
        stats.links_applied += 1
        return []

    def raised(self, record: InputRecord, exc: Exception, stats: BatchStats) -> Output:
        if record.topic in self.table_inputs:
            return reject(record, processing_error(exc, "identity"), stats, "identity")
        return raised_on_the_way(record, exc, stats, "resolve")

    def _row(self, partition: int, key: bytes) -> identity.LinkRow | None:
        value = self.identity.get(partition, key)
        return None if value is None else stored.decode_link_row(value)

    # -- events ---------------------------------------------------------------------

    def process(self, record: InputRecord, now: float, stats: BatchStats) -> list[Output | Forward]:
        try:
            hop = hop_of(record)
        except Exception as exc:
            log.warning("unreadable hop header: %s", type(exc).__name__)
            return [reject(record, processing_error(exc, "resolve"), stats, "internal")]
        note_latency(record, now, stats)
        return [self._resolve(record, hop, stats)]

    def _resolve(self, record: InputRecord, hop: Hop, stats: BatchStats) -> Forward:
        partition = record.origin.partition
        keys = list(hop.keys)
        found = list(hop.found)

        def look_up(key: str) -> Found:
            user = identity.user_as_of(self._row(partition, key.encode()), hop.produced_ms)
            return FOUND.build(kind=identity.kind_of(key), user_id=user)

        # The first key is this partition's (the record is keyed by it); so are any of the
        # following keys that hash here, looked up now instead of one hop each.
        found.append(look_up(keys.pop(0)))
        while keys and self._partition_of(keys[0]) == partition:
            found.append(look_up(keys.pop(0)))
        if keys:
            onward = fast.replace(hop, keys=keys, found=found)
            return carry_on(catalogue.BY_MATCH_KEY, keys[0].encode(), record, onward)
        resolution = identity.choose((f.kind, f.user_id) for f in found)
        if resolution.conflict:
            stats.identity_conflicts += 1
        resolved = fast.replace(
            hop,
            keys=[],
            found=found,
            match=resolution.match or "none",
            user_id=resolution.user_id,
            conflict=resolution.conflict,
        )
        return to_decision(resolved, record, stats)

    def _partition_of(self, key: str) -> int:
        return self._hash(key.encode()) % self.partition_count

    def tick(self, now: float, stats: BatchStats, *, sweep: bool) -> list[Output]:
        return []

    def table_size(self) -> int | None:
        return None
