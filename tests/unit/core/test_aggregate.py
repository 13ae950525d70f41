"""Aggregates: hourly cells, emitted only with at least k events."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.core.aggregate import HourlyAggregator
from pipeline.errors import PolicyConfigError
from schemas.outputs import AggregateRecord

HOUR = 1_699_999_200


def deidentified(**overrides: Any) -> dict[str, Any]:
    record = {
        "policy_version": "v1",
        "source": "tag",
        "action_source": "web",
        "surface": "off_platform",
        "event_name": "checkout",
        "event_hour": HOUR,
        "advertiser_id": "adv-1",
        "site_domain": None,
        "page_origin": "https://shop.example.com",
        "browser_family": "Chrome",
        "os_family": "Windows",
        "country": "US",
        "value": 10.0,
        "currency": "USD",
    }
    record.update(overrides)
    return record


def test_a_cell_with_k_events_is_emitted_with_count_and_value_sum() -> None:
    aggregator = HourlyAggregator(k=3)
    for value in (1.0, 2.0, None):
        aggregator.add(deidentified(value=value))

    closed = aggregator.close(up_to_hour=HOUR + 3600)

    assert closed.records == [
        {
            "policy_version": "v1",
            "hour": HOUR,
            "advertiser_id": "adv-1",
            "event_name": "checkout",
            "action_source": "web",
            "country": "US",
            "currency": "USD",
            "count": 3,
            "value_sum": 3.0,
            "k": 3,
        }
    ]
    AggregateRecord.model_validate(closed.records[0])
    assert (closed.suppressed_cells, closed.suppressed_events) == (0, 0)


def test_a_cell_under_k_is_suppressed_and_counted() -> None:
    aggregator = HourlyAggregator()
    for _ in range(9):
        aggregator.add(deidentified())
    for _ in range(10):
        aggregator.add(deidentified(country="CA"))

    closed = aggregator.close(up_to_hour=HOUR + 3600)

    assert [record["country"] for record in closed.records] == ["CA"]
    assert (closed.suppressed_cells, closed.suppressed_events) == (1, 9)
    assert len(aggregator) == 0


@pytest.mark.parametrize(
    "split",
    [
        {"advertiser_id": "adv-2"},
        {"event_name": "lead"},
        {"action_source": "app_ios"},
        {"country": None},
        {"currency": "EUR"},
        {"event_hour": HOUR - 3600},
    ],
)
def test_cells_are_split_by_every_dimension(split: dict[str, Any]) -> None:
    aggregator = HourlyAggregator(k=1)
    aggregator.add(deidentified())
    aggregator.add(deidentified(**split))

    assert len(aggregator.close(up_to_hour=HOUR + 3600).records) == 2


def test_records_within_the_same_hour_share_a_cell() -> None:
    aggregator = HourlyAggregator(k=2)
    aggregator.add(deidentified(event_hour=HOUR))
    aggregator.add(deidentified(event_hour=HOUR + 1800))

    assert [r["count"] for r in aggregator.close(up_to_hour=HOUR + 3600).records] == [2]


def test_only_hours_before_the_watermark_close() -> None:
    aggregator = HourlyAggregator(k=1)
    aggregator.add(deidentified())
    aggregator.add(deidentified(event_hour=HOUR + 3600))

    closed = aggregator.close(up_to_hour=HOUR + 3600)

    assert [record["hour"] for record in closed.records] == [HOUR]
    assert len(aggregator) == 1


def test_the_oldest_open_hour_is_known_and_closing_keeps_the_order() -> None:
    aggregator = HourlyAggregator(k=1)
    assert aggregator.oldest_open_hour is None
    aggregator.add(deidentified(event_hour=HOUR + 3600, advertiser_id="adv-1"))
    aggregator.add(deidentified(policy_version="v2", advertiser_id=None))
    aggregator.add(deidentified(advertiser_id="adv-0"))
    assert aggregator.oldest_open_hour == HOUR

    closed = aggregator.close(up_to_hour=HOUR + 7200)

    assert [(r["policy_version"], r["hour"], r["advertiser_id"]) for r in closed.records] == [
        ("v1", HOUR, "adv-0"),
        ("v1", HOUR + 3600, "adv-1"),
        ("v2", HOUR, None),
    ]
    assert aggregator.oldest_open_hour is None
    assert len(aggregator) == 0


def test_a_restored_cell_older_than_the_watermark_closes_next() -> None:
    aggregator = HourlyAggregator(k=1)
    aggregator.close(up_to_hour=HOUR + 3600)
    key = aggregator.add(deidentified(event_hour=HOUR + 3600))
    assert key is not None
    old_key = (key[0], HOUR, *key[2:])
    restored = HourlyAggregator.from_dict(
        {**aggregator.to_dict(), "cells": [[*old_key, 3, 1.0], [*key, 1, 10.0]]}
    )

    assert restored.oldest_open_hour == HOUR
    assert [r["count"] for r in restored.close(up_to_hour=HOUR).records] == [3]
    assert restored.oldest_open_hour == HOUR + 3600


def test_a_record_for_a_closed_hour_is_late_and_not_counted() -> None:
    aggregator = HourlyAggregator(k=1)
    aggregator.close(up_to_hour=HOUR + 3600)

    assert aggregator.add(deidentified()) is None
    assert aggregator.late_events == 1
    assert len(aggregator) == 0


def test_snapshot_round_trip() -> None:
    aggregator = HourlyAggregator(k=2)
    aggregator.add(deidentified())
    aggregator.add(deidentified(country=None, value=None))
    aggregator.close(up_to_hour=HOUR - 3600)

    restored = HourlyAggregator.from_dict(aggregator.to_dict())

    assert restored.to_dict() == aggregator.to_dict()
    restored.add(deidentified())
    assert [r["count"] for r in restored.close(up_to_hour=HOUR + 3600).records] == [2]


def test_k_must_be_positive() -> None:
    with pytest.raises(PolicyConfigError):
        HourlyAggregator(k=0)
