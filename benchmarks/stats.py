"""The arithmetic of the measurements: windows, rates, quantiles; no I/O.

Kept apart from `measure` (which samples processes and scrapes endpoints) so it can be
unit-tested without a broker or a contender.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from prometheus_client.parser import text_string_to_metric_families

from pipeline import catalogue


def metric_sum(text: str, family: str) -> float:
    """The sum of every sample of a counter family (without `_total`) in a scrape."""
    total = 0.0
    for metric in text_string_to_metric_families(text):
        if metric.name == family:
            total += sum(s.value for s in metric.samples if s.name == f"{family}_total")
    return total


TABLE_SOURCES: Final = frozenset({"consent", "identity"})
"""DLQ sources that are table inputs, not raw records."""


def completed_inputs(text: str) -> float:
    """Raw records a pipeline worker has finished, from one scrape: each ends in exactly one
    audit record or one DLQ record, written by the last stage it reached; records
    still between the stages are not counted."""
    total = 0.0
    for metric in text_string_to_metric_families(text):
        for sample in metric.samples:
            if not sample.name.endswith("_total"):
                continue
            audited = metric.name == "pipeline_events_out" and (
                sample.labels.get("topic") == catalogue.AUDIT.name
            )
            source = sample.labels.get("source")
            dead = metric.name == "pipeline_dlq" and source not in TABLE_SOURCES
            if audited or dead:
                total += sample.value
    return total


def written_per_input(texts: list[str]) -> dict[str, float] | None:
    """Records the pipeline workers wrote per raw record, from their scrapes: `outputs`
    (every output topic, audit and DLQ included) per record finished, `internal` (the hops
    between the stages) per record taken in."""
    completed = sum(completed_inputs(text) for text in texts)
    consumed = sum(metric_sum(text, "pipeline_events_in") for text in texts)
    if not completed or not consumed:
        return None
    outputs = sum(metric_sum(text, "pipeline_events_out") for text in texts)
    internal = sum(metric_sum(text, "pipeline_hop_records") for text in texts)
    return {"outputs": round(outputs / completed, 3), "internal": round(internal / consumed, 3)}


def histogram_buckets(text: str, family: str) -> list[tuple[float, float]]:
    """The cumulative `_bucket` samples (le, count) of a histogram family in a scrape."""
    out = []
    for metric in text_string_to_metric_families(text):
        if metric.name == family:
            for sample in metric.samples:
                if sample.name == f"{family}_bucket":
                    out.append((float(sample.labels["le"]), sample.value))
    return sorted(out)


def bucket_delta(
    after: Sequence[tuple[float, float]], before: Sequence[tuple[float, float]]
) -> list[tuple[float, float]]:
    """Cumulative buckets of what was observed between two scrapes."""
    earlier = dict(before)
    return [(le, count - earlier.get(le, 0.0)) for le, count in after]


def bucket_quantile(buckets: Sequence[tuple[float, float]], q: float) -> float | None:
    """Prometheus' `histogram_quantile`: linear interpolation inside the bucket."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return lower_bound
            if count == lower_count:
                return le
            return lower_bound + (le - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = le, count
    return None


@dataclass(frozen=True)
class Sample:
    """One look at a contender: its progress, and its CPU time and memory at that time."""

    t: float
    events: int
    consent: int
    cpu_s: float
    rss: int


@dataclass(frozen=True)
class Window:
    """The measured part of a throughput run."""

    events: int
    seconds: float
    cpu_s: float
    consent_ready_after_s: float
    """Seconds from the first sample to the consent table holding the pre-produced records."""
    complete: bool
    """Whether the whole input was consumed inside the window."""

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_s_per_million(self) -> float:
        return self.cpu_s / self.events * 1e6 if self.events else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "seconds": round(self.seconds, 3),
            "events_per_s": round(self.events_per_s, 1),
            "cpu_s": round(self.cpu_s, 3),
            "cpu_s_per_million": round(self.cpu_s_per_million, 2),
            "consent_ready_after_s": round(self.consent_ready_after_s, 2),
            "complete": self.complete,
        }


def window_start(samples: Sequence[Sample], consent_ready: int) -> int | None:
    """Index of the sample that opens the window: the last one before events flowed with
    the consent table loaded (`consent_ready` records folded)."""
    for i, sample in enumerate(samples):
        if sample.consent >= consent_ready:
            # Events consumed before the table was complete do not count: start here, or
            # just before the first event if that came later.
            j = i
            while j + 1 < len(samples) and samples[j + 1].events == samples[i].events:
                j += 1
            return j
    return None


def measure_window(
    samples: Sequence[Sample], consent_ready: int, total_events: int, window_s: float
) -> Window | None:
    """Events per second over at most `window_s` seconds once the consent table is loaded,
    ending early when the whole input has been consumed."""
    start = window_start(samples, consent_ready)
    if start is None:
        return None
    first = samples[start]
    end = start
    for i in range(start + 1, len(samples)):
        end = i
        if samples[i].events >= total_events or samples[i].t - first.t >= window_s:
            break
    last = samples[end]
    if end == start or last.events == first.events:
        return None
    return Window(
        events=last.events - first.events,
        seconds=last.t - first.t,
        cpu_s=last.cpu_s - first.cpu_s,
        consent_ready_after_s=first.t - samples[0].t,
        complete=last.events >= total_events,
    )


def percentile(values: Sequence[float], q: float) -> float | None:
    """The `q` quantile (0..1) of `values`, nearest rank."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]
