"""What the workers' `/metrics` say: label values from closed sets only, and few series.

Metrics keep a small, fixed label set; STYLE forbids ids, emails and IPs as label
values. `MetricsCheck` collects scrapes and checks every label value against the closed
set its label name allows, counts series per scrape, and bounds them by the product of
the closed sets: a number that does not depend on how many users there are.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, get_args

from prometheus_client.parser import text_string_to_metric_families

from pipeline import catalogue
from pipeline.core.reasons import Reason
from pipeline.runtime.canary import CHECKED
from pipeline.runtime.privacy import PAGES
from pipeline.runtime.privacy import Outcome as PageOutcome
from pipeline.settings import Settings
from schemas.identity import IdentityMatch
from schemas.outputs import DlqReason, MembershipChangeReason, MembershipOutcome
from tests.chaos.ledger import Invariant

NUMERIC_LABELS: Final = frozenset({"le", "quantile"})


def closed_label_sets(
    settings: Settings, partitions: int | None = None
) -> dict[str, frozenset[str]]:
    """Every label name a worker may use, with every value it may take."""
    entries = (*catalogue.INPUTS, *catalogue.OUTPUTS, *catalogue.INTERNAL)
    topics = [topic.name for topic in entries]
    return {
        "source": frozenset({*catalogue.RAW, "consent", "identity", "internal"}),
        "hop": frozenset(topic.name.rpartition(".")[2] for topic in catalogue.INTERNAL),
        "match": frozenset(get_args(IdentityMatch)),
        "purpose": frozenset({"personalization", "ads", "measurement", "partner_sharing"}),
        "outcome": frozenset(
            {
                "allow",
                "deny",
                "identified",
                "deidentified",
                *get_args(MembershipOutcome),
                *get_args(PageOutcome),
            }
        ),
        "page": frozenset(PAGES),
        "reason": frozenset(
            {r.value for r in Reason}
            | set(get_args(DlqReason))
            | set(get_args(MembershipChangeReason))
        ),
        "topic": frozenset(topics) | frozenset(settings.topic(t) for t in entries),
        "partition": frozenset(str(p) for p in range(partitions or settings.topic_partitions)),
        "location": frozenset(CHECKED | {"dlq.detail"}),
    }


@dataclass
class Scrape:
    """One `/metrics` text, parsed into series."""

    label: str
    series: set[tuple[str, tuple[tuple[str, str], ...]]]
    canary_hits: float
    revocation_buckets: dict[float, float]


@dataclass
class MetricsCheck:
    """Scrapes of one scenario's workers, and the checks over them."""

    settings: Settings
    scrapes: list[Scrape] = field(default_factory=list)
    texts: list[tuple[str, str]] = field(default_factory=list)
    unknown: Counter[str] = field(default_factory=Counter)
    """`label=value` pairs outside the closed sets (values of numeric labels excepted)."""
    partitions: int | None = None
    """The most partitions a topic has, when a scenario grows one past the settings'."""

    def add(self, label: str, text: str) -> Scrape:
        allowed = closed_label_sets(self.settings, self.partitions)
        series: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
        canary_hits = 0.0
        buckets: dict[float, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = tuple(sorted(sample.labels.items()))
                series.add((sample.name, labels))
                for name, value in labels:
                    if name in NUMERIC_LABELS:
                        if not _is_number(value):
                            self.unknown[f"{name}=<not a number>"] += 1
                    elif value not in allowed.get(name, frozenset()):
                        # Never the value itself: it may be the very identifier at fault.
                        self.unknown[f"{name}=<{len(value)} characters>"] += 1
                if sample.name == "pipeline_pii_canary_hits_total":
                    canary_hits += sample.value
                if sample.name == "pipeline_revocation_latency_seconds_bucket":
                    bound = float(sample.labels["le"])
                    buckets[bound] = buckets.get(bound, 0.0) + sample.value
        scrape = Scrape(label, series, canary_hits, buckets)
        self.scrapes.append(scrape)
        self.texts.append((label, text))
        return scrape

    def bound(self) -> int:
        """Most series a worker can export: per metric, the product of its labels' closed sets."""
        allowed = closed_label_sets(self.settings, self.partitions)
        label_names: dict[str, set[str]] = {}
        numeric: dict[str, set[tuple[str, str]]] = {}
        for scrape in self.scrapes:
            for name, labels in scrape.series:
                label_names.setdefault(name, set()).update(k for k, _ in labels)
                numeric.setdefault(name, set()).update(
                    (k, v) for k, v in labels if k in NUMERIC_LABELS
                )
        total = 0
        for name, names in label_names.items():
            sizes = [len(allowed.get(k, ())) for k in names if k not in NUMERIC_LABELS]
            buckets = max(1, len(numeric[name]))
            total += math.prod(sizes) * buckets if sizes else buckets
        return total

    def invariant(self) -> Invariant:
        """Label values from closed sets, series within the bound, the canary counter at 0."""
        largest = max((len(s.series) for s in self.scrapes), default=0)
        bound = self.bound()
        canary_hits = max((s.canary_hits for s in self.scrapes), default=0.0)
        counts = {
            "scrapes": len(self.scrapes),
            "series_largest_scrape": largest,
            "series_bound_from_closed_label_sets": bound,
            "label_values_outside_closed_sets": sum(self.unknown.values()),
            "worker_pii_canary_hits_total": int(canary_hits),
        }
        passed = bool(self.scrapes) and not self.unknown and largest <= bound and canary_hits == 0
        examples = [f"{pair} x{n}" for pair, n in self.unknown.most_common(5)]
        if not self.scrapes:
            examples.append("no /metrics scrape succeeded")
        return Invariant("metrics.closed_label_sets", passed, counts, examples)

    def revocation_p50_s(self) -> float | None:
        """The bucket bound holding the median revocation latency, over each worker's last scrape.

        A restarted worker starts its histogram afresh, so earlier incarnations are missed.
        """
        last: dict[str, Scrape] = {}
        for scrape in self.scrapes:
            last[scrape.label.rsplit(":", 1)[-1]] = scrape
        merged: dict[float, float] = {}
        for scrape in last.values():
            for bound, n in scrape.revocation_buckets.items():
                merged[bound] = merged.get(bound, 0.0) + n
        return median_bucket(merged)


def median_bucket(buckets: Mapping[float, float]) -> float | None:
    """The smallest bucket bound holding at least half the observations (cumulative buckets)."""
    if not buckets:
        return None
    total = buckets.get(math.inf, max(buckets.values()))
    if total <= 0:
        return None
    for bound in sorted(buckets):
        if buckets[bound] >= total / 2:
            return bound
    return None


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True
