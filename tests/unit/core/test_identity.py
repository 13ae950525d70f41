"""Identity resolution's pure core: match keys, link folding, as-of lookups, the winner."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.core import stored
from pipeline.core.identity import (
    MAX_MATCH_KEYS,
    LinkRow,
    advertising_id_key,
    apply_link,
    choose,
    match_keys,
    user_as_of,
)
from schemas.identity import IdentityLink
from schemas.normalize import sha256_hex
from tests.unit.factories import parsed, sdk_event, tag_event, widget_event

A, B, C = "a" * 64, "b" * 64, "c" * 64


def _link(user: str | None, linked_at: int, key: str = f"em:{A}") -> IdentityLink:
    if user is None:
        return IdentityLink(match_key=key, deleted=True, linked_at=linked_at)
    return IdentityLink(match_key=key, user_id=user, linked_at=linked_at)


def test_keys_come_in_the_spec_order_without_repeats() -> None:
    event = parsed(
        "tag",
        tag_event(
            user_data={"em": [A, B, A], "ph": [C], "click_id": "clk-9", "external_id": ["x"]}
        ),
    )

    assert match_keys(event) == ["click:clk-9", f"em:{A}", f"em:{B}", f"ph:{C}"]


def test_app_events_resolve_by_hashed_and_raw_advertising_ids_widgets_by_session() -> None:
    raw_id = "AEBE52E7-03EE-455A-B3C4-E57283966239"
    app = parsed(
        "sdk",
        sdk_event(user_data={"em": [], "hashed_maids": [C]}, device={"advertising_id": raw_id}),
    )
    widget = parsed("widget", widget_event(session_id="sess-1"))

    assert match_keys(app) == [f"maid:{C}", f"maid:{sha256_hex(raw_id.lower())}"]
    assert match_keys(widget) == ["session:sess-1"]


def test_a_zeroed_advertising_id_is_no_key_and_the_list_is_bounded() -> None:
    many = [f"{n:064x}" for n in range(20)]
    event = parsed("tag", tag_event(user_data={"em": many, "click_id": None}))

    assert advertising_id_key("00000000-0000-0000-0000-000000000000") is None
    assert len(match_keys(event)) == MAX_MATCH_KEYS


def test_the_newer_link_wins_and_an_older_one_changes_nothing() -> None:
    row = apply_link(None, _link("u1", 10), 100)
    row = apply_link(row, _link("u2", 20), 200)
    older = apply_link(row, _link("u3", 15), 300)

    assert (row.user_id, row.linked_at) == ("u2", 20)
    assert older == row


def test_same_millisecond_links_converge_an_unlink_winning() -> None:
    links = [_link("u1", 10), _link("u2", 10), _link(None, 10)]
    rows = set()
    for order in itertools.permutations(links):
        row: LinkRow | None = None
        for n, link in enumerate(order):
            row = apply_link(row, link, 100 + n)
        assert row is not None
        rows.add((row.user_id, row.linked_at))

    assert rows == {(None, 10)}


@given(
    st.lists(
        st.tuples(st.sampled_from(["u1", "u2", "u3", None]), st.integers(0, 5)),
        min_size=1,
        max_size=6,
    )
)
def test_any_order_of_the_same_links_ends_in_the_same_user(
    links: list[tuple[str | None, int]],
) -> None:
    ends = set()
    for order in itertools.islice(itertools.permutations(links), 24):
        row: LinkRow | None = None
        for n, (user, at) in enumerate(order):
            row = apply_link(row, _link(user, at), n)
        assert row is not None
        ends.add(row.user_id)

    assert len(ends) == 1


def test_a_tombstone_unlinks_whatever_linked_at_says() -> None:
    row = apply_link(apply_link(None, _link("u1", 10), 100), None, 200)

    assert row.user_id is None
    assert user_as_of(row, 150) == "u1"
    assert user_as_of(row, 250) is None


def test_the_user_of_a_key_is_the_one_at_the_time_the_event_was_produced() -> None:
    row = apply_link(None, _link("u1", 1), 1_000)
    row = apply_link(row, _link("u2", 2), 2_000)

    assert user_as_of(row, 500) is None  # before the first link: unlinked
    assert user_as_of(row, 1_500) == "u1"
    assert user_as_of(row, 2_500) == "u2"
    assert user_as_of(row, 2_000) is None  # moved in that very millisecond: unclear


def test_a_key_linked_in_the_events_own_millisecond_names_its_user() -> None:
    """The link may have been acknowledged before the event was produced: then it governs
    the event, and nobody else could (the key was unlinked before)."""
    row = apply_link(None, _link("u1", 1), 1_000)

    assert user_as_of(row, 1_000) == "u1"


def test_a_key_unlinked_in_the_events_own_millisecond_names_nobody() -> None:
    row = apply_link(apply_link(None, _link("u1", 1), 1_000), _link(None, 2), 2_000)

    assert user_as_of(row, 2_000) is None
    assert user_as_of(row, 1_999) == "u1"


def test_a_key_unlinked_and_linked_again_to_its_user_in_one_millisecond_names_that_user() -> None:
    row = apply_link(None, _link("u1", 1), 1_000)
    row = apply_link(row, _link(None, 2), 2_000)
    row = apply_link(row, _link("u1", 3), 2_000)

    assert user_as_of(row, 2_000) == "u1"


def test_a_history_pruned_past_the_event_names_nobody_unless_every_state_agrees() -> None:
    row = apply_link(None, _link("u1", 1), 1_000, max_entries=1)
    row = apply_link(row, _link("u2", 2), 2_000, max_entries=1)

    assert row.complete_from_ms == 1_001
    assert user_as_of(row, 500) is None
    assert user_as_of(row, 2_500) == "u2"


def test_the_first_linked_key_wins_and_another_user_is_a_conflict() -> None:
    assert choose([("click", None), ("em", "u1"), ("ph", "u1")]) == ("u1", "em", False)
    assert choose([("em", "u1"), ("maid", "u2")]) == ("u1", "em", True)
    assert choose([("em", None)]) == (None, None, False)


@pytest.mark.parametrize(
    "row",
    [
        LinkRow(None, -1),
        LinkRow("u1", 5, ((100, None), (200, "u0")), 50),
    ],
)
def test_link_rows_round_trip_through_their_stored_bytes(row: LinkRow) -> None:
    assert stored.decode_link_row(stored.encode_link_row(row)) == row


@pytest.mark.parametrize("data", [b"", b"[]", b"[5, 1, 0, []]", b'["u", "x", 0, []]'])
def test_malformed_link_rows_are_errors(data: bytes) -> None:
    with pytest.raises(ValueError, match="malformed"):
        stored.decode_link_row(data)
