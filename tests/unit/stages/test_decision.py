"""The decision stage over in-memory tables: ledger, dedup, consent, aggregates."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline import catalogue
from pipeline.catalogue import Topic
from pipeline.core.parse import ParseLimits
from pipeline.core.policy import PolicyConfig
from pipeline.core.route import Origin, Output
from pipeline.runtime.reporting import BatchStats
from pipeline.runtime.stage import InputRecord
from pipeline.stages import decision
from pipeline.stages.decision import DecisionConfig, DecisionStage
from pipeline.state.stores import MemoryStore
from pipeline.state.tables import Table
from schemas import codec
from tests.unit.factories import NOW, USER, pseudonymizer, tag_event

PARTITION = 0


def _processor(k: int = 3) -> DecisionStage:
    tables = {
        name: Table(name, f"{name}.log", lambda _t, _p: MemoryStore())
        for name in DecisionStage.tables
    }
    for table in tables.values():
        table.assign(PARTITION)
    proc = DecisionStage(
        DecisionConfig(
            policy=PolicyConfig(),
            pseudonymizer=pseudonymizer(),
            limits=ParseLimits(),
            aggregate_k=k,
            aggregate_grace_s=0,
        )
    )
    proc.bind(tables)
    proc.assigned({PARTITION})
    return proc


def _record(
    value: bytes | None,
    offset: int,
    topic: Topic = catalogue.RAW_TAG,
    key: bytes | None = USER.encode(),
) -> InputRecord:
    # Consent changes were acknowledged a minute before the events were produced.
    produced_s = NOW - 60 if topic.source is None else NOW - 30
    return InputRecord(topic, Origin(topic.name, PARTITION, offset), key, value, produced_s * 1000)


def _consent(offset: int, **settings: Any) -> InputRecord:
    change = {
        "user_id": USER,
        "changed_at": 1_000 + offset,
        "settings": settings,
        "profile": {"country": "US", "birth_year": 1980},
    }
    return _record(codec.dumps(change), offset, catalogue.CONSENT_CHANGES, USER.encode())


def _destinations(outputs: list[Output]) -> list[str]:
    return sorted(o.destination for o in outputs)


def test_every_raw_record_yields_one_audit_or_one_dlq_record() -> None:
    proc, stats = _processor(), BatchStats()
    proc.apply_consent(_consent(0), NOW, stats)
    good = proc.process_event(_record(codec.dumps(tag_event()), 1), NOW, stats)
    bad = proc.process_event(_record(b"{not json", 2), NOW, stats)
    assert [o.destination for o in good].count("audit") == 1
    assert "dlq" not in _destinations(good)
    assert _destinations(bad) == ["dlq"]
    assert bad[0].record["reason"] == "invalid_json"
    assert bad[0].record["origin"] == {"topic": catalogue.RAW_TAG.name, "partition": 0, "offset": 2}


def test_an_unexpected_exception_becomes_a_processing_error_dlq_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*_: Any) -> None:
        raise RuntimeError("secret-user-value")

    monkeypatch.setattr(decision, "decide", broken)
    proc, stats = _processor(), BatchStats()
    outputs = proc.process_event(_record(codec.dumps(tag_event()), 7), NOW, stats)
    assert _destinations(outputs) == ["dlq"]
    record = outputs[0].record
    assert record["reason"] == "processing_error"
    assert "secret" not in record["detail"]
    assert record["origin"]["offset"] == 7
    assert stats.processing_errors["tag"] == 1


def test_a_second_copy_is_a_duplicate_but_a_re_read_of_the_same_record_is_not() -> None:
    proc, stats = _processor(), BatchStats()
    proc.apply_consent(_consent(0), NOW, stats)
    event = codec.dumps(tag_event())
    first = proc.process_event(_record(event, 1), NOW, stats)
    again = proc.process_event(_record(event, 1), NOW, stats)  # re-read after a crash
    copy = proc.process_event(_record(event, 2, catalogue.RAW_SDK), NOW, stats)
    assert "personalization" in _destinations(first)
    assert _destinations(again) == _destinations(first)
    assert _destinations(copy) == ["audit"]
    assert copy[0].record["duplicate"] is True
    assert stats.duplicates["sdk"] == 1


def test_consent_changes_govern_later_events_and_revocations_are_timed() -> None:
    proc, stats = _processor(), BatchStats()
    proc.apply_consent(_consent(0), NOW, stats)
    proc.apply_consent(_consent(1, personalization=False), NOW, stats)
    outputs = proc.process_event(_record(codec.dumps(tag_event()), 2), NOW, stats)
    assert "personalization" not in _destinations(outputs)
    assert stats.consent_changes == 2
    assert len(stats.revocation_latencies) == 1


def test_a_bad_consent_change_goes_to_the_dlq() -> None:
    proc, stats = _processor(), BatchStats()
    rejected = proc.apply_consent(
        _record(b'{"user_id": 5}', 3, catalogue.CONSENT_CHANGES), NOW, stats
    )
    assert rejected is not None
    assert rejected.record["reason"] == "schema_violation"
    assert stats.dlq["consent", "schema_violation"] == 1


def test_closed_hours_emit_cells_that_reach_k_and_persist_open_cells() -> None:
    proc, stats = _processor(k=3), BatchStats()
    for i in range(3):
        proc.process_event(_record(codec.dumps(tag_event(event_id=f"e{i}")), i), NOW, stats)
    assert PARTITION not in proc.aggregates.staged  # cells are staged once per batch
    proc.store_cells()
    staged = proc.aggregates.staged[PARTITION]
    assert any(key.startswith(b"[") for key in staged)
    proc.aggregates.commit({PARTITION: 1})
    restored = _processor(k=3)
    restored.aggregates.stores[PARTITION] = proc.aggregates.stores[PARTITION]
    restored.load_aggregator(PARTITION)
    assert len(restored.aggregators[PARTITION]) == 1
    emitted = restored.close_windows(NOW + 2 * 3600, stats)
    assert [o.destination for o in emitted] == ["aggregates"]
    assert emitted[0].record["count"] == 3


def test_staged_writes_are_visible_at_once_and_durable_only_on_commit() -> None:
    table = Table("t", "t.log", lambda _t, _p: MemoryStore())
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


def test_a_record_keyed_by_another_subject_is_rejected_not_decided() -> None:
    proc, stats = _processor(), BatchStats()
    change = {"user_id": USER, "changed_at": 5, "settings": {"personalization": False}}
    misplaced = proc.apply_consent(
        _record(codec.dumps(change), 0, catalogue.CONSENT_CHANGES, b"someone-else"), NOW, stats
    )
    assert misplaced is not None
    assert misplaced.record["detail"] == "key: not_subject_key"
    outputs = proc.process_event(
        _record(codec.dumps(tag_event()), 1, key=b"someone-else"), NOW, stats
    )
    assert _destinations(outputs) == ["dlq"]
    assert outputs[0].record["detail"] == "key: not_subject_key"


def test_a_state_stored_without_its_acknowledgement_time_is_still_read() -> None:
    proc, stats = _processor(), BatchStats()
    proc.apply_consent(_consent(0), NOW, stats)
    proc.consent.commit({PARTITION: 1})
    store = proc.consent.stores[PARTITION]
    stamped = store.get(USER.encode())
    assert stamped is not None
    store.write({USER.encode(): stamped.partition(b":")[2]}, None)  # the older layout
    fresh = _processor()
    fresh.consent.stores[PARTITION] = store
    outputs = fresh.process_event(_record(codec.dumps(tag_event()), 1), NOW, stats)
    assert "personalization" in _destinations(outputs)
