"""Customer lists through every stage: memberships follow consent."""

from __future__ import annotations

from typing import Any

from pipeline.core.route import Output
from tests.unit.factories import NOW, USER
from tests.unit.stages.chain import Chain, audit_of, destinations

EM = "a" * 64
BEFORE_MS = (NOW - 120) * 1000
US_ADULT: dict[str, Any] = {"profile": {"country": "US", "birth_year": 1980}}


def member(operation: str = "add", audience: str = "aud-1", **fields: Any) -> dict[str, Any]:
    return {
        "advertiser_id": "adv-1",
        "audience_id": audience,
        "operation": operation,
        "match_keys": {"em": [EM]},
        "uploaded_at": (NOW - 30) * 1000,
        **fields,
    }


def known(chain: Chain, **settings: Any) -> None:
    chain.link(f"em:{EM}", USER, BEFORE_MS)
    chain.consent(USER, BEFORE_MS, settings=settings, **US_ADULT)


def upload(chain: Chain, *members: dict[str, Any]) -> list[Output]:
    outputs = []
    for n, document in enumerate(members):
        outputs.extend(
            chain.raw(
                "audience",
                document | {"uploaded_at": NOW * 1000 - 30_000 + n},
                NOW * 1000 - 20_000 + n,
            )
        )
    return outputs


def audiences(outputs: list[Output]) -> list[tuple[str, str, str | None]]:
    return [
        (o.record["audience_id"], o.record["operation"], o.record["reason"])
        for o in outputs
        if o.destination == "audiences"
    ]


def test_a_consenting_member_is_added_and_audited() -> None:
    chain = Chain()
    known(chain)

    outputs = upload(chain, member())

    [record] = [o.record for o in outputs if o.destination == "audiences"]
    assert record["user_id"] == USER
    assert (record["operation"], record["reason"]) == ("add", None)
    audit = audit_of(outputs)
    assert audit["membership"] == {"audience_id": "aud-1", "operation": "add", "outcome": "added"}
    assert audit["identity"]["match"] == "em"
    assert audit["destinations"] == ["audiences"]
    assert EM not in str(audit)
    assert chain.stats.memberships["added"] == 1


def test_an_unmatched_member_is_audited_and_never_emitted() -> None:
    chain = Chain()

    outputs = upload(chain, member())

    assert destinations(outputs) == ["audit"]
    assert audit_of(outputs)["membership"]["outcome"] == "unmatched"


def test_a_denied_member_waits_and_a_grant_adds_it() -> None:
    chain = Chain()
    known(chain, personalization=False)

    denied = upload(chain, member())
    before = len(chain.outputs)
    chain.consent(USER, NOW * 1000, settings={"personalization": True})

    assert destinations(denied) == ["audit"]
    assert audit_of(denied)["membership"]["outcome"] == "denied"
    assert "account.personalization_off" in audit_of(denied)["reasons"]
    assert audiences(chain.outputs[before:]) == [("aud-1", "add", "consent.granted")]


def test_a_revocation_withdraws_every_membership_and_a_regrant_restores_them() -> None:
    chain = Chain()
    known(chain)
    upload(chain, member(), member(audience="aud-2"))

    before = len(chain.outputs)
    chain.consent(USER, NOW * 1000, settings={"ads_from_partner_info": False})
    withdrawn = audiences(chain.outputs[before:])
    before = len(chain.outputs)
    chain.consent(USER, NOW * 1000 + 1, settings={"ads_from_partner_info": True})
    restored = audiences(chain.outputs[before:])

    assert sorted(withdrawn) == [
        ("aud-1", "remove", "consent.revoked"),
        ("aud-2", "remove", "consent.revoked"),
    ]
    assert sorted(restored) == [
        ("aud-1", "add", "consent.granted"),
        ("aud-2", "add", "consent.granted"),
    ]
    assert chain.stats.membership_changes == {"consent.revoked": 2, "consent.granted": 2}


def test_the_advertisers_remove_after_a_withdrawal_emits_nothing_twice() -> None:
    chain = Chain()
    known(chain)
    upload(chain, member())
    chain.consent(USER, NOW * 1000, settings={"personalization": False})
    before = len(chain.outputs)

    outputs = upload(chain, member("remove"))
    chain.consent(USER, NOW * 1000 + 1, settings={"personalization": True})

    assert audit_of(outputs)["membership"]["outcome"] == "already_withdrawn"
    assert audiences(chain.outputs[before:]) == []


def test_a_deleted_account_loses_every_membership_for_good() -> None:
    chain = Chain()
    known(chain)
    upload(chain, member())
    before = len(chain.outputs)

    chain.consent(USER, NOW * 1000, deleted=True)

    assert audiences(chain.outputs[before:]) == [("aud-1", "remove", "consent.revoked")]
    later = upload(chain, member(audience="aud-3"))
    assert audit_of(later)["membership"]["outcome"] == "denied"
    assert "account.deleted" in audit_of(later)["reasons"]


def test_a_resent_upload_is_a_duplicate_and_changes_nothing() -> None:
    chain = Chain()
    known(chain)
    document = member()

    first = chain.raw("audience", document, NOW * 1000 - 20_000)
    again = chain.raw("audience", document, NOW * 1000 - 19_000, partition=4)

    assert audiences(first) == [("aud-1", "add", None)]
    assert destinations(again) == ["audit"]
    assert audit_of(again)["duplicate"] is True
    assert audit_of(again)["membership"]["outcome"] == "duplicate"


def test_a_limited_processing_upload_is_denied() -> None:
    chain = Chain()
    known(chain)

    outputs = upload(chain, member(opt_out_type="LDP"))

    assert audit_of(outputs)["reasons"] == ["event.ldp"]
    assert audiences(outputs) == []


def test_a_malformed_list_record_goes_to_the_dlq() -> None:
    chain = Chain()

    outputs = chain.raw("audience", member(match_keys={"em": ["not-a-hash"]}), NOW * 1000)

    assert destinations(outputs) == ["dlq"]
    assert outputs[0].record["reason"] == "schema_violation"
    assert chain.stats.dlq["audience", "schema_violation"] == 1
