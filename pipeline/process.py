"""What a worker does with each consumed record, over its tables: no Kafka, no metrics.

The engine hands records over in batches; this module parses them with the core,
deduplicates, looks up consent, decides, routes, aggregates, and returns the outputs
and the counts the engine reports. Every raw record yields exactly one audit or DLQ
output; an unexpected exception becomes a `processing_error` DLQ output, never a loss.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from pipeline.core.aggregate import Cell, CellKey, HourlyAggregator, cell_key_from_list
from pipeline.core.consent import (
    ConsentState,
    History,
    apply_change,
    history_from_bytes,
    history_to_bytes,
    remember,
    states_as_of,
)
from pipeline.core.deidentify import HOUR, Pseudonymizer
from pipeline.core.parse import ParseLimits, Rejected, parse_consent_change, parse_event
from pipeline.core.parse import processing_error as processing_error_reject
from pipeline.core.policy import PolicyConfig, decide, strictest
from pipeline.core.route import Origin, Output, audit_record, dlq_record, route, subject_key
from pipeline.tables import Table
from schemas import codec
from schemas.consent import ConsentChange
from schemas.events import Event, Source

AGGREGATE_META_KEY: Final = b"\x00meta"
DECODED_CACHE_SIZE: Final = 16_384
"""Decoded consent states kept (about 2 KB each); a miss costs one ~10 µs decode."""
NOT_SUBJECT_KEY: Final = Rejected("schema_violation", "key: not_subject_key")
"""A record keyed by something else than its subject (SPEC §3) lands in the wrong
partition, away from that subject's consent and dedup state: it cannot be decided."""
HISTORY_PREFIX: Final = b"\x01"
log = logging.getLogger(__name__)
"""Consent-table keys of users' recent-change histories: prefix + user id."""


@dataclass(frozen=True, slots=True)
class InputRecord:
    """A consumed Kafka record, as the engine hands it over."""

    source: Source | None
    """`tag`, `sdk` or `widget` for raw topics; None for `consent.changes`."""
    origin: Origin
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


@dataclass
class BatchStats:
    """What a batch did, for the engine's metrics (label values from closed sets only)."""

    events_in: Counter[str] = field(default_factory=Counter)
    outputs: Counter[str] = field(default_factory=Counter)
    decisions: Counter[tuple[str, str]] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    dlq: Counter[tuple[str, str]] = field(default_factory=Counter)
    duplicates: Counter[str] = field(default_factory=Counter)
    processing_errors: Counter[str] = field(default_factory=Counter)
    event_ages: list[tuple[str, float]] = field(default_factory=list)
    consent_changes: int = 0
    revocation_latencies: list[float] = field(default_factory=list)
    aggregate_late: int = 0
    aggregate_suppressed_cells: int = 0


@dataclass(frozen=True)
class ProcessorConfig:
    """Everything the processor needs besides its tables."""

    policy: PolicyConfig
    pseudonymizer: Pseudonymizer
    limits: ParseLimits
    dedup_window_s: int = 48 * 3600
    aggregate_k: int = 10
    aggregate_grace_s: int = 600
    history_keep_s: int = 24 * 3600
    """How long the state before each consent change is kept to decide late events."""
    history_max_entries: int = 256


class Processor:
    """Decides records against the consent table and writes through the worker's tables."""

    def __init__(
        self, config: ProcessorConfig, consent: Table, dedup: Table, aggregates: Table
    ) -> None:
        self.config = config
        self.consent = consent
        self.dedup = dedup
        self.aggregates = aggregates
        self.aggregators: dict[int, HourlyAggregator] = {}
        self._decoded: dict[bytes, tuple[bytes, ConsentState, int]] = {}
        self._dirty_cells: dict[int, set[CellKey]] = {}

    # -- partitions ---------------------------------------------------------------

    def load_aggregator(self, partition: int) -> None:
        """Rebuild a partition's open aggregation cells from its (recovered) table store."""
        aggregator = HourlyAggregator(self.config.aggregate_k)
        store = self.aggregates.stores[partition]
        for key in store.scan():
            value = store.get(key)
            if value is None:
                continue
            if key == AGGREGATE_META_KEY:
                aggregator.closed_before, aggregator.late_events = codec.loads(value)
            else:
                count, value_sum = codec.loads(value)
                aggregator.restore(cell_key_from_list(codec.loads(key)), Cell(count, value_sum))
        self.aggregators[partition] = aggregator
        self._dirty_cells.pop(partition, None)

    def drop_partition(self, partition: int) -> None:
        self.aggregators.pop(partition, None)
        self._dirty_cells.pop(partition, None)

    # -- consent ------------------------------------------------------------------

    def apply_consent(self, record: InputRecord, now: float, stats: BatchStats) -> Output | None:
        """Fold a consent change into the table; the DLQ output if it cannot be applied."""
        try:
            change = parse_consent_change(record.value, now=now, key=record.key)
            if isinstance(change, Rejected):
                return self._reject(record, change, stats)
            if record.key != change.user_id.encode():
                # Under another key it sits in another partition's table: never applied.
                return self._reject(record, NOT_SUBJECT_KEY, stats)
            partition = record.origin.partition
            key = change.user_id.encode()
            state, _ = self._stored_state(partition, key)
            updated = apply_change(state, change)
            acknowledged = record.timestamp_ms
            self.consent.put(partition, key, b"%d:" % acknowledged + updated.to_bytes())
            self._remember(partition, key, state, acknowledged)
        except Exception as exc:  # an unexpected failure is an outcome, not a lost record
            log.warning("processing_error: %s at %s", type(exc).__name__, where(exc))
            return self._reject(record, processing_error_reject(exc, "consent"), stats)
        stats.consent_changes += 1
        if is_revocation(change):
            stats.revocation_latencies.append(max(0.0, now - record.timestamp_ms / 1000))
        return None

    def _remember(
        self, partition: int, key: bytes, before: ConsentState | None, acknowledged_ms: int
    ) -> None:
        history_key = HISTORY_PREFIX + key
        stored = self.consent.get(partition, history_key)
        history = remember(
            History() if stored is None else history_from_bytes(stored),
            before,
            acknowledged_ms,
            keep_ms=self.config.history_keep_s * 1000,
            max_entries=self.config.history_max_entries,
        )
        self.consent.put(partition, history_key, history_to_bytes(history))

    def _consent_for(
        self, partition: int, user_id: str, produced_ms: int
    ) -> tuple[ConsentState | None, list[ConsentState | None]]:
        """The user's current state, and the other states the user may have had when the
        event was produced (changes acknowledged since, or in the same millisecond)."""
        key = user_id.encode()
        current, last_acknowledged_ms = self._stored_state(partition, key)
        if produced_ms > last_acknowledged_ms:
            return current, []  # no change since the event was produced: the usual case
        history = self.consent.get(partition, HISTORY_PREFIX + key)
        if history is None:
            return current, []
        candidates = states_as_of(history_from_bytes(history), current, produced_ms)
        return current, [state for state in candidates if state is not current]

    def _stored_state(self, partition: int, key: bytes) -> tuple[ConsentState | None, int]:
        """A user's current state and when Kafka acknowledged its newest change (unix ms).

        Stored as `<acknowledged ms>:<state>`; decoded states are cached by their bytes.
        """
        stored = self.consent.get(partition, key)
        if stored is None:
            return None, -1
        cached = self._decoded.get(key)
        if cached is not None and cached[0] == stored:
            return cached[1], cached[2]
        if stored[:1] == b"{":
            # Written before states carried their acknowledgement time: treat that time
            # as unknown (older than any event), so history is consulted if present.
            acknowledged, state_bytes = -1, stored
        else:
            stamp, _, state_bytes = stored.partition(b":")
            acknowledged = int(stamp)
        state = ConsentState.from_bytes(state_bytes)
        if len(self._decoded) >= DECODED_CACHE_SIZE:
            self._decoded.clear()
        self._decoded[key] = (stored, state, acknowledged)
        return state, acknowledged

    # -- events -------------------------------------------------------------------

    def process_event(self, record: InputRecord, now: float, stats: BatchStats) -> list[Output]:
        """The outputs of one raw record: its routed records and its audit, or one DLQ record."""
        source = record.source
        assert source is not None
        stats.events_in[source] += 1
        try:
            event = parse_event(
                source, record.value, now=now, key=record.key, limits=self.config.limits
            )
            if isinstance(event, Rejected):
                return [self._reject(record, event, stats)]
            if record.key != subject_key(event).encode():
                # Consent and dedup state live with the subject key's partition.
                return [self._reject(record, NOT_SUBJECT_KEY, stats)]
            return self._decide(event, record, now, stats)
        except Exception as exc:  # an unexpected failure is an outcome, not a lost record
            log.warning("processing_error: %s at %s", type(exc).__name__, where(exc))
            stats.processing_errors[source] += 1
            return [self._reject(record, processing_error_reject(exc, "process"), stats)]

    def _decide(
        self, event: Event, record: InputRecord, now: float, stats: BatchStats
    ) -> list[Output]:
        partition = record.origin.partition
        duplicate = self._seen_before(event, record, now)
        consent = None
        earlier: list[ConsentState | None] = []
        if event.user_id is not None:
            consent, earlier = self._consent_for(partition, event.user_id, record.timestamp_ms)
        decision = decide(event, consent, self.config.policy)
        for state in earlier:
            # A later re-grant never reopens an event produced while consent was withdrawn.
            decision = strictest(decide(event, state, self.config.policy), decision)
        outputs = [] if duplicate else route(event, decision, consent, self.config.pseudonymizer)
        audit = audit_record(
            event,
            decision,
            pseudonymizer=self.config.pseudonymizer,
            destinations=[output.destination for output in outputs],
            duplicate=duplicate,
            origin=record.origin,
            received_at=record.timestamp_ms / 1000,
            decided_at=now,
        )
        outputs.append(audit)
        source = event.source
        if duplicate:
            stats.duplicates[source] += 1
        else:
            for purpose, outcome in decision.outcomes().items():
                stats.decisions[purpose, outcome] += 1
            stats.reasons.update(decision.reasons)
            self._aggregate(partition, outputs, stats)
        stats.event_ages.append((source, now - event.event_time))
        return outputs

    def _seen_before(self, event: Event, record: InputRecord, now: float) -> bool:
        """Whether another input already carried this (advertiser_id, event_id) in the window.

        The dedup entry remembers where the event was first read, so a record re-read
        after a crash is recognised as itself and processed again, not as a duplicate.
        """
        key = f"{event.advertiser_id or ''}\x1f{event.event_id}".encode()
        partition = record.origin.partition
        origin = record.origin
        entry = self.dedup.get(partition, key)
        if entry is not None:
            topic, first_partition, offset, seen_at = codec.loads(entry)
            if now - seen_at < self.config.dedup_window_s:
                return (topic, first_partition, offset) != (
                    origin.topic,
                    origin.partition,
                    origin.offset,
                )
        self.dedup.put(
            partition, key, codec.dumps([origin.topic, origin.partition, origin.offset, now])
        )
        return False

    def _aggregate(self, partition: int, outputs: list[Output], stats: BatchStats) -> None:
        aggregator = self.aggregators[partition]
        for output in outputs:
            if output.destination != "deidentified":
                continue
            cell_key = aggregator.add(output.record)
            if cell_key is None:
                stats.aggregate_late += 1
            else:
                self._dirty_cells.setdefault(partition, set()).add(cell_key)

    def _store_cell(self, partition: int, key: CellKey, cell: Cell | None) -> None:
        value = None if cell is None else codec.dumps([cell.count, cell.value_sum])
        self.aggregates.put(partition, codec.dumps(list(key)), value)

    def store_cells(self) -> None:
        """Stage the cells counted since the last call: once per cell and batch, not per event."""
        for partition, keys in self._dirty_cells.items():
            aggregator = self.aggregators.get(partition)
            if aggregator is not None:
                for key in keys:
                    self._store_cell(partition, key, aggregator.cell(key))
        self._dirty_cells.clear()

    def close_windows(self, now: float, stats: BatchStats) -> list[Output]:
        """Emit every hour that ended more than the grace period ago, on every partition."""
        self.store_cells()
        up_to = int(now - self.config.aggregate_grace_s) // HOUR * HOUR
        outputs: list[Output] = []
        for partition, aggregator in self.aggregators.items():
            if up_to <= aggregator.closed_before and not len(aggregator):
                continue
            closed = aggregator.close(up_to)
            if not closed.closed and up_to <= aggregator.closed_before:
                continue
            for key in closed.closed:
                self._store_cell(partition, key, None)
            meta = codec.dumps([aggregator.closed_before, aggregator.late_events])
            self.aggregates.put(partition, AGGREGATE_META_KEY, meta)
            stats.aggregate_suppressed_cells += closed.suppressed_cells
            outputs.extend(
                Output("aggregates", _cell_output_key(record), record) for record in closed.records
            )
        return outputs

    def sweep(self, now: float) -> int:
        """Delete dedup entries and consent histories past their windows; returns how many."""
        expired = 0
        for partition, store in self.dedup.stores.items():
            for key in store.scan():
                entry = store.get(key)
                if entry is not None and now - codec.loads(entry)[3] >= self.config.dedup_window_s:
                    self.dedup.put(partition, key, None)
                    expired += 1
        keep_from_ms = (now - self.config.history_keep_s) * 1000
        for partition, store in self.consent.stores.items():
            for key in store.scan():
                if not key.startswith(HISTORY_PREFIX):
                    continue
                entry = store.get(key)
                if entry is not None and all(
                    s.acknowledged_ms < keep_from_ms for s in history_from_bytes(entry).snapshots
                ):
                    self.consent.put(partition, key, None)
                    expired += 1
        return expired

    def _reject(self, record: InputRecord, rejected: Rejected, stats: BatchStats) -> Output:
        stats.dlq[record.source or "consent", rejected.reason] += 1
        return dlq_record(
            rejected,
            data=record.value,
            key=record.key,
            origin=record.origin,
            received_at=record.timestamp_ms / 1000,
        )


def is_revocation(change: ConsentChange) -> bool:
    """Whether a change withdraws anything: a setting turned off, deletion, a device opt-out."""
    if change.deleted:
        return True
    if change.settings is not None and any(
        getattr(change.settings, name) is False for name in change.settings.model_fields_set
    ):
        return True
    device = change.device
    return device is not None and (
        device.ads_opt_out is True
        or ("att_status" in device.model_fields_set and device.att_status != "authorized")
    )


def _cell_output_key(record: dict[str, object]) -> bytes:
    return f"{record['hour']}|{record['advertiser_id'] or ''}|{record['event_name']}".encode()


def where(exc: BaseException) -> str:
    """Where an exception was raised, as `file:line in function` frames: never its message,
    which may quote a value."""
    frames = traceback.extract_tb(exc.__traceback__)[-3:]
    return " <- ".join(f"{Path(f.filename).name}:{f.lineno} in {f.name}" for f in reversed(frames))


def wall_clock() -> float:
    """The current time, unix seconds."""
    return time.time()
