"""The benchmark's arithmetic: throughput windows, histogram quantiles, targets and ratios."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pytest

from benchmarks import report
from benchmarks.core import core_phase
from benchmarks.stats import (
    Sample,
    bucket_delta,
    bucket_quantile,
    completed_inputs,
    measure_window,
    percentile,
    written_per_input,
)
from pipeline import catalogue


def samples(*rows: tuple[float, int, int]) -> list[Sample]:
    """Samples from (t, events, consent) rows; CPU time grows 0.5 s per second."""
    return [Sample(t, events, consent, cpu_s=t / 2, rss=100) for t, events, consent in rows]


def test_window_opens_once_the_consent_table_is_loaded() -> None:
    rows = samples((0, 0, 0), (1, 100, 500), (2, 300, 1000), (3, 700, 1000), (4, 1100, 1000))
    window = measure_window(rows, consent_ready=1000, total_events=10_000, window_s=60)
    assert window is not None
    assert window.events == 800  # the 300 events decided on a half-loaded table do not count
    assert window.seconds == 2
    assert window.events_per_s == 400
    assert window.cpu_s_per_million == pytest.approx(1.0 / 800 * 1e6)
    assert window.consent_ready_after_s == 2
    assert not window.complete


def test_window_opens_just_before_the_first_event_when_that_comes_later() -> None:
    rows = samples((0, 0, 0), (1, 0, 0), (2, 0, 0), (3, 500, 0), (4, 1000, 0))
    window = measure_window(rows, consent_ready=0, total_events=1000, window_s=60)
    assert window is not None
    assert (window.events, window.seconds) == (1000, 2)  # from t=2, not the start-up at t=0
    assert window.complete


def test_window_closes_after_window_seconds() -> None:
    rows = samples(*((t, 100 * t, 10) for t in range(0, 30)))
    window = measure_window(rows, consent_ready=10, total_events=10**9, window_s=5)
    assert window is not None
    assert (window.seconds, window.events) == (5, 500)


def test_no_window_without_a_loaded_table_or_without_events() -> None:
    assert measure_window(samples((0, 0, 0), (1, 50, 10)), 100, 1000, 60) is None
    assert measure_window(samples((0, 0, 100), (1, 0, 100)), 100, 1000, 60) is None


def test_bucket_quantile_interpolates_inside_buckets_like_prometheus() -> None:
    buckets = [(0.1, 10.0), (0.5, 30.0), (1.0, 40.0), (math.inf, 40.0)]
    assert bucket_quantile(buckets, 0.25) == pytest.approx(0.1)
    assert bucket_quantile(buckets, 0.5) == pytest.approx(0.1 + 0.4 * 10 / 20)
    assert bucket_quantile(buckets, 1.0) == pytest.approx(1.0)
    assert bucket_quantile([(0.1, 0.0), (math.inf, 0.0)], 0.5) is None
    assert bucket_quantile([(0.1, 0.0), (math.inf, 4.0)], 0.5) == pytest.approx(0.1)


def test_bucket_delta_keeps_what_was_observed_between_scrapes() -> None:
    before = [(0.1, 3.0), (math.inf, 5.0)]
    after = [(0.1, 4.0), (math.inf, 9.0)]
    assert bucket_delta(after, before) == [(0.1, 1.0), (math.inf, 4.0)]


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.99) == 99
    assert percentile([], 0.5) is None


def results(
    rates: Mapping[str, float],
    latency_ms: tuple[float, float],
    rss_mb: float,
    *,
    cpu: tuple[float, float] = (100.0, 50.0),
    revocation_ms: float = 100.0,
) -> dict[str, Any]:
    contenders: dict[str, dict[str, Any]] = {
        name: {"events_per_s": rate} for name, rate in rates.items()
    }
    contenders["pipeline"]["latency"] = {"p50_ms": latency_ms[0], "p99_ms": latency_ms[1]}
    contenders["pipeline"]["cpu_s_per_million"] = cpu[0]
    if "ceiling_fair" in contenders:
        contenders["ceiling_fair"]["cpu_s_per_million"] = cpu[1]
    out: dict[str, Any] = {
        "contenders": contenders,
        "revocation_latency": {"p99_ms": revocation_ms},
        "scale": {
            "initial_load": {
                "users": 1_000_000,
                "links": 3_000_000,
                "workers": 2,
                "peak_rss_bytes": 5_000 * report.MB,
            },
            "restarts": [
                {"store": "rocksdb", "peak_rss_bytes": (rss_mb - 50) * report.MB},
                {"store": "memory", "peak_rss_bytes": 10_000 * report.MB},
            ],
            "throughput": {"peak_rss_bytes": rss_mb * report.MB},
        },
    }
    out["ratios"] = report.ratios(contenders)
    return out


def test_targets_are_judged_on_the_same_runs_ratios() -> None:
    rates = {"ceiling_fair": 100, "quix": 20, "faust_batched": 20, "pipeline": 60}
    met = results(rates, (40, 140), 400, cpu=(100, 50), revocation_ms=200)
    assert met["ratios"]["pipeline/ceiling_fair"] == 0.6
    assert [row["met"] for row in report.targets(met)] == [True] * 8
    rates = {"ceiling_fair": 100, "quix": 20, "faust_batched": 20, "pipeline": 49}
    missed = results(rates, (60, 160), 500, cpu=(101, 50), revocation_ms=250)
    assert [row["met"] for row in report.targets(missed)] == [
        False,
        False,
        False,
        False,
        False,
        False,
        False,
        False,
    ]


def test_every_contender_reports_its_five_numbers() -> None:
    contender = {
        "events_per_s": 10.0,
        "cpu_s_per_million": 123.456,
        "peak_rss_bytes": 200 * report.MB,
        "latency": {"p50_ms": 12.34, "p99_ms": 99.99},
    }
    assert report.summary(contender) == {
        "events_per_s": 10.0,
        "cpu_us_per_event": 123.5,
        "p50_ms": 12.3,
        "p99_ms": 100.0,
        "rss_mb": 200.0,
    }


def test_the_rss_target_is_one_rocksdb_worker_holding_all_of_the_scale_state() -> None:
    """Not the two workers' fold, nor the in-memory store: the RocksDB worker's restarts
    and its run deciding events."""
    rows = report.targets(results({"ceiling_fair": 1, "pipeline": 1}, (1, 1), 400))
    assert rows[-1]["value"] == "400 MB"
    assert rows[1]["met"] is None  # Quix not measured: neither met nor missed


AUDIT, PERSONALIZATION, DLQ = (
    catalogue.AUDIT.name,
    catalogue.PERSONALIZATION.name,
    catalogue.DLQ.name,
)
SCRAPE = f"""\
# TYPE pipeline_events_in_total counter
pipeline_events_in_total{{source="tag"}} 900.0
pipeline_events_in_total{{source="sdk"}} 100.0
# TYPE pipeline_events_out_total counter
pipeline_events_out_total{{topic="{AUDIT}"}} 390.0
pipeline_events_out_total{{topic="{PERSONALIZATION}"}} 300.0
pipeline_events_out_total{{topic="{DLQ}"}} 12.0
# TYPE pipeline_dlq_total counter
pipeline_dlq_total{{source="tag",reason="invalid_json"}} 10.0
pipeline_dlq_total{{source="consent",reason="wrong_partition"}} 2.0
# TYPE pipeline_hop_records_total counter
pipeline_hop_records_total{{hop="by-event"}} 1000.0
pipeline_hop_records_total{{hop="by-subject"}} 400.0
"""


def test_a_pipeline_event_counts_once_audited_or_dead_lettered_not_when_taken_in() -> None:
    assert completed_inputs(SCRAPE) == 400.0  # 390 audited + 10 raw DLQ, not consent's 2
    assert written_per_input([SCRAPE]) == {"outputs": 1.755, "internal": 1.4}


def test_the_core_phase_bounds_what_any_worker_making_its_decision_can_reach() -> None:
    rates = {"ceiling_fair": 50_000, "quix": 8_000, "faust_batched": 2_000, "pipeline": 7_000}
    measured = results(rates, (40, 100), 400, cpu=(130, 14))
    measured["core"] = {"users": 1_000, "events": 5_000, "cpu_us_per_event": 40.0}

    bound = report.core_bound(measured)

    assert bound["core/ceiling_fair cpu"] == round(40 / 14, 3)
    assert bound["best pipeline/ceiling_fair"] == 0.5  # 25,000 events/s at most
    assert bound["best pipeline/quix"] == round(25_000 / 8_000, 3)
    measured["core_bound"] = bound
    assert "25,000 events/s" in "\n".join(report._core_lines(measured))


def test_the_core_phase_decides_the_mix_and_encodes_every_output() -> None:
    phase = core_phase(200, 1_000, seed=3, hmac_key=b"k" * 32, trust_key=b"t" * 32)

    assert 900 < phase["events"] <= 1_000  # customer-list records and consent churn left out
    assert phase["outputs_per_event"] > 2  # an audit and a de-identified record at least
    assert phase["cpu_us_per_event"] > 0
