"""The bytes tables keep: every stored value round-trips, and bad bytes are errors."""

from __future__ import annotations

import pytest

from pipeline.catalogue import RAW_TAG
from pipeline.core import stored
from pipeline.core.aggregate import Cell
from pipeline.core.consent import apply_change
from pipeline.core.errors import ConsentStateError
from schemas import codec
from tests.unit.factories import change

STATE = apply_change(
    None, change(5, settings={"personalization": False}, profile={"country": "DE"})
)


def test_a_consent_row_keeps_its_state_and_acknowledgement_time() -> None:
    row = stored.decode_consent_row(stored.encode_consent_row(STATE, 1_700_000_000_123))

    assert row == stored.ConsentRow(STATE, 1_700_000_000_123)


def test_a_row_stored_before_rows_carried_their_time_reads_with_the_time_unknown() -> None:
    row = stored.decode_consent_row(codec.dumps(STATE.to_dict()))

    assert row == stored.ConsentRow(STATE, stored.UNKNOWN_ACKNOWLEDGEMENT)


def test_a_row_stored_with_the_dict_state_still_reads() -> None:
    row = stored.decode_consent_row(b"17:" + codec.dumps(STATE.to_dict()))

    assert row == stored.ConsentRow(STATE, 17)


def test_a_consent_row_is_compact() -> None:
    row = stored.encode_consent_row(STATE, 17)

    assert row.startswith(b'17:[2,["user-1",')
    assert len(row) < len(b"17:" + codec.dumps(STATE.to_dict())) / 2


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"12",
        b"x:{}",
        b"12:not json",
        b"12:[]",
        b"12:[2]",
        b'12:[3,["u",1]]',
        b'12:[2,["u",true]]',
        b'12:[2,["u",1,false,[1,1]]]',
        b'12:[2,["u",1,false,null,null,null,null,[true,1]]]',
        b'12:[2,["u",1,false,null,null,null,["US"]]]',
        b'12:[2,["u",1,false,null,null,null,null,null,{"d":[null,["secret",1]]}]]',
        b'12:[2,["u",1,false,null,null,null,null,null,{},1]]',
        b'12:[2,["u",1]] x',
    ],
)
def test_a_malformed_consent_row_is_a_consent_state_error(data: bytes) -> None:
    with pytest.raises(ConsentStateError) as raised:
        stored.decode_consent_row(data)
    assert "secret" not in str(raised.value)


def test_history_keys_are_apart_from_user_rows() -> None:
    key = stored.history_key(b"user-1")

    assert stored.is_history_key(key)
    assert not stored.is_history_key(b"user-1")


def test_dedup_entries_round_trip() -> None:
    entry = stored.DedupEntry("p." + RAW_TAG.name, 3, 42, 1_700_000_000.5)

    assert stored.decode_dedup(stored.encode_dedup(entry)) == entry
    assert stored.dedup_key("adv-1", "e1") != stored.dedup_key(None, "e1")


def test_aggregation_cells_and_their_mark_round_trip() -> None:
    key = ("v1", 3600, "adv-1", "checkout", "web", "US", "USD")

    assert stored.decode_cell_key(stored.encode_cell_key(key)) == key
    assert stored.decode_cell(stored.encode_cell(Cell(12, 99.5))) == Cell(12, 99.5)
    assert stored.decode_aggregate_meta(stored.encode_aggregate_meta(7200, 3)) == (7200, 3)
