"""consent.changes: per-field last-writer-wins state, devices, deletion, storage."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core import stored
from pipeline.core.consent import ConsentState, DeviceState, Stamped, apply_change, fold
from pipeline.errors import ConsentStateError
from schemas import codec
from schemas.consent import ConsentChange
from tests.unit.factories import USER, change


def test_no_changes_means_no_record() -> None:
    assert fold([]) is None


def test_each_field_keeps_its_own_last_writer() -> None:
    state = fold(
        [
            change(changed_at=1, settings={"personalization": False, "partner_sharing": False}),
            change(changed_at=2, settings={"personalization": True}),
            change(changed_at=3, profile={"country": "de"}),
        ]
    )

    assert state is not None
    assert state.personalization == Stamped(True, 2)
    assert state.partner_sharing == Stamped(False, 1)
    assert state.ads_from_partner_info is None
    assert state.country == Stamped("DE", 3)
    assert state.version == 3


def test_an_older_change_arriving_late_does_not_win() -> None:
    state = fold(
        [
            change(changed_at=20, settings={"personalization": True}),
            change(changed_at=10, settings={"personalization": False}),
        ]
    )

    assert state is not None
    assert state.personalization == Stamped(True, 20)
    assert state.version == 20


def test_an_explicit_null_clears_the_field_and_an_absent_one_leaves_it() -> None:
    state = fold(
        [
            change(changed_at=1, settings={"personalization": False}, profile={"birth_year": 1990}),
            change(changed_at=2, settings={"personalization": None}),
        ]
    )

    assert state is not None
    assert state.personalization == Stamped(None, 2)
    assert state.birth_year == Stamped(1990, 1)


@pytest.mark.parametrize(
    ("field", "part", "first", "second", "winner"),
    [
        ("personalization", "settings", True, False, False),
        ("personalization", "settings", True, None, None),
        ("personalization", "settings", None, False, False),
        ("country", "profile", "US", None, None),
        ("country", "profile", "US", "DE", "US"),
        ("birth_year", "profile", 1990, 2008, 2008),
        ("birth_year", "profile", 1990, None, None),
    ],
)
def test_a_same_millisecond_tie_goes_to_the_more_restrictive_value(
    field: str, part: str, first: Any, second: Any, winner: Any
) -> None:
    first_change: dict[str, Any] = {part: {field: first}}
    second_change: dict[str, Any] = {part: {field: second}}
    a = change(changed_at=5, **first_change)
    b = change(changed_at=5, **second_change)

    for order in ([a, b], [b, a]):
        state = fold(order)
        assert state is not None
        assert getattr(state, field) == Stamped(winner, 5)


def test_devices_are_kept_per_device_id() -> None:
    state = fold(
        [
            change(
                changed_at=1, device={"device_id": "d1", "platform": "ios", "att_status": "denied"}
            ),
            change(changed_at=2, device={"device_id": "d2", "ads_opt_out": True}),
            change(changed_at=3, device={"device_id": "d1", "att_status": "authorized"}),
        ]
    )

    assert state is not None
    assert state.devices == {
        "d1": DeviceState(platform=Stamped("ios", 1), att_status=Stamped("authorized", 3)),
        "d2": DeviceState(ads_opt_out=Stamped(True, 2)),
    }


def test_att_tie_prefers_not_authorized() -> None:
    a = change(changed_at=5, device={"device_id": "d1", "att_status": "authorized"})
    b = change(changed_at=5, device={"device_id": "d1", "att_status": "denied"})

    assert fold([a, b]) == fold([b, a])
    state = fold([a, b])
    assert state is not None
    assert state.devices["d1"].att_status == Stamped("denied", 5)


def test_deletion_is_final_and_keeps_nothing_else() -> None:
    state = fold(
        [
            change(changed_at=1, settings={"personalization": True}, profile={"country": "US"}),
            change(changed_at=2, deleted=True),
            change(changed_at=3, settings={"partner_sharing": True}, device={"device_id": "d1"}),
        ]
    )

    assert state == ConsentState(user_id=USER, version=3, deleted=True)


def test_deleted_false_changes_nothing() -> None:
    state = fold([change(changed_at=1, deleted=True), change(changed_at=2, deleted=False)])

    assert state is not None
    assert state.deleted is True


def test_a_change_for_another_user_is_refused() -> None:
    state = fold([change(changed_at=1)])

    with pytest.raises(ConsentStateError) as raised:
        apply_change(state, change(changed_at=2, user_id="user-2"))
    assert "user-2" not in str(raised.value)


def test_state_round_trips_through_bytes() -> None:
    state = fold(
        [
            change(changed_at=1, settings={"personalization": None}, profile={"country": "US"}),
            change(changed_at=2, profile={"birth_year": 1999}),
            change(changed_at=3, device={"device_id": "d1", "att_status": "denied"}),
        ]
    )
    assert state is not None

    assert stored.decode_state(stored.encode_state(state)) == state


def stored_state(**overrides: Any) -> bytes:
    """A stored state in the `encode_state` layout, with some parts replaced."""
    state = {
        "format": 1,
        "user_id": "u",
        "version": 1,
        "deleted": False,
        "fields": {},
        "devices": {},
    }
    return codec.dumps({**state, **overrides})


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"[]",
        b"{}",
        stored_state(format=2),
        stored_state(user_id=5),
        stored_state(version=True),
        stored_state(deleted="no"),
        stored_state(fields={"unknown_setting": [True, 1]}),
        stored_state(fields={"country": [1, 1]}),
        stored_state(fields={"country": ["US"]}),
        stored_state(fields={"birth_year": [False, 1]}),
        stored_state(fields={"personalization": [True, "1"]}),
        stored_state(devices={"d": {"att_status": ["maybe", 1]}}),
        stored_state(devices=[]),
    ],
)
def test_malformed_stored_state_is_a_consent_state_error(data: bytes) -> None:
    with pytest.raises(ConsentStateError):
        stored.decode_state(data)


# Any order of the same consent changes gives the same state.

maybe_bool = st.sampled_from([True, False, None])


@st.composite
def consent_changes(draw: st.DrawFn) -> ConsentChange:
    fields: dict[str, Any] = {}
    settings_part = draw(
        st.dictionaries(
            st.sampled_from(["personalization", "ads_from_partner_info", "partner_sharing"]),
            maybe_bool,
        )
    )
    if settings_part:
        fields["settings"] = settings_part
    profile_part: dict[str, Any] = {}
    if draw(st.booleans()):
        profile_part["country"] = draw(st.sampled_from(["US", "DE", "BR", None]))
    if draw(st.booleans()):
        profile_part["birth_year"] = draw(st.sampled_from([1970, 2000, 2012, None]))
    keep_empty_profile = draw(st.booleans())
    if profile_part or keep_empty_profile:
        fields["profile"] = profile_part
    if draw(st.booleans()):
        device: dict[str, Any] = {"device_id": draw(st.sampled_from(["d1", "d2"]))}
        if draw(st.booleans()):
            device["att_status"] = draw(
                st.sampled_from(["authorized", "denied", "restricted", "not_determined", None])
            )
        if draw(st.booleans()):
            device["ads_opt_out"] = draw(maybe_bool)
        if draw(st.booleans()):
            device["platform"] = draw(st.sampled_from(["ios", "android", None]))
        fields["device"] = device
    if draw(st.integers(0, 9)) == 0:
        fields["deleted"] = True
    # few distinct timestamps, so same-millisecond ties are common
    return change(changed_at=draw(st.integers(0, 4)), **fields)


@settings(max_examples=300, deadline=None)
@given(changes=st.lists(consent_changes(), min_size=1, max_size=8))
def test_any_state_reads_back_from_its_compact_and_its_dict_form(
    changes: list[ConsentChange],
) -> None:
    state = fold(changes)
    assert state is not None

    compact = stored.decode_state(stored.encode_state(state))
    assert compact == state
    assert compact == stored.decode_state(codec.dumps(state.to_dict()))
    assert type(compact.devices) is type(state.devices)


@settings(max_examples=200, deadline=None)
@given(changes=st.lists(consent_changes(), max_size=8), data=st.data())
def test_any_order_of_the_same_changes_gives_the_same_state(
    changes: list[ConsentChange], data: st.DataObject
) -> None:
    reordered = data.draw(st.permutations(changes))

    assert fold(reordered) == fold(changes)


@settings(max_examples=100, deadline=None)
@given(changes=st.lists(consent_changes(), min_size=1, max_size=6))
def test_any_state_round_trips_through_bytes(changes: list[ConsentChange]) -> None:
    state = fold(changes)
    assert state is not None

    assert stored.decode_state(stored.encode_state(state)) == state
