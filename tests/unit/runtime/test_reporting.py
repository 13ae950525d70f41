"""A committed batch's counts become the metrics' samples."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from pipeline.runtime.metrics import Metrics
from pipeline.runtime.reporting import BatchStats, report


def test_each_decision_counts_once_per_purpose_and_once_per_reason() -> None:
    registry = CollectorRegistry()
    stats = BatchStats()
    stats.decided["allow", "deny", "deidentified", "deny", ("account.partner_ads_off",)] += 3
    stats.decided["deny", "deny", "deidentified", "deny", ()] += 1
    stats.decided[
        "deny", "deny", "deidentified", "deny", ("account.partner_ads_off", "subject.anonymous")
    ] += 2

    report(Metrics(registry), stats, 0.01, consent_entries=None)

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert sample("pipeline_decisions_total", purpose="personalization", outcome="allow") == 3
    assert sample("pipeline_decisions_total", purpose="personalization", outcome="deny") == 3
    assert sample("pipeline_decisions_total", purpose="ads", outcome="deny") == 6
    assert sample("pipeline_decisions_total", purpose="measurement", outcome="deidentified") == 6
    assert sample("pipeline_decisions_total", purpose="partner_sharing", outcome="deny") == 6
    assert sample("pipeline_decision_reasons_total", reason="account.partner_ads_off") == 5
    assert sample("pipeline_decision_reasons_total", reason="subject.anonymous") == 2
