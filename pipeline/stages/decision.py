"""The decision stage: the consent view, the policy, routing and aggregation.

Its table input is `consent.changes`, folded into the consent table (each user's state
and the states before their recent changes); its stream input is `by-subject`: events
deduplicated and resolved by the stages before, keyed by their subject so that the
decision runs where that subject's consent lives. For each it parses the raw event with
the core, sets the resolved `user_id`, looks up consent as of the raw record's production
and now, decides, routes and aggregates, and returns the outputs: exactly one audit
record (or, on an unexpected exception, one `processing_error` DLQ record) per raw
record, naming the raw record's origin. No Kafka and no metrics here: the engine reads,
calls this stage and writes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from pipeline import catalogue
from pipeline.catalogue import TableName
from pipeline.core import stored
from pipeline.core.aggregate import Cell, CellKey, HourlyAggregator
from pipeline.core.audience import (
    MembershipDecision,
    Memberships,
    allows_memberships,
    decide_membership,
)
from pipeline.core.consent import ConsentState, History, apply_change, remember, states_as_of
from pipeline.core.deidentify import HOUR, Pseudonymizer
from pipeline.core.parse import (
    ParseLimits,
    Rejected,
    decode_event,
    parse_audience_member,
    parse_consent_change,
)
from pipeline.core.parse import processing_error as processing_error_reject
from pipeline.core.policy import PolicyConfig, decide, strictest
from pipeline.core.route import (
    Output,
    audience_record,
    audit_record,
    membership_audit_record,
    route,
)
from pipeline.runtime.reporting import BatchStats
from pipeline.runtime.stage import Forward, InputRecord, Stage
from pipeline.settings import Settings
from pipeline.stages.errors import reject
from pipeline.stages.hops import (
    hop_of,
    note_latency,
    raised_on_the_way,
    raw_origin,
    reject_hop,
)
from pipeline.state.tables import Table
from schemas import fast
from schemas.audience import AudienceMember
from schemas.consent import ConsentChange
from schemas.events import Event, Source
from schemas.internal import Hop
from schemas.outputs import MembershipOutcome

log = logging.getLogger(__name__)

NOT_SUBJECT_KEY: Final = Rejected("schema_violation", "key: not_subject_key")
"""A consent change keyed by something else than its user lands in another
partition than that user's events: it cannot be applied."""


@dataclass(frozen=True)
class DecisionConfig:
    """Everything the decision stage needs besides its tables."""

    policy: PolicyConfig
    pseudonymizer: Pseudonymizer
    limits: ParseLimits
    aggregate_k: int = 10
    aggregate_grace_s: int = 600
    history_keep_s: int = 24 * 3600
    """How long the state before each consent change is kept to decide late events."""
    history_max_entries: int = 256


class DecisionStage(Stage):
    """Decides raw records against the consent table and writes through its tables."""

    name = "decide"
    table_inputs = (catalogue.CONSENT_CHANGES,)
    stream_inputs = (catalogue.BY_SUBJECT,)
    tables: tuple[TableName, ...] = ("consent", "aggregates", "memberships")
    outputs = catalogue.OUTPUTS
    partitioned_by = catalogue.CONSENT_CHANGES

    def __init__(self, config: DecisionConfig) -> None:
        self.config = config
        self.aggregators: dict[int, HourlyAggregator] = {}
        self._dirty_cells: dict[int, set[CellKey]] = {}

    def bind(self, tables: Mapping[TableName, Table]) -> None:
        self.consent = tables["consent"]
        self.aggregates = tables["aggregates"]
        self.memberships = tables["memberships"]

    def fold(self, record: InputRecord, now: float, stats: BatchStats) -> list[Output]:
        return self.apply_consent(record, now, stats)

    def process(self, record: InputRecord, now: float, stats: BatchStats) -> list[Output | Forward]:
        return list(self.process_event(record, now, stats))

    def raised(self, record: InputRecord, exc: Exception, stats: BatchStats) -> Output:
        if record.topic in self.table_inputs:
            return reject(record, processing_error_reject(exc, "consent"), stats, "consent")
        return raised_on_the_way(record, exc, stats, "decide")

    def tick(self, now: float, stats: BatchStats, *, sweep: bool) -> list[Output]:
        outputs = self.close_windows(now, stats)
        if sweep:
            self.sweep(now)
        return outputs

    def due(self, now: float) -> bool:
        up_to = int(now - self.config.aggregate_grace_s) // HOUR * HOUR
        return any(up_to > aggregator.closed_before for aggregator in self.aggregators.values())

    def assigned(self, partitions: set[int], partition_count: int) -> None:
        for partition in partitions:
            self.load_aggregator(partition)

    def revoked(self, partitions: set[int]) -> None:
        for partition in partitions:
            self.drop_partition(partition)

    def aborted(self, partitions: set[int]) -> None:
        for partition in partitions:
            self.load_aggregator(partition)

    def table_size(self) -> int | None:
        return self.consent.approximate_len()

    # -- partitions ---------------------------------------------------------------

    def load_aggregator(self, partition: int) -> None:
        """Rebuild a partition's open aggregation cells from its (recovered) table store."""
        aggregator = HourlyAggregator(self.config.aggregate_k)
        store = self.aggregates.stores[partition]
        for key in store.scan():
            value = store.get(key)
            if value is None:
                continue
            if key == stored.AGGREGATE_META_KEY:
                aggregator.closed_before, aggregator.late_events = stored.decode_aggregate_meta(
                    value
                )
            else:
                aggregator.restore(stored.decode_cell_key(key), stored.decode_cell(value))
        self.aggregators[partition] = aggregator
        self._dirty_cells.pop(partition, None)

    def drop_partition(self, partition: int) -> None:
        self.aggregators.pop(partition, None)
        self._dirty_cells.pop(partition, None)

    # -- consent ------------------------------------------------------------------

    def apply_consent(self, record: InputRecord, now: float, stats: BatchStats) -> list[Output]:
        """Fold a consent change into the table, and make the user's customer-list
        memberships follow it; the DLQ output if it cannot be applied."""
        change = parse_consent_change(record.value, now=now, key=record.key)
        if isinstance(change, Rejected):
            return [reject(record, change, stats, "consent")]
        if record.key != change.user_id.encode():
            # Under another key it sits in another partition's table: never applied.
            return [reject(record, NOT_SUBJECT_KEY, stats, "consent")]
        partition = record.origin.partition
        key = change.user_id.encode()
        state, _ = self._stored_state(partition, key)
        updated = apply_change(state, change)
        acknowledged = record.timestamp_ms
        self.consent.put(partition, key, stored.encode_consent_row(updated, acknowledged))
        self._remember(partition, key, state, acknowledged)
        outputs = self._follow_consent(partition, updated, stats)
        stats.consent_changes += 1
        if is_revocation(change):
            stats.revocation_latencies.append(max(0.0, now - record.timestamp_ms / 1000))
        return outputs

    def _follow_consent(
        self, partition: int, consent: ConsentState, stats: BatchStats
    ) -> list[Output]:
        """Withdraw or restore the user's memberships, in the consent change's transaction."""
        key = consent.user_id.encode()
        value = self.memberships.get(partition, key)
        if value is None:
            return []
        memberships = stored.decode_memberships(value)
        allowed = allows_memberships(consent)
        changes = list(memberships.follow_consent(allowed, deleted=consent.deleted))
        if not changes and not consent.deleted:
            return []
        self._store_memberships(partition, key, memberships)
        decision = MembershipDecision(
            allowed, (), self.config.policy.policy_version, consent.version
        )
        for change in changes:
            if change.reason is not None:
                stats.membership_changes[change.reason] += 1
        return [audience_record(change, consent.user_id, decision) for change in changes]

    def _store_memberships(self, partition: int, key: bytes, memberships: Memberships) -> None:
        value = stored.encode_memberships(memberships) if len(memberships) else None
        self.memberships.put(partition, key, value)

    def _remember(
        self, partition: int, key: bytes, before: ConsentState | None, acknowledged_ms: int
    ) -> None:
        history_key = stored.history_key(key)
        previous = self.consent.get(partition, history_key)
        history = remember(
            History() if previous is None else stored.decode_history(previous),
            before,
            acknowledged_ms,
            keep_ms=self.config.history_keep_s * 1000,
            max_entries=self.config.history_max_entries,
        )
        self.consent.put(partition, history_key, stored.encode_history(history))

    def _consent_for(
        self, partition: int, user_id: str, produced_ms: int
    ) -> tuple[ConsentState | None, list[ConsentState | None]]:
        """The user's current state, and the other states the user may have had when the
        event was produced (changes acknowledged since, or in the same millisecond)."""
        key = user_id.encode()
        current, last_acknowledged_ms = self._stored_state(partition, key)
        if produced_ms > last_acknowledged_ms:
            return current, []  # no change since the event was produced: the usual case
        history = self.consent.get(partition, stored.history_key(key))
        if history is None:
            return current, []
        candidates = states_as_of(stored.decode_history(history), current, produced_ms)
        return current, [state for state in candidates if state is not current]

    def _stored_state(self, partition: int, key: bytes) -> tuple[ConsentState | None, int]:
        """A user's current state and when Kafka acknowledged its newest change (unix ms),
        decoded from its row (a few µs: nothing is cached)."""
        value = self.consent.get(partition, key)
        if value is None:
            return None, -1
        return stored.decode_consent_row(value)

    # -- events -------------------------------------------------------------------

    def process_event(self, record: InputRecord, now: float, stats: BatchStats) -> list[Output]:
        """The outputs of one resolved event: its routed records and its audit (or a DLQ)."""
        try:
            hop = hop_of(record)
        except Exception as exc:
            log.warning("unreadable hop header: %s", type(exc).__name__)
            return [reject(record, processing_error_reject(exc, "decide"), stats, "internal")]
        if hop.source == "audience":
            return self.process_member(record, hop, now, stats)
        note_latency(record, now, stats)
        event = self._event_of(record, hop.source, hop.produced_ms)
        if isinstance(event, Rejected):
            return [reject_hop(record, hop, event, stats)]
        event = fast.replace(event, user_id=hop.user_id)
        return self._decide(event, hop, record.origin.partition, now, stats)

    def _event_of(self, record: InputRecord, source: Source, produced_ms: int) -> Event | Rejected:
        """The event intake decoded, handed over in process; else decoded again. Its bounds
        were checked at intake, when the raw record was read: re-checked against that
        moment, they give the same answer."""
        parsed = record.parsed
        if parsed is not None and not isinstance(parsed, AudienceMember):
            return parsed
        return decode_event(source, record.value, now=produced_ms / 1000, limits=self.config.limits)

    def _member_of(self, record: InputRecord) -> AudienceMember | Rejected:
        """The customer-list record intake validated, handed over in process; else again."""
        if isinstance(record.parsed, AudienceMember):
            return record.parsed
        return parse_audience_member(record.value, limits=self.config.limits)

    def _decide(
        self, event: Event, hop: Hop, partition: int, now: float, stats: BatchStats
    ) -> list[Output]:
        duplicate = hop.duplicate
        consent = None
        earlier: list[ConsentState | None] = []
        if event.user_id is not None:
            consent, earlier = self._consent_for(partition, event.user_id, hop.produced_ms)
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
            origin=raw_origin(hop),
            received_at=hop.produced_ms / 1000,
            decided_at=now,
            identity=(hop.match or "none", hop.conflict),
        )
        outputs.append(audit)
        source = event.source
        if not duplicate:
            stats.decided[decision.tally()] += 1
            self._aggregate(partition, outputs, stats)
        stats.event_ages.append((source, now - event.event_time))
        return outputs

    def process_member(
        self, record: InputRecord, hop: Hop, now: float, stats: BatchStats
    ) -> list[Output]:
        """A customer-list record: the membership its consent allows, and its audit."""
        note_latency(record, now, stats)
        member = self._member_of(record)
        if isinstance(member, Rejected):
            return [reject_hop(record, hop, member, stats)]
        partition = record.origin.partition
        user = hop.user_id
        consent = None
        if user is not None:
            consent, _ = self._stored_state(partition, user.encode())
        # Memberships are state, not uses of a moment: the consent of now governs them,
        # and every later change moves them (`_follow_consent`).
        decision = decide_membership(member, user, consent, self.config.policy)
        outputs: list[Output] = []
        if hop.duplicate:
            outcome: MembershipOutcome = "duplicate"
        elif user is None:
            outcome = "unmatched"
        else:
            key = user.encode()
            value = self.memberships.get(partition, key)
            memberships = Memberships() if value is None else stored.decode_memberships(value)
            outcome, change = memberships.apply(member, decision)
            self._store_memberships(partition, key, memberships)
            if change is not None:
                outputs.append(audience_record(change, user, decision))
        stats.memberships[outcome] += 1
        outputs.append(
            membership_audit_record(
                member,
                decision,
                subject=user or hop.anonymous_subject,
                outcome=outcome,
                emitted=bool(outputs),
                pseudonymizer=self.config.pseudonymizer,
                duplicate=hop.duplicate,
                identity=(hop.match or "none", hop.conflict),
                origin=raw_origin(hop),
                received_at=hop.produced_ms / 1000,
                decided_at=now,
            )
        )
        return outputs

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
        value = None if cell is None else stored.encode_cell(cell)
        self.aggregates.put(partition, stored.encode_cell_key(key), value)

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
            closing_before = max(aggregator.closed_before, up_to)
            oldest = aggregator.oldest_open_hour
            if oldest is None or oldest >= closing_before:  # nothing to close: most batches
                aggregator.closed_before = closing_before
                continue
            closed = aggregator.close(closing_before)
            for key in closed.closed:
                self._store_cell(partition, key, None)
            meta = stored.encode_aggregate_meta(aggregator.closed_before, aggregator.late_events)
            self.aggregates.put(partition, stored.AGGREGATE_META_KEY, meta)
            stats.aggregate_suppressed_cells += closed.suppressed_cells
            outputs.extend(
                Output("aggregates", _cell_output_key(record), record) for record in closed.records
            )
        return outputs

    def sweep(self, now: float) -> int:
        """Delete consent histories past their window; returns how many."""
        expired = 0
        keep_from_ms = (now - self.config.history_keep_s) * 1000
        for partition, store in self.consent.stores.items():
            for key in store.scan():
                if not stored.is_history_key(key):
                    continue
                entry = store.get(key)
                if entry is not None and all(
                    s.acknowledged_ms < keep_from_ms for s in stored.decode_history(entry).snapshots
                ):
                    self.consent.put(partition, key, None)
                    expired += 1
        return expired


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


def decision_stage(settings: Settings) -> DecisionStage:
    """The decision stage as `settings` configure it.

    Raises:
        ConfigError: the HMAC key or the policy settings are missing or invalid.
    """
    return DecisionStage(
        DecisionConfig(
            policy=settings.policy(),
            pseudonymizer=Pseudonymizer(settings.require_hmac_key(), settings.hmac_key_id),
            limits=ParseLimits(max_bytes=settings.max_event_bytes, require_key=False),
            aggregate_k=settings.aggregate_k,
            aggregate_grace_s=settings.aggregate_grace_seconds,
        )
    )
