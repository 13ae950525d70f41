"""The policy's rule cases (tests/unit/core/policy_cases.py) as live traffic for a running worker.

Each case gets its own user and event id, the case's event time moves to now, and birth
years move by the same number of years, so every case keeps its meaning.
"""

from __future__ import annotations

import copy
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pipeline import catalogue
from schemas import codec
from tests.integration.kafka_io import Produced, signed, subject_key
from tests.unit.core.policy_cases import CASES, Case
from tests.unit.factories import USER

IDENTIFIERS_IN_CASES = (
    b"cookie-1",
    b"ext-1",
    b"click-1",
    b"order-1",
    b"device-1",
    b"198.51.100.23",
    b"a" * 64,
)
"""Identifier values the factories put in events: never in de-identified output."""


@dataclass(frozen=True)
class LiveCase:
    case: Case
    user_id: str | None
    event_id: str
    event: dict[str, Any]
    consent: list[dict[str, Any]]


def _year(unix_s: int) -> int:
    return datetime.fromtimestamp(unix_s, UTC).year


def live_cases(run: str | None = None) -> list[LiveCase]:
    """Every rule case that runs under the default policy settings, made unique for this run."""
    run = run or uuid.uuid4().hex[:8]
    now = int(time.time())
    cases = []
    for i, case in enumerate(c for c in CASES if not c.config):
        user = f"scn-{run}-{i}"
        event = copy.deepcopy(case.event)
        event_id = f"evt-{run}-{i}"
        event["event_id"] = event_id
        years = _year(now - 60) - _year(event["event_time"])
        event["event_time"] = now - 60
        has_user = event.get("user_id") is not None
        if has_user:
            event["user_id"] = user if event["user_id"] == USER else event["user_id"]
        consent = []
        for change in copy.deepcopy(case.consent or []):
            change["user_id"] = user if change["user_id"] == USER else change["user_id"]
            profile = change.get("profile") or {}
            if profile.get("birth_year") is not None:
                profile["birth_year"] += years
            consent.append(change)
        cases.append(LiveCase(case, user if has_user else None, event_id, event, consent))
    return cases


def consent_records(topic: str, cases: list[LiveCase]) -> list[tuple[str, bytes, bytes]]:
    return [
        (topic, change["user_id"].encode(), codec.dumps(change))
        for live in cases
        for change in live.consent
    ]


def event_records(prefix: str, cases: list[LiveCase]) -> list[Produced]:
    """Each case's event; one naming its user comes signed, as a trusted producer's."""
    records: list[Produced] = []
    for live in cases:
        topic = prefix + catalogue.RAW[live.case.source].name
        value = codec.dumps(live.event)
        key = subject_key(live.event)
        records.append(signed(topic, key, value) if live.user_id else (topic, key, value))
    return records
