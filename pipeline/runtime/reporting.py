"""What a batch did, counted while it runs and turned into metrics once it committed.

Stages count into a `BatchStats` (plain counters, label values from closed sets only);
the engine hands it to `report` after the batch's transaction committed, so an aborted
batch, read and processed again, is never counted twice.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client import Histogram

from pipeline.catalogue import BY_DESTINATION
from pipeline.core.policy import Tally, untally
from pipeline.runtime.metrics import Metrics


@dataclass
class BatchStats:
    """What a batch did, for the metrics (label values from closed sets only)."""

    events_in: Counter[str] = field(default_factory=Counter)
    outputs: Counter[str] = field(default_factory=Counter)
    decided: Counter[Tally] = field(default_factory=Counter)
    """Decisions by `Decision.tally`: one count per event, spread over the purposes' and
    reasons' metrics at `report`."""
    dlq: Counter[tuple[str, str]] = field(default_factory=Counter)
    duplicates: Counter[str] = field(default_factory=Counter)
    processing_errors: Counter[str] = field(default_factory=Counter)
    event_ages: list[tuple[str, float]] = field(default_factory=list)
    consent_changes: int = 0
    revocation_latencies: list[float] = field(default_factory=list)
    aggregate_late: int = 0
    aggregate_suppressed_cells: int = 0
    hops: Counter[str] = field(default_factory=Counter)
    """Records written to an internal topic, by hop."""
    hops_in_process: Counter[str] = field(default_factory=Counter)
    """Records re-keyed to a partition of this worker, processed without their topic."""
    hop_latencies: list[tuple[str, float]] = field(default_factory=list)
    """(hop, seconds from the previous stage's write to this stage reading the record), for
    records read from an internal topic (one handed over in process took none)."""
    resolutions: Counter[str] = field(default_factory=Counter)
    """Resolved events by identity match (`provided`, `em`, ..., `none`)."""
    unresolved: Counter[str] = field(default_factory=Counter)
    """Events no key resolved, by source."""
    identity_conflicts: int = 0
    untrusted_user_ids: Counter[str] = field(default_factory=Counter)
    """Raw events naming a user_id without a valid trust signature, by source."""
    links_applied: int = 0
    wrong_partition: Counter[str] = field(default_factory=Counter)
    """Table-input records on another partition than murmur2 of their key, by topic."""
    memberships: Counter[str] = field(default_factory=Counter)
    """Customer-list records by membership outcome (`added`, `denied`, ...)."""
    membership_changes: Counter[str] = field(default_factory=Counter)
    """Memberships withdrawn or restored by consent changes, by reason."""


def report(
    metrics: Metrics,
    stats: BatchStats,
    seconds: float,
    *,
    consent_entries: int | None,
) -> None:
    """Add a committed batch's counts to `metrics`; `seconds` it took from consumption.

    Args:
        consent_entries: the consent table's size, to refresh its gauge when consent changed.
    """
    m = metrics
    for source, n in stats.events_in.items():
        m.events_in.labels(source).inc(n)
    for destination, n in stats.outputs.items():
        m.events_out.labels(BY_DESTINATION[destination].name).inc(n)  # type: ignore[index]
    decisions: Counter[tuple[str, str]] = Counter()
    reasons: Counter[str] = Counter()
    for tally, n in stats.decided.items():
        pairs, why = untally(tally)
        for pair in pairs:
            decisions[pair] += n
        for reason in why:
            reasons[reason] += n
    for (purpose, outcome), n in decisions.items():
        m.decisions.labels(purpose, outcome).inc(n)
    for reason, n in reasons.items():
        m.reasons.labels(reason).inc(n)
    for (source, reason), n in stats.dlq.items():
        m.dlq.labels(source, reason).inc(n)
    for source, n in stats.duplicates.items():
        m.duplicates.labels(source).inc(n)
    for source, n in stats.processing_errors.items():
        m.processing_errors.labels(source).inc(n)
    _observe(m.event_age_seconds, stats.event_ages)
    for latency in stats.revocation_latencies:
        m.revocation_latency_seconds.observe(latency + seconds)
    if stats.consent_changes:
        m.consent_changes.inc(stats.consent_changes)
        if consent_entries is not None:
            m.consent_table_entries.set(consent_entries)
    if sum(stats.events_in.values()):
        for source in stats.events_in:
            m.processing_seconds.labels(source).observe(seconds)
    for hop, n in stats.hops.items():
        m.hop_records.labels(hop).inc(n)
    for hop, n in stats.hops_in_process.items():
        m.hops_in_process.labels(hop).inc(n)
    _observe(m.hop_latency_seconds, stats.hop_latencies)
    for match, n in stats.resolutions.items():
        m.identity_resolutions.labels(match).inc(n)
    for source, n in stats.unresolved.items():
        m.identity_unresolved.labels(source).inc(n)
    if stats.identity_conflicts:
        m.identity_conflicts.inc(stats.identity_conflicts)
    for source, n in stats.untrusted_user_ids.items():
        m.untrusted_user_ids.labels(source).inc(n)
    if stats.links_applied:
        m.identity_links.inc(stats.links_applied)
    for topic, n in stats.wrong_partition.items():
        m.wrong_partition.labels(topic).inc(n)
    for outcome, n in stats.memberships.items():
        m.memberships.labels(outcome).inc(n)
    for reason, n in stats.membership_changes.items():
        m.membership_changes.labels(reason).inc(n)


def _observe(histogram: Histogram, samples: Iterable[tuple[str, float]]) -> None:
    """Observe each (label, value) in the child of its label, looked up once per label."""
    children: dict[str, Histogram] = {}
    for label, value in samples:
        child = children.get(label)
        if child is None:
            child = children[label] = histogram.labels(label)
        child.observe(value)
