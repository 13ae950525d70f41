"""Hourly k-anonymous aggregates over de-identified records .

Cells are hour x advertiser x event name x action source x country, further split by
currency (values in different currencies cannot be added, and a per-currency sum inside
a cell would escape the threshold) and by policy version. A cell is emitted only when it
counts at least `k` events; smaller cells are suppressed and only counted.

The aggregator is a plain in-memory object: the streaming layer feeds it with `add`,
closes finished hours with `close`, and persists it with `to_dict` / `from_dict`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from pipeline.core.deidentify import HOUR
from pipeline.core.errors import PolicyConfigError

DEFAULT_K: Final = 10

CellKey: TypeAlias = tuple[str, int, str | None, str, str, str | None, str | None]
"""policy version, hour, advertiser id, event name, action source, country, currency."""


@dataclass(slots=True)
class Cell:
    """What one cell has counted so far."""

    count: int = 0
    value_sum: float = 0.0


@dataclass(frozen=True, slots=True)
class ClosedHours:
    """What closing hours produced: the cells that met `k` and what was suppressed."""

    closed: list[CellKey]
    records: list[dict[str, Any]]
    suppressed_cells: int
    suppressed_events: int


class HourlyAggregator:
    """Tumbling hourly windows over `activity.deidentified` records."""

    __slots__ = ("_hours", "closed_before", "k", "late_events")

    def __init__(self, k: int = DEFAULT_K) -> None:
        if k < 1:
            raise PolicyConfigError("the aggregation threshold k must be at least 1")
        self.k = k
        self.closed_before = 0
        """Every hour before this one (unix seconds) is closed."""
        self.late_events = 0
        """Records that arrived for an hour already closed, and were not counted."""
        self._hours: dict[int, dict[CellKey, Cell]] = {}
        """The open cells by hour: closing touches only the hours it closes."""

    def __len__(self) -> int:
        return sum(len(cells) for cells in self._hours.values())

    @property
    def oldest_open_hour(self) -> int | None:
        """The earliest hour with an open cell (unix seconds), if any."""
        return min(self._hours, default=None)

    def add(self, record: Mapping[str, Any]) -> CellKey | None:
        """Count a de-identified record and return its cell; None (counted as late) if closed."""
        hour = record["event_hour"] - record["event_hour"] % HOUR
        if hour < self.closed_before:
            self.late_events += 1
            return None
        key: CellKey = (
            record["policy_version"],
            hour,
            record["advertiser_id"],
            record["event_name"],
            record["action_source"],
            record["country"],
            record["currency"],
        )
        cells = self._hours.get(hour)
        if cells is None:
            cells = self._hours[hour] = {}
        cell = cells.get(key)
        if cell is None:
            cell = cells[key] = Cell()
        cell.count += 1
        cell.value_sum += record["value"] or 0.0
        return key

    def cell(self, key: CellKey) -> Cell | None:
        """The open cell `key`, if any."""
        cells = self._hours.get(key[1])
        return None if cells is None else cells.get(key)

    def restore(self, key: CellKey, cell: Cell) -> None:
        """Put back an open cell read from storage."""
        self._hours.setdefault(key[1], {})[key] = cell

    def close(self, up_to_hour: int) -> ClosedHours:
        """Close every hour that starts before `up_to_hour` (unix seconds).

        Only the closing hours' cells are read: nothing when the oldest open hour is
        still open, however many cells the later hours hold.
        """
        self.closed_before = max(self.closed_before, up_to_hour)
        cells: dict[CellKey, Cell] = {}
        for hour in [hour for hour in self._hours if hour < self.closed_before]:
            cells.update(self._hours.pop(hour))
        closing = sorted(cells, key=cell_sort_key)
        records: list[dict[str, Any]] = []
        suppressed_cells = suppressed_events = 0
        for key in closing:
            cell = cells[key]
            if cell.count >= self.k:
                records.append(self._record(key, cell))
            else:
                suppressed_cells += 1
                suppressed_events += cell.count
        return ClosedHours(closing, records, suppressed_cells, suppressed_events)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready snapshot; `from_dict` restores it."""
        return {
            "k": self.k,
            "closed_before": self.closed_before,
            "late_events": self.late_events,
            "cells": [
                [*key, cell.count, cell.value_sum]
                for cells in self._hours.values()
                for key, cell in cells.items()
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HourlyAggregator:
        """Restore an aggregator from `to_dict` output."""
        aggregator = cls(k=data["k"])
        aggregator.closed_before = data["closed_before"]
        aggregator.late_events = data["late_events"]
        for *key, count, value_sum in data["cells"]:
            aggregator.restore(cell_key_from_list(key), Cell(count, value_sum))
        return aggregator

    def _record(self, key: CellKey, cell: Cell) -> dict[str, Any]:
        policy_version, hour, advertiser_id, event_name, action_source, country, currency = key
        return {
            "policy_version": policy_version,
            "hour": hour,
            "advertiser_id": advertiser_id,
            "event_name": event_name,
            "action_source": action_source,
            "country": country,
            "currency": currency,
            "count": cell.count,
            "value_sum": cell.value_sum,
            "k": self.k,
        }


def cell_sort_key(key: CellKey) -> tuple[Any, ...]:
    """A total order on cell keys, `None` first, for deterministic output."""
    return tuple((value is not None, value) for value in key)


def cell_key_from_list(values: list[Any]) -> CellKey:
    """A cell key back from its list form (as stored)."""
    policy_version, hour, advertiser_id, event_name, action_source, country, currency = values
    return (policy_version, hour, advertiser_id, event_name, action_source, country, currency)
