"""The demo's view: reading a worker's metrics and showing them, live or as plain lines."""

from __future__ import annotations

import io
from collections import Counter

from prometheus_client import CollectorRegistry, generate_latest
from rich.console import Console

from pipeline import catalogue
from pipeline.ingest.endpoints.privacy import PrivacyMetrics
from pipeline.runtime.metrics import Metrics
from pipeline.sim.live import (
    Feed,
    Frame,
    final_report,
    parse_metrics,
    parse_saves,
    plain_line,
    render,
)
from pipeline.sim.stream import ProduceReport


def worker_metrics_text() -> str:
    metrics = Metrics(CollectorRegistry())
    metrics.events_in.labels("tag").inc(10)
    metrics.events_in.labels("sdk").inc(5)
    metrics.events_out.labels(catalogue.AUDIT.name).inc(20)
    metrics.events_out.labels("dlq").inc(1)
    metrics.events_out.labels(catalogue.ADS.name).inc(6)
    metrics.decisions.labels("ads", "allow").inc(6)
    metrics.decisions.labels("ads", "deny").inc(8)
    metrics.decisions.labels("measurement", "identified").inc(6)
    metrics.reasons.labels("browser.dnt").inc(3)
    metrics.reasons.labels("subject.anonymous").inc(4)
    metrics.dlq.labels("tag", "invalid_json").inc(1)
    metrics.duplicates.labels("sdk").inc(2)
    metrics.consent_changes.inc(7)
    metrics.consent_table_entries.set(5)
    metrics.consumer_lag.labels("demo." + catalogue.RAW_TAG.name, "0").set(3)
    metrics.consumer_lag.labels("demo." + catalogue.RAW_TAG.name, "1").set(4)
    metrics.identity_resolutions.labels("em").inc(9)
    metrics.identity_resolutions.labels("none").inc(4)
    metrics.identity_resolutions.labels("provided").inc(1)
    metrics.identity_conflicts.inc(2)
    metrics.identity_links.inc(30)
    metrics.events_in.labels("audience").inc(6)
    metrics.memberships.labels("added").inc(3)
    metrics.memberships.labels("denied").inc(2)
    metrics.memberships.labels("unmatched").inc(1)
    metrics.membership_changes.labels("consent.revoked").inc(2)
    return generate_latest(metrics.registry).decode()


def frame() -> Frame:
    worker = parse_metrics(worker_metrics_text(), "demo.")
    feed = Feed(produced=Counter(tag=10, sdk=5, consent=7), via_collector=Counter({"/v1/tag": 2}))
    return Frame(elapsed_s=12.0, feed=feed, worker=worker, previous=None, status="running")


def test_parse_metrics_reads_the_counters_the_view_shows() -> None:
    worker = parse_metrics(worker_metrics_text(), "demo.")

    assert worker.events_in == {"tag": 10, "sdk": 5, "audience": 6}
    assert worker.total_in == 21
    assert worker.events_out[catalogue.AUDIT.name] == 20
    assert worker.decisions[("ads", "deny")] == 8
    assert worker.reasons == {"browser.dnt": 3, "subject.anonymous": 4}
    assert worker.dlq == {("tag", "invalid_json"): 1}
    assert worker.duplicates == 2
    assert worker.consent_changes == 7
    assert worker.consent_users == 5
    assert worker.lag == {catalogue.RAW_TAG.name: 7}
    assert worker.resolutions == {"em": 9, "none": 4, "provided": 1}
    assert (worker.identity_conflicts, worker.identity_links) == (2, 30)
    assert worker.memberships == {"added": 3, "denied": 2, "unmatched": 1}
    assert worker.membership_changes == {"consent.revoked": 2}


def rendered(renderable: object, width: int) -> str:
    out = io.StringIO()
    Console(file=out, width=width, color_system=None).print(renderable)
    return out.getvalue()


def test_the_view_shows_inputs_outputs_reasons_dlq_and_lag_at_any_width() -> None:
    for width in (100, 200):
        text = rendered(render(frame(), width=width), width)

        for expected in (
            "inputs",
            "audit",
            "browser.dnt",
            "invalid_json",
            catalogue.RAW_TAG.name,
            "ads",
            "identity links",
            "a hashed email",
            "conflicts",
            "customer lists",
            "already_withdrawn",
            "consent.revoked",
        ):
            assert expected in text


def test_the_plain_line_says_the_same_in_one_line() -> None:
    line = plain_line(frame())

    assert "\n" not in line
    assert "produced tag=10 sdk=5 widget=0 audience=0" in line
    assert "consumed tag=10 sdk=5 widget=0 audience=6" in line
    assert "lists added=3 denied=2 consent.revoked=2 consent.granted=0" in line
    assert "dlq=1" in line
    assert "lag=7" in line
    assert "identity provided=1 session=0 click=0 em=9 ph=0 maid=0 none=4" in line
    no_worker = Frame(elapsed_s=1.0, feed=Feed(), worker=None, status="starting the worker")
    assert "no metrics yet" in plain_line(no_worker)


def test_the_final_report_checks_the_ledger_and_lists_what_was_generated() -> None:
    report = ProduceReport(
        seed=42, counts=Counter(event=15, **{"audience.add": 6}), raw_records=21, elapsed_s=3.0
    )

    text = rendered(final_report(frame(), report, width=120), 120)

    assert "21 raw records consumed -> 20 audit + 1 DLQ records" in text
    assert "every input accounted for" in text
    assert "seed 42" in text


def test_the_view_counts_the_privacy_settings_saved_as_the_collector_reports_them() -> None:
    registry = CollectorRegistry()
    metrics = PrivacyMetrics(registry)
    metrics.saves.inc(3)
    feed = Feed(privacy_saves=int(parse_saves(generate_latest(registry).decode())))
    shown = Frame(elapsed_s=5.0, feed=feed, worker=None, status="running")

    assert feed.privacy_saves == 3
    assert "saves=3" in plain_line(shown)
    console = Console(file=io.StringIO(), width=160, record=True)
    console.print(render(shown, width=160))
    assert "privacy settings saved 3" in console.export_text()
