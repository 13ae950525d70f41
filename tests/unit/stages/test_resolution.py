"""Intake, deduplication and identity resolution over in-memory tables."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from pipeline import catalogue
from pipeline.core.trust import TRUST_HEADER
from pipeline.runtime.stage import Forward
from schemas import codec
from schemas.internal import HOP_HEADER, Hop
from tests.unit.factories import NOW, USER, sdk_event, tag_event, widget_event
from tests.unit.stages.chain import Chain, audit_of, destinations, partition_of

PRODUCED_MS = (NOW - 30) * 1000
BEFORE_MS = (NOW - 120) * 1000
"""Links and consent acknowledged two minutes before the events were produced."""
EM = "a" * 64
PH = "b" * 64
OTHER = "user-2"
US_ADULT: dict[str, Any] = {"profile": {"country": "US", "birth_year": 1980}}


def _consenting(chain: Chain, *users: str) -> None:
    for user in users:
        chain.consent(user, BEFORE_MS, **US_ADULT)


def _tag(**user_data: Any) -> dict[str, Any]:
    """A tag event naming nobody, with only the match keys given."""
    return tag_event(user_id=None, user_data={"em": [], "click_id": None, **user_data})


def _hop(chain: Chain, topic: catalogue.Topic) -> Hop:
    [forward] = [f for f in chain.forwards if f.topic is topic][-1:]
    return Hop.model_validate_json(dict(forward.headers())[HOP_HEADER])


@pytest.mark.parametrize(
    ("event", "key", "match"),
    [
        (_tag(em=[EM]), f"em:{EM}", "em"),
        (_tag(ph=[PH]), f"ph:{PH}", "ph"),
        (_tag(click_id="clk-1"), "click:clk-1", "click"),
        (
            sdk_event(user_id=None, user_data={"hashed_maids": ["c" * 64]}),
            "maid:" + "c" * 64,
            "maid",
        ),
        (widget_event(user_id=None, session_id="sess-1"), "session:sess-1", "session"),
    ],
)
def test_each_kind_of_match_key_resolves_a_consenting_user(
    event: dict[str, Any], key: str, match: str
) -> None:
    chain = Chain()
    chain.link(key, USER, BEFORE_MS)
    _consenting(chain, USER)
    source = (
        "sdk"
        if "device" in event or "app" in event
        else ("widget" if "widget_type" in event else "tag")
    )

    outputs = chain.raw(source, event, PRODUCED_MS)

    assert audit_of(outputs)["identity"] == {"match": match, "conflict": False}
    assert "ads" in destinations(outputs)
    assert chain.stats.resolutions[match] == 1


def test_an_unknown_key_leaves_the_event_anonymous() -> None:
    chain = Chain()

    outputs = chain.raw("tag", _tag(em=[EM]), PRODUCED_MS)

    audit = audit_of(outputs)
    assert audit["identity"]["match"] == "none"
    assert "subject.anonymous" in audit["reasons"]
    assert destinations(outputs) == ["audit", "deidentified"]
    assert chain.stats.unresolved["tag"] == 1


def test_keys_are_tried_in_the_spec_order_and_a_disagreeing_key_is_a_conflict() -> None:
    chain = Chain(partitions=5)
    chain.link(f"em:{EM}", OTHER, BEFORE_MS)
    chain.link("click:clk-1", USER, BEFORE_MS)
    _consenting(chain, USER, OTHER)

    outputs = chain.raw("tag", _tag(em=[EM], click_id="clk-1"), PRODUCED_MS)

    audit = audit_of(outputs)
    assert audit["identity"] == {"match": "click", "conflict": True}
    [activity] = [o for o in outputs if o.destination == "personalization"]
    assert activity.record["user_id"] == USER
    assert chain.stats.identity_conflicts == 1


def test_keys_on_the_same_partition_are_looked_up_in_one_hop_others_in_their_own() -> None:
    chain = Chain(partitions=3)
    emails = [f"{n:064x}" for n in range(6)]
    keys = [f"em:{e}".encode() for e in emails]
    partitions = [partition_of(k, 3) for k in keys]
    expected_hops = 1 + sum(a != b for a, b in itertools.pairwise(partitions))

    chain.raw("tag", _tag(em=emails), PRODUCED_MS)

    hops = [f.key for f in chain.forwards if f.topic is catalogue.BY_MATCH_KEY]
    assert hops[0] == keys[0]
    assert len(hops) == expected_hops < len(keys)
    assert [partition_of(k, 3) for k in hops] == [
        p for i, p in enumerate(partitions) if i == 0 or p != partitions[i - 1]
    ]


def test_a_link_acknowledged_after_the_event_was_produced_does_not_govern_it() -> None:
    chain = Chain()
    _consenting(chain, USER, OTHER)
    chain.link(f"em:{EM}", OTHER, BEFORE_MS)
    chain.link(f"em:{EM}", USER, PRODUCED_MS + 5_000, linked_at=2)  # moved, later

    earlier = chain.raw("tag", _tag(em=[EM]), PRODUCED_MS)
    later = chain.raw("tag", _tag(em=[EM]) | {"event_id": "e-later"}, PRODUCED_MS + 10_000)

    [first] = [o for o in earlier if o.destination == "personalization"]
    [second] = [o for o in later if o.destination == "personalization"]
    assert first.record["user_id"] == OTHER
    assert second.record["user_id"] == USER


def test_an_email_moved_to_another_account_never_names_the_former_owner() -> None:
    chain = Chain()
    _consenting(chain, USER, OTHER)
    chain.link(f"em:{EM}", USER, BEFORE_MS)
    chain.link(f"em:{EM}", OTHER, BEFORE_MS + 1_000, linked_at=2)

    outputs = chain.raw("tag", _tag(em=[EM]), PRODUCED_MS)

    users = {o.record["user_id"] for o in outputs if o.destination in ("personalization", "ads")}
    assert users == {OTHER}


@pytest.mark.parametrize("unlink", ["tombstone", "deleted"])
def test_an_unlinked_key_names_nobody(unlink: str) -> None:
    chain = Chain()
    _consenting(chain, USER)
    chain.link(f"em:{EM}", USER, BEFORE_MS)
    if unlink == "tombstone":
        chain.link(f"em:{EM}", None, BEFORE_MS + 1_000)
    else:
        value = b'{"match_key":"em:%s","deleted":true,"linked_at":5}' % EM.encode()
        record = chain._input(
            catalogue.IDENTITY_LINKS,
            f"em:{EM}".encode(),
            value,
            BEFORE_MS + 1_000,
            partition_of(f"em:{EM}".encode(), chain.partitions),
        )
        chain.resolution.fold(record, NOW, chain.stats)

    outputs = chain.raw("tag", _tag(em=[EM]), PRODUCED_MS)

    assert audit_of(outputs)["identity"]["match"] == "none"


def test_resolution_never_widens_use_an_att_denied_event_stays_deidentified() -> None:
    chain = Chain()
    chain.link("maid:" + "c" * 64, USER, BEFORE_MS)
    _consenting(chain, USER)
    event = sdk_event(
        user_id=None,
        action_source="app_ios",
        user_data={"hashed_maids": ["c" * 64]},
        device={"device_id": "d1", "os_version": "17.5", "att_status": "denied"},
    )

    outputs = chain.raw("sdk", event, PRODUCED_MS)

    audit = audit_of(outputs)
    assert audit["identity"]["match"] == "maid"
    assert "device.att_not_authorized" in audit["reasons"]
    assert "personalization" not in destinations(outputs)
    assert "ads" not in destinations(outputs)


def test_a_user_id_counts_only_when_a_trusted_producer_signed_the_record() -> None:
    chain = Chain()
    _consenting(chain, USER)
    event = tag_event(user_data={"em": [EM]})

    untrusted = chain.raw("tag", event, PRODUCED_MS)
    lookups = len(chain.forwards)
    trusted = chain.raw("tag", event | {"event_id": "e-t"}, PRODUCED_MS, trusted=True)

    assert audit_of(untrusted)["identity"]["match"] == "none"
    assert chain.stats.untrusted_user_ids["tag"] == 1
    assert audit_of(trusted)["identity"]["match"] == "provided"
    assert "personalization" in destinations(trusted)
    skipped = chain.forwards[lookups:]
    assert [f.topic for f in skipped] == [catalogue.BY_EVENT, catalogue.BY_SUBJECT]


def test_a_forged_trust_header_does_not_count() -> None:
    chain = Chain()
    _consenting(chain, USER)
    record = chain._input(
        catalogue.RAW_TAG,
        None,
        b'{"event_id":"e","event_name":"lead","event_time":%d,"advertiser_id":"a","user_id":"%s"}'
        % (NOW - 30, USER.encode()),
        PRODUCED_MS,
        0,
        ((TRUST_HEADER, b"v1:" + b"0" * 64),),
    )

    [forward] = chain.intake.process(record, NOW, chain.stats)

    hop = Hop.model_validate_json(dict(forward.headers())[HOP_HEADER])  # type: ignore[union-attr]
    assert hop.trusted_user_id is None


def test_copies_of_an_event_are_deduplicated_wherever_they_were_produced() -> None:
    chain = Chain()
    chain.link(f"em:{EM}", USER, BEFORE_MS)
    _consenting(chain, USER)
    event = _tag(em=[EM])

    first = chain.raw("tag", event, PRODUCED_MS, partition=0)
    copy = chain.raw("sdk", event, PRODUCED_MS, partition=5, key=None)  # another producer

    assert "personalization" in destinations(first)
    assert destinations(copy) == ["audit"]
    assert audit_of(copy)["duplicate"] is True
    assert chain.stats.duplicates["sdk"] == 1


def test_a_raw_record_read_again_is_itself_not_a_copy() -> None:
    chain = Chain()
    chain.link(f"em:{EM}", USER, BEFORE_MS)
    _consenting(chain, USER)
    event = _tag(em=[EM])
    record = chain._input(catalogue.RAW_TAG, b"k", codec.dumps(event), PRODUCED_MS, 0)

    for _ in range(2):  # the same offset, read twice (an aborted batch)
        [forward] = chain.intake.process(record, NOW, chain.stats)
        assert isinstance(forward, Forward)
        assert forward.topic is catalogue.BY_EVENT
        dedup_input = chain._input(
            catalogue.BY_EVENT, forward.key, forward.value, NOW * 1000, 0, forward.headers()
        )
        [onward] = chain.dedup.process(dedup_input, NOW, chain.stats)
        hop = Hop.model_validate_json(dict(onward.headers())[HOP_HEADER])  # type: ignore[union-attr]
        assert hop.duplicate is False


def test_an_invalid_raw_record_goes_to_the_dlq_at_intake_and_nowhere_else() -> None:
    chain = Chain()

    outputs = chain.raw("tag", tag_event(event_name="not-an-event"), PRODUCED_MS)

    assert destinations(outputs) == ["dlq"]
    assert chain.forwards == []


def test_a_link_keyed_by_another_match_key_is_rejected() -> None:
    chain = Chain()
    value = b'{"match_key":"em:%s","user_id":"u","linked_at":1}' % EM.encode()
    record = chain._input(catalogue.IDENTITY_LINKS, b"click:x", value, BEFORE_MS, 0)

    [rejected] = chain.resolution.fold(record, NOW, chain.stats)

    assert rejected.record["detail"] == "key: not_match_key"
    assert chain.stats.dlq["identity", "schema_violation"] == 1
