"""Consent as it was when an event was produced: history and strictest decision."""

from __future__ import annotations

from pipeline.core import stored
from pipeline.core.consent import (
    History,
    apply_change,
    remember,
    states_as_of,
)
from pipeline.core.policy import PolicyConfig, decide, strictest
from tests.unit.factories import NOW, change, parsed, tag_event

GRANTED = apply_change(None, change(1, profile={"country": "US", "birth_year": 1980}))
REVOKED = apply_change(GRANTED, change(2, settings={"personalization": False}))
REGRANTED = apply_change(REVOKED, change(3, settings={"personalization": True}))


def _history() -> History:
    history = History()
    history = remember(history, None, 1_000, keep_ms=10**9, max_entries=100)  # first record
    history = remember(history, GRANTED, 2_000, keep_ms=10**9, max_entries=100)  # revocation
    return remember(history, REVOKED, 3_000, keep_ms=10**9, max_entries=100)  # re-grant


def test_an_event_produced_between_revocation_and_regrant_sees_the_revocation() -> None:
    assert states_as_of(_history(), REGRANTED, 2_500) == [REVOKED]


def test_an_event_produced_after_every_change_sees_only_the_current_state() -> None:
    assert states_as_of(_history(), REGRANTED, 3_500) == [REGRANTED]


def test_a_change_in_the_same_millisecond_may_have_come_first_or_second() -> None:
    assert states_as_of(_history(), REGRANTED, 2_000) == [GRANTED, REVOKED]


def test_an_event_older_than_the_history_gets_every_state_it_holds() -> None:
    history = _history()
    pruned = remember(history, REGRANTED, 4_000, keep_ms=1_500, max_entries=100)
    assert pruned.complete_from_ms == 2_001
    assert states_as_of(pruned, REGRANTED, 1_500) == [REVOKED, REGRANTED, REGRANTED]


def test_history_is_bounded_by_count() -> None:
    history = History()
    for ms in range(10):
        history = remember(history, GRANTED, ms, keep_ms=10**9, max_entries=3)
    assert [s.acknowledged_ms for s in history.snapshots] == [7, 8, 9]
    assert history.complete_from_ms == 7


def test_history_round_trips_through_bytes() -> None:
    history = _history()
    assert stored.decode_history(stored.encode_history(history)) == history


def test_strictest_denies_what_either_decision_denies_and_explains_both() -> None:
    event = parsed("tag", tag_event(event_time=NOW - 60))
    config = PolicyConfig()
    then = decide(event, REVOKED, config)
    now = decide(event, REGRANTED, config)
    assert now.personalization == "allow"
    combined = strictest(then, now)
    assert combined.personalization == "deny"
    assert combined.ads == "deny"
    assert combined.measurement == "deidentified"
    assert combined.partner_sharing == "deny"
    assert combined.reasons == ("account.personalization_off",)
    assert combined.consent_version == 3
