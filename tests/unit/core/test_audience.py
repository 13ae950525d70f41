"""Customer-list memberships under consent: the rule, and memberships over time."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.core import stored
from pipeline.core.audience import (
    TOMBSTONE_MS,
    Change,
    Entry,
    Memberships,
    allows_memberships,
    decide_membership,
    member_id,
    member_keys,
)
from pipeline.core.consent import ConsentState, apply_change
from pipeline.core.policy import PolicyConfig
from schemas import codec
from schemas.audience import AudienceMember
from tests.unit.factories import USER, change

EM, PH, MAID = "a" * 64, "b" * 64, "c" * 64
POLICY = PolicyConfig()


def member(operation: str = "add", **fields: Any) -> AudienceMember:
    document: dict[str, Any] = {
        "advertiser_id": "adv-1",
        "audience_id": "aud-1",
        "operation": operation,
        "match_keys": {"maid": [MAID], "em": [EM], "ph": [PH]},
        "uploaded_at": 1_700_000_000_000,
        **fields,
    }
    return AudienceMember.model_validate_json(codec.dumps(document))


def consent(**settings: Any) -> ConsentState:
    profile = settings.pop("profile", {"country": "US", "birth_year": 1980})
    return apply_change(None, change(1, settings=settings, profile=profile))


def test_keys_are_tried_em_then_ph_then_maid_and_the_id_is_deterministic() -> None:
    assert member_keys(member()) == [f"em:{EM}", f"ph:{PH}", f"maid:{MAID}"]
    assert member_id(member()) == member_id(member())
    assert member_id(member()) != member_id(member("remove"))
    assert member_id(member()) != member_id(member(uploaded_at=1))


def test_a_member_needs_a_key() -> None:
    with pytest.raises(ValueError, match="match key"):
        member(match_keys={})


@pytest.mark.parametrize(
    ("user", "state", "allowed", "reasons"),
    [
        (USER, consent(), True, ()),
        (None, None, False, ("subject.anonymous",)),
        (USER, None, False, ("consent.missing",)),
        (USER, apply_change(None, change(1, deleted=True)), False, ("account.deleted",)),
        (USER, consent(personalization=False), False, ("account.personalization_off",)),
        (USER, consent(ads_from_partner_info=False), False, ("account.partner_ads_off",)),
        (USER, consent(partner_sharing=False), True, ()),
        # Region defaults: in the EEA a setting never set is off.
        (
            USER,
            consent(profile={"country": "DE", "birth_year": 1980}),
            False,
            ("account.partner_ads_off", "account.personalization_off"),
        ),
        (
            USER,
            consent(
                personalization=True,
                ads_from_partner_info=True,
                profile={"country": "DE", "birth_year": 1980},
            ),
            True,
            (),
        ),
    ],
)
def test_a_membership_is_allowed_only_as_spec_4_3_says(
    user: str | None, state: ConsentState | None, allowed: bool, reasons: tuple[str, ...]
) -> None:
    decision = decide_membership(member(), user, state, POLICY)

    assert (decision.allowed, decision.reasons) == (allowed, reasons)
    assert decision.allowed == (user is not None and allows_memberships(state))


def test_limited_data_processing_denies_it_whatever_consent_says() -> None:
    decision = decide_membership(member(opt_out_type="LDP"), USER, consent(), POLICY)

    assert (decision.allowed, decision.reasons) == (False, ("event.ldp",))


def _allowed(ok: bool = True) -> Any:
    return decide_membership(member(), USER, consent() if ok else None, POLICY)


def test_an_allowed_add_is_emitted_once_and_the_advertisers_remove_withdraws_it() -> None:
    memberships = Memberships()

    assert memberships.apply(member(), _allowed()) == (
        "added",
        Change("adv-1", "aud-1", "add", None),
    )
    assert memberships.apply(member(), _allowed()) == ("added", None)
    assert memberships.apply(member("remove"), _allowed()) == (
        "removed",
        Change("adv-1", "aud-1", "remove", None),
    )
    assert memberships.apply(member("remove"), _allowed()) == ("not_a_member", None)


def test_consent_withdraws_every_active_membership_and_a_regrant_restores_them() -> None:
    memberships = Memberships()
    memberships.apply(member(), _allowed())
    memberships.apply(member(audience_id="aud-2"), _allowed())

    withdrawn = list(memberships.follow_consent(False))
    restored = list(memberships.follow_consent(True))

    assert sorted(withdrawn) == [
        Change("adv-1", "aud-1", "remove", "consent.revoked"),
        Change("adv-1", "aud-2", "remove", "consent.revoked"),
    ]
    assert sorted(restored) == [
        Change("adv-1", "aud-1", "add", "consent.granted"),
        Change("adv-1", "aud-2", "add", "consent.granted"),
    ]
    assert list(memberships.follow_consent(True)) == []


def test_a_denied_add_waits_for_consent_and_a_removal_in_between_emits_nothing() -> None:
    memberships = Memberships()

    assert memberships.apply(member(), _allowed(False)) == ("denied", None)
    assert memberships.apply(member("remove"), _allowed()) == ("already_withdrawn", None)
    assert list(memberships.follow_consent(True)) == []


def test_a_restricted_upload_withdraws_an_active_membership_and_consent_never_restores_it() -> None:
    memberships = Memberships()
    memberships.apply(member(), _allowed())
    restricted = decide_membership(member(opt_out_type="LDP"), USER, consent(), POLICY)

    outcome, change_ = memberships.apply(member(opt_out_type="LDP"), restricted)

    assert (outcome, change_) == ("denied", Change("adv-1", "aud-1", "remove", None))
    assert list(memberships.follow_consent(True)) == []


def test_a_deletion_withdraws_and_drops_them_all() -> None:
    memberships = Memberships()
    memberships.apply(member(), _allowed())
    memberships.apply(member(audience_id="aud-2"), _allowed(False))

    withdrawn = list(memberships.follow_consent(False, deleted=True))

    assert withdrawn == [Change("adv-1", "aud-1", "remove", "consent.revoked")]
    assert len(memberships) == 0


def test_memberships_round_trip_through_their_stored_bytes() -> None:
    memberships = Memberships(
        {
            ("a", "x"): Entry("active", 1),
            ("a", "y"): Entry("suppressed", 2),
            ("b", "z"): Entry("restricted", 3),
            ("b", "w"): Entry("removed", 4),
        }
    )

    assert stored.decode_memberships(stored.encode_memberships(memberships)) == memberships
    for bad in (
        b'[["a", "x", "gone", 1]]',
        b'[["a", "x", "active"]]',
        b'[["a", "x", "active", "1"]]',
    ):
        with pytest.raises(ValueError, match="malformed"):
            stored.decode_memberships(bad)


T0 = 1_700_000_000_000


def test_the_newest_upload_wins_whatever_order_the_records_arrive_in() -> None:
    memberships = Memberships()
    memberships.apply(member(uploaded_at=T0), _allowed())

    assert memberships.apply(member("remove", uploaded_at=T0 + 20), _allowed()) == (
        "removed",
        Change("adv-1", "aud-1", "remove", None),
    )
    late_add = member(uploaded_at=T0 + 10)  # uploaded before the remove, arrived after it
    assert memberships.apply(late_add, _allowed()) == ("superseded", None)
    assert memberships.state("adv-1", "aud-1") == "removed"
    assert memberships.apply(member(uploaded_at=T0 + 30), _allowed()) == (
        "added",
        Change("adv-1", "aud-1", "add", None),
    )
    assert memberships.apply(member("remove", uploaded_at=T0 + 25), _allowed()) == (
        "superseded",
        None,
    )
    assert memberships.state("adv-1", "aud-1") == "active"


def test_a_remove_of_nothing_is_remembered_against_an_older_add() -> None:
    memberships = Memberships()

    assert memberships.apply(member("remove", uploaded_at=T0 + 5), _allowed()) == (
        "not_a_member",
        None,
    )
    assert memberships.apply(member(uploaded_at=T0), _allowed()) == ("superseded", None)
    assert list(memberships.follow_consent(False)) == []


def test_removed_memberships_are_forgotten_after_the_tombstone_time() -> None:
    memberships = Memberships()
    memberships.apply(member("remove", uploaded_at=T0), _allowed())
    memberships.apply(member(audience_id="aud-2", uploaded_at=T0 + TOMBSTONE_MS + 1), _allowed())

    assert memberships.state("adv-1", "aud-1") is None
    assert memberships.state("adv-1", "aud-2") == "active"
