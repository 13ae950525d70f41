"""Prometheus metrics of a worker: one object, given its registry, with a small fixed label set.

Label values come from closed sets only (source, topic, purpose, outcome, reason code,
partition number); never a user id, event id, email or IP.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
AGE_BUCKETS = (0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 6 * 3600.0, 86400.0)


class Metrics:
    """Every metric a worker exports."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.events_in = Counter(
            "pipeline_events_in_total", "Raw input records consumed.", ["source"], registry=registry
        )
        self.events_out = Counter(
            "pipeline_events_out_total",
            "Records written per output topic.",
            ["topic"],
            registry=registry,
        )
        self.decisions = Counter(
            "pipeline_decisions_total",
            "Decided events by purpose and outcome.",
            ["purpose", "outcome"],
            registry=registry,
        )
        self.reasons = Counter(
            "pipeline_decision_reasons_total",
            "Policy rules that applied, by reason code.",
            ["reason"],
            registry=registry,
        )
        self.dlq = Counter(
            "pipeline_dlq_total",
            "Inputs sent to the DLQ, by source and reason.",
            ["source", "reason"],
            registry=registry,
        )
        self.worker_faults = Counter(
            "pipeline_worker_faults_total",
            "Times the worker stood down for a fault of its own (state it cannot open, read "
            "or write, a lock, a full disk, records raising in numbers): its batch aborted, "
            "nothing dead-lettered, its input stopped until it recovered.",
            registry=registry,
        )
        self.fenced_commits = Counter(
            "pipeline_fenced_commits_total",
            "Batches aborted because the consumer group refused their offset commit: the "
            "worker had been dropped from the group (a zombie) or the group had rebalanced.",
            registry=registry,
        )
        self.duplicates = Counter(
            "pipeline_duplicates_total",
            "Inputs audited as duplicates (not emitted again).",
            ["source"],
            registry=registry,
        )
        self.processing_seconds = Histogram(
            "pipeline_processing_seconds",
            "Time from a record's consumption to its outputs being handed to the producer.",
            ["source"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.event_age_seconds = Histogram(
            "pipeline_event_age_seconds",
            "Age of an event (now - event_time) when decided.",
            ["source"],
            buckets=AGE_BUCKETS,
            registry=registry,
        )
        self.consent_changes = Counter(
            "pipeline_consent_changes_total",
            "Consent changes applied to the consent view.",
            registry=registry,
        )
        self.consent_table_entries = Gauge(
            "pipeline_consent_table_entries",
            "Users in this worker's consent view.",
            registry=registry,
        )
        self.revocation_latency_seconds = Histogram(
            "pipeline_revocation_latency_seconds",
            "Time from a revocation's acknowledgement by Kafka to it governing decisions.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.barrier_wait_seconds = Histogram(
            "pipeline_barrier_wait_seconds",
            "Time a batch waited for its table inputs (consent changes) to catch up.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.barrier_deferrals = Counter(
            "pipeline_barrier_deferrals_total",
            "Batches whose stream records waited for a later batch: their table inputs were "
            "further behind than one barrier folds.",
            registry=registry,
        )
        self.consumer_lag = Gauge(
            "pipeline_consumer_lag_messages",
            "Records behind the end of each input partition.",
            ["topic", "partition"],
            registry=registry,
        )
        self.processing_errors = Counter(
            "pipeline_processing_errors_total",
            "Unexpected exceptions turned into processing_error DLQ records.",
            ["source"],
            registry=registry,
        )
        self.hop_records = Counter(
            "pipeline_hop_records_total",
            "Records written to the internal topics between the stages, by hop.",
            ["hop"],
            registry=registry,
        )
        self.hops_in_process = Counter(
            "pipeline_hops_in_process_total",
            "Records re-keyed to a partition of the same worker and processed in the "
            "transaction that made them, not written to the internal topic, by hop.",
            ["hop"],
            registry=registry,
        )
        self.hop_latency_seconds = Histogram(
            "pipeline_hop_latency_seconds",
            "Time from a stage writing a record to its internal topic to the next stage "
            "reading it, by hop (hops taken in process take none and are not observed).",
            ["hop"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.identity_resolutions = Counter(
            "pipeline_identity_resolutions_total",
            "Events whose subject was found, by match kind (none: not found).",
            ["match"],
            registry=registry,
        )
        self.identity_unresolved = Counter(
            "pipeline_identity_unresolved_total",
            "Events no match key resolved to a user, by source.",
            ["source"],
            registry=registry,
        )
        self.identity_conflicts = Counter(
            "pipeline_identity_conflicts_total",
            "Events with two match keys linked to different users (the first key won).",
            registry=registry,
        )
        self.identity_links = Counter(
            "pipeline_identity_links_total",
            "Links and unlinks folded into the identity table.",
            registry=registry,
        )
        self.untrusted_user_ids = Counter(
            "pipeline_untrusted_user_ids_total",
            "Raw events naming a user_id without a trusted producer's signature (ignored).",
            ["source"],
            registry=registry,
        )
        self.wrong_partition = Counter(
            "pipeline_wrong_partition_total",
            "Table-input records on another partition than murmur2 of their key (DLQ).",
            ["topic"],
            registry=registry,
        )
        self.memberships = Counter(
            "pipeline_memberships_total",
            "Customer-list records by membership outcome (added, denied, unmatched, ...).",
            ["outcome"],
            registry=registry,
        )
        self.membership_changes = Counter(
            "pipeline_membership_changes_total",
            "Memberships withdrawn (consent.revoked) or restored (consent.granted) by consent.",
            ["reason"],
            registry=registry,
        )
        self.pii_canary_hits = Counter(
            "pipeline_pii_canary_hits_total",
            "Records written with a seeded PII canary where no identifier may appear.",
            ["location"],
            registry=registry,
        )
