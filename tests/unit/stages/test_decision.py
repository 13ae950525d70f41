"""The decision stage over in-memory tables: the ledger, consent, aggregates, duplicates."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline import catalogue
from pipeline.core import stored
from pipeline.stages import decision
from pipeline.state.stores import MemoryStore
from pipeline.state.tables import Table
from schemas import codec
from tests.unit.factories import NOW, USER, tag_event
from tests.unit.stages.chain import Chain, audit_of, destinations

PRODUCED_MS = (NOW - 30) * 1000
"""When the raw events were produced: half a minute ago."""
EMAIL_KEY = "em:" + "a" * 64
US_ADULT: dict[str, Any] = {"profile": {"country": "US", "birth_year": 1980}}


def _known_user(chain: Chain, **settings: Any) -> None:
    chain.link(EMAIL_KEY, USER, (NOW - 120) * 1000)
    chain.consent(USER, (NOW - 60) * 1000, settings=settings, **US_ADULT)


def _event(**fields: Any) -> dict[str, Any]:
    return tag_event(user_id=None, user_data={"em": ["a" * 64]}, **fields)


def test_every_raw_record_yields_one_audit_or_one_dlq_record() -> None:
    chain = Chain()
    _known_user(chain)

    good = chain.raw("tag", _event(), PRODUCED_MS)
    bad = chain.raw("tag", b"{not json", PRODUCED_MS)

    assert destinations(good).count("audit") == 1
    assert "dlq" not in destinations(good)
    assert destinations(bad) == ["dlq"]
    assert bad[0].record["reason"] == "invalid_json"
    assert audit_of(good)["origin"]["topic"] == bad[0].record["origin"]["topic"]


def test_the_audit_names_the_raw_origin_the_match_kind_and_no_key() -> None:
    chain = Chain()
    _known_user(chain)

    outputs = chain.raw("tag", _event(), PRODUCED_MS, partition=2)

    audit = audit_of(outputs)
    assert audit["origin"] == {"topic": catalogue.RAW_TAG.name, "partition": 2, "offset": 0}
    assert audit["identity"] == {"match": "em", "conflict": False}
    assert audit["timings"]["received_at"] == PRODUCED_MS / 1000
    assert "a" * 64 not in str(audit)
    assert "personalization" in destinations(outputs)


def test_an_unexpected_exception_becomes_a_processing_error_dlq_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*_: Any) -> None:
        raise RuntimeError("secret-user-value")

    monkeypatch.setattr(decision, "decide", broken)
    chain = Chain()
    outputs = chain.raw("tag", _event(), PRODUCED_MS)

    assert destinations(outputs) == ["dlq"]
    record = outputs[0].record
    assert record["reason"] == "processing_error"
    assert "secret" not in record["detail"]
    assert record["origin"]["topic"] == catalogue.RAW_TAG.name
    assert chain.stats.processing_errors["tag"] == 1


def test_consent_changes_govern_later_events_and_revocations_are_timed() -> None:
    chain = Chain()
    _known_user(chain)
    chain.consent(USER, (NOW - 50) * 1000, settings={"personalization": False})

    outputs = chain.raw("tag", _event(), PRODUCED_MS)

    assert "personalization" not in destinations(outputs)
    assert chain.stats.consent_changes == 2
    assert len(chain.stats.revocation_latencies) == 1


def test_a_regrant_after_the_event_was_produced_does_not_reopen_it() -> None:
    chain = Chain()
    _known_user(chain, personalization=False)
    chain.consent(USER, PRODUCED_MS + 1000, settings={"personalization": True})

    outputs = chain.raw("tag", _event(), PRODUCED_MS)

    assert "personalization" not in destinations(outputs)
    assert "account.personalization_off" in audit_of(outputs)["reasons"]


def test_a_bad_consent_change_goes_to_the_dlq() -> None:
    chain = Chain()
    chain.consent(USER, NOW * 1000, settings={"personalization": "yes"})

    [rejected] = chain.outputs
    assert rejected.record["reason"] == "schema_violation"
    assert chain.stats.dlq["consent", "schema_violation"] == 1


def test_closed_hours_emit_cells_that_reach_k_and_persist_open_cells() -> None:
    chain = Chain(partitions=1, aggregate_k=3)
    proc = chain.decision
    for i in range(3):
        chain.raw("tag", _event(event_id=f"e{i}"), PRODUCED_MS)
    assert 0 not in proc.aggregates.staged  # cells are staged once per batch
    proc.store_cells()
    staged = proc.aggregates.staged[0]
    assert any(key.startswith(b"[") for key in staged)
    proc.aggregates.commit({0: 1})
    restored = Chain(partitions=1, aggregate_k=3).decision
    restored.aggregates.stores[0] = proc.aggregates.stores[0]
    restored.load_aggregator(0)
    assert len(restored.aggregators[0]) == 1
    emitted = restored.close_windows(NOW + 2 * 3600, chain.stats)
    assert [o.destination for o in emitted] == ["aggregates"]
    assert emitted[0].record["count"] == 3


def test_staged_writes_are_visible_at_once_and_durable_only_on_commit() -> None:
    table = Table("t", "t.log", lambda _t, _p, _e: MemoryStore())
    table.assign(0)
    table.put(0, b"k", b"v")
    assert table.get(0, b"k") == b"v"
    assert list(table.changelog_records()) == [(0, b"k", b"v")]
    table.abort()
    assert table.get(0, b"k") is None
    table.put(0, b"k", b"v2")
    table.commit({0: 42})
    assert table.stores[0].get(b"k") == b"v2"
    assert table.stores[0].checkpoint() == 42


def test_a_consent_change_keyed_by_another_user_is_rejected_not_applied() -> None:
    chain = Chain()
    _known_user(chain)
    change = {"user_id": USER, "changed_at": NOW * 1000 - 40_000, "deleted": True}
    record = chain._input(
        chain.decision.table_inputs[0],
        b"someone-else",
        codec.dumps(change),
        NOW * 1000 - 40_000,
        0,
    )

    [misplaced] = chain.decision.fold(record, NOW, chain.stats)

    assert misplaced.record["detail"] == "key: not_subject_key"
    assert "personalization" in destinations(chain.raw("tag", _event(), PRODUCED_MS))


def test_a_state_stored_without_its_acknowledgement_time_is_still_read() -> None:
    chain = Chain(partitions=1)
    _known_user(chain)
    consent = chain.decision.consent
    consent.commit({0: 1})
    store = consent.stores[0]
    stamped = store.get(USER.encode())
    assert stamped is not None
    older_layout = codec.dumps(stored.decode_consent_row(stamped).state.to_dict())
    store.write({USER.encode(): older_layout}, None)

    outputs = chain.raw("tag", _event(), PRODUCED_MS)

    assert "personalization" in destinations(outputs)
