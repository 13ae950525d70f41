"""The fault-injection suite's checkers catch what they must: lost, doubled and leaked records,
outputs after a revocation, events named after a key's former owner, decisions the replay
does not give, records carried twice between the stages, canaries where the product forbids them,
unbounded metric labels."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from pipeline import catalogue
from pipeline.core.audience import Memberships, decide_membership
from pipeline.core.consent import ConsentState, apply_change
from pipeline.core.deidentify import Pseudonymizer
from pipeline.core.parse import Rejected, parse_audience_member, parse_consent_change, parse_event
from pipeline.core.policy import decide
from pipeline.core.route import (
    Origin,
    audience_record,
    audit_record,
    dlq_record,
    membership_audit_record,
    route,
)
from pipeline.core.trust import TRUST_HEADER, trust_signature
from pipeline.settings import Settings
from schemas import codec
from schemas.audience import AudienceMember
from schemas.internal import HOP_HEADER
from tests.chaos.ledger import Invariant, LedgerChecker
from tests.chaos.load import Acknowledged
from tests.chaos.observe import MetricsCheck, closed_label_sets, median_bucket
from tests.chaos.pii import CanarySet, PiiScanner
from tests.chaos.readback import Message
from tests.chaos.scenarios import CONTENDER_INVARIANTS

NOW_MS = 1_700_000_000_000
USERS = ("user-1", "user-2")
TRUST_KEY = b"unit-test-trust-key-0123456789abcdef"


def settings() -> Settings:
    return Settings.model_validate(
        {
            "hmac_key": "unit-test-hmac-key-0123456789abcdef",
            "hmac_key_id": "t",
            "topic_prefix": "",
            "trust_key": TRUST_KEY.decode(),
        }
    )


def signature(value: bytes) -> tuple[tuple[str, bytes], ...]:
    return ((TRUST_HEADER, trust_signature(TRUST_KEY, value)),)


def consent(user: str, at_ms: int, *, personalization: bool = True) -> bytes:
    return codec.dumps(
        {
            "user_id": user,
            "changed_at": at_ms,
            "settings": {
                "personalization": personalization,
                "ads_from_partner_info": True,
                "partner_sharing": True,
            },
            "profile": {"country": "US", "birth_year": 1980},
        }
    )


def event(event_id: str, user: str) -> bytes:
    return codec.dumps(
        {
            "event_id": event_id,
            "event_name": "add_to_cart",
            "event_time": NOW_MS // 1000 - 5,
            "action_source": "web",
            "advertiser_id": "adv-1",
            "user_id": user,
            "browser": {"cookie_id": f"ck-{event_id}", "dnt": False, "gpc": False},
            "custom_data": {"currency": "USD", "value": 2.0},
        }
    )


@dataclass
class World:
    """Inputs and the outputs a correct pipeline writes for them, as read-back messages."""

    consent: list[Message] = field(default_factory=list)
    links: list[Message] = field(default_factory=list)
    raw: list[Message] = field(default_factory=list)
    outputs: dict[str, list[Message]] = field(default_factory=dict)
    hops: list[Message] = field(default_factory=list)

    def feed(self, checker: LedgerChecker) -> list[Invariant]:
        for msg in self.consent:
            checker.add_consent(msg)
        for msg in self.links:
            checker.add_identity(msg)
        for msg in self.outputs.get("dlq", []):
            checker.add_dlq(msg)
        for msg in self.raw:
            checker.add_raw(msg)
        handlers: dict[str, Callable[[Message], None]] = {
            catalogue.AUDIT.name: checker.add_audit,
            "dlq": checker.add_dlq,
            catalogue.PERSONALIZATION.name: checker.add_identified,
            catalogue.ADS.name: checker.add_identified,
            catalogue.PARTNER_SHARE.name: checker.add_identified,
            catalogue.MEASUREMENT.name: checker.add_measurement,
            catalogue.DEIDENTIFIED.name: checker.add_deidentified,
            catalogue.AGGREGATES.name: checker.add_aggregate,
        }
        for topic, messages in self.outputs.items():
            for msg in messages if topic != "dlq" else []:
                handlers[topic](msg)
        for msg in self.hops:
            checker.add_hop(msg)
        return checker.invariants(Acknowledged())

    def hop(self, origin: Origin) -> None:
        """The records a correct pipeline carries a raw record in between its stages."""
        header = codec.dumps(
            {
                "origin": {
                    "topic": origin.topic,
                    "partition": origin.partition,
                    "offset": origin.offset,
                }
            }
        )
        for topic in (catalogue.BY_EVENT, catalogue.BY_SUBJECT):
            self.hops.append(
                Message(topic.name, 0, len(self.hops), NOW_MS, b"k", b"{}", ((HOP_HEADER, header),))
            )

    def output(self, topic: str, key: bytes | None, record: dict[str, Any]) -> None:
        messages = self.outputs.setdefault(topic, [])
        messages.append(Message(topic, 0, len(messages), NOW_MS, key, codec.dumps(record)))


def simulate(
    consents: list[tuple[str, bytes, int]],
    events: list[tuple[bytes, int]],
    links: list[tuple[str, str, int]] = (),  # type: ignore[assignment]
) -> World:
    """A correct pipeline: each event decided under the consent appended before it.

    Events that carry a `user_id` come signed by a trusted producer; the others name
    their person by an email hash, which `links` ((key, user, appended at)) resolve.
    """
    s = settings()
    pseudonymizer = Pseudonymizer(s.require_hmac_key(), s.hmac_key_id)
    world = World()
    for offset, (user, value, ts) in enumerate(consents):
        world.consent.append(
            Message(catalogue.CONSENT_CHANGES.name, 0, offset, ts, user.encode(), value)
        )
    for offset, (key, user, ts) in enumerate(links):
        link = codec.dumps({"match_key": key, "user_id": user, "linked_at": ts})
        world.links.append(
            Message(catalogue.IDENTITY_LINKS.name, 0, offset, ts, key.encode(), link)
        )
    for offset, (value, ts) in enumerate(events):
        parsed = parse_event("tag", value, now=ts / 1000, key=b"k")
        msg = Message(catalogue.RAW_TAG.name, 0, offset, ts, b"k", value, signature(value))
        if isinstance(parsed, Rejected):
            msg = replace(msg, key=None)
            world.raw.append(msg)
            out = dlq_record(
                parsed,
                data=value,
                key=None,
                origin=Origin(catalogue.RAW_TAG.name, 0, offset),
                received_at=0,
            )
            world.output("dlq", out.key, out.record)
            continue
        if parsed.user_id is None:  # resolved by the link of its email, as of production
            # (a link of the event's own millisecond governs it: it may have come first)
            owners = [u for k, u, at in links if k == f"em:{parsed.user_data.em[0]}" and at <= ts]  # type: ignore[union-attr]
            parsed = parsed.model_copy(update={"user_id": owners[-1] if owners else None})
        world.raw.append(msg)
        world.hop(Origin(catalogue.RAW_TAG.name, 0, offset))
        state: ConsentState | None = None
        for other in world.consent:
            change = parse_consent_change(other.value, key=other.key)
            assert not isinstance(change, Rejected)
            if change.user_id == parsed.user_id and other.timestamp < ts:
                state = apply_change(state, change)
        match = "none" if parsed.user_id is None else "provided"
        if parsed.user_id is not None and "user_id" not in codec.loads(value):
            match = "em"
        decision = decide(parsed, state, s.policy())
        outputs = route(parsed, decision, state, pseudonymizer)
        for out in outputs:
            world.output(catalogue.BY_DESTINATION[out.destination].name, out.key, out.record)
        audit = audit_record(
            parsed,
            decision,
            pseudonymizer=pseudonymizer,
            destinations=[o.destination for o in outputs],
            duplicate=False,
            origin=Origin(catalogue.RAW_TAG.name, 0, offset),
            received_at=ts / 1000,
            decided_at=ts / 1000,
            identity=(match, False),  # type: ignore[arg-type]
        )
        world.output(catalogue.AUDIT.name, audit.key, audit.record)
    return world


def verdicts(world: World) -> dict[str, Invariant]:
    return {i.name: i for i in world.feed(LedgerChecker(settings()))}


@pytest.fixture
def revocation_world() -> World:
    """user-1 granted, an event, revoked, an event; user-2 granted, two events; a pill."""
    return simulate(
        [
            ("user-1", consent("user-1", 1), NOW_MS - 10_000),
            ("user-2", consent("user-2", 1), NOW_MS - 10_000),
            ("user-1", consent("user-1", 2, personalization=False), NOW_MS - 5_000),
        ],
        [
            (event("e1", "user-1"), NOW_MS - 8_000),
            (event("e2", "user-1"), NOW_MS - 1_000),
            (event("e3", "user-2"), NOW_MS - 1_000),
            (event("e4", "user-2"), NOW_MS),
            (b"{not json", NOW_MS),
        ],
    )


def test_a_correct_pipeline_passes_every_invariant(revocation_world: World) -> None:
    results = verdicts(revocation_world)
    assert all(i.passed for i in results.values()), results
    assert results["ledger.exactly_once"].counts["raw_inputs"] == 5
    assert results["ledger.exactly_once"].counts["dlq_records"] == 1
    assert results["revocation_barrier"].counts["events_after_a_withdrawal"] == 1
    assert results["revocation_barrier"].counts["events_with_a_purpose_denied_at_production"] == 1


def test_a_lost_audit_fails_the_ledger(revocation_world: World) -> None:
    revocation_world.outputs[catalogue.AUDIT.name].pop(0)
    results = verdicts(revocation_world)
    assert not results["ledger.exactly_once"].passed
    assert results["ledger.exactly_once"].counts["lost"] == 1


def test_an_input_audited_twice_fails_the_ledger_and_outputs(revocation_world: World) -> None:
    audits = revocation_world.outputs[catalogue.AUDIT.name]
    audits.append(replace(audits[0], offset=len(audits)))
    results = verdicts(revocation_world)
    assert results["ledger.exactly_once"].counts["accounted_twice"] == 1
    assert results["outputs.exactly_once"].counts["events_audited_new_twice"] == 1


def test_an_identified_output_written_twice_fails(revocation_world: World) -> None:
    ads = revocation_world.outputs[catalogue.ADS.name]
    ads.append(replace(ads[0], offset=len(ads)))
    results = verdicts(revocation_world)
    assert not results["outputs.exactly_once"].passed
    assert results["outputs.exactly_once"].counts["identified_written_twice"] == 1


def test_a_lost_measurement_record_fails(revocation_world: World) -> None:
    revocation_world.outputs[catalogue.MEASUREMENT.name].pop()
    assert verdicts(revocation_world)["outputs.exactly_once"].counts["measurement_missing"] == 1


def test_an_output_after_an_acknowledged_revocation_is_a_leak(revocation_world: World) -> None:
    """e2 came after user-1's revocation: emitting it, with an audit that agrees, fails."""
    world = revocation_world
    audits = world.outputs[catalogue.AUDIT.name]
    index = next(i for i, m in enumerate(audits) if codec.loads(m.value or b"")["event_id"] == "e2")
    record = codec.loads(audits[index].value or b"")
    record["outcomes"]["personalization"] = "allow"
    record["destinations"] = ["personalization", "deidentified"]
    audits[index] = replace(audits[index], value=codec.dumps(record))
    e1 = next(
        m
        for m in world.outputs[catalogue.PERSONALIZATION.name]
        if codec.loads(m.value or b"")["event_id"] == "e1"
    )
    leaked = codec.loads(e1.value or b"")
    leaked["event_id"] = "e2"
    world.output(catalogue.PERSONALIZATION.name, e1.key, leaked)
    results = verdicts(world)
    barrier = results["revocation_barrier"]
    assert not barrier.passed
    assert barrier.counts["audit_allowed_a_denied_purpose"] == 1
    assert barrier.counts["identified_output_after_revocation"] == 1
    assert results["no_leak.audited_decision"].passed  # the audit itself was consistent


def test_an_output_its_audit_denies_is_a_leak(revocation_world: World) -> None:
    world = revocation_world
    audits = world.outputs[catalogue.AUDIT.name]
    index = next(i for i, m in enumerate(audits) if codec.loads(m.value or b"")["event_id"] == "e3")
    record = codec.loads(audits[index].value or b"")
    record["outcomes"]["ads"] = "deny"
    audits[index] = replace(audits[index], value=codec.dumps(record))
    results = verdicts(world)
    no_leak = results["no_leak.audited_decision"]
    assert not no_leak.passed
    assert no_leak.counts["identified_outputs_no_audit_allows"] >= 1


def test_an_acknowledged_record_missing_from_the_log_fails(revocation_world: World) -> None:
    checker = LedgerChecker(settings())
    revocation_world.feed(checker)
    acknowledged = Acknowledged(ranges={(catalogue.RAW_TAG.name, 0): [(0, 5), (40, 1)]})
    result = {i.name: i for i in checker.invariants(acknowledged)}["ledger.acknowledged_in_log"]
    assert not result.passed
    assert result.counts["missing_from_log"] == 1


def test_canaries_are_found_only_where_forbidden() -> None:
    canaries = CanarySet("unit01", users=2)
    user = canaries.users[0]
    scanner = PiiScanner(canaries)
    scanner.scan(
        "personalization", user.user_id.encode(), b'{"user_id": "%s"}' % user.user_id.encode()
    )
    assert sum(scanner.hits.values()) == 0
    scanner.scan("deidentified", None, b'{"ip": "%s"}' % user.ipv4.encode())
    scanner.scan("audit", None, user.values()["email_sha256"].encode())
    scanner.scan("worker_log", b"event for user-12345 rejected")
    scanner.scan_dlq(codec.dumps({"detail": f"event_time: {user.email}"}))
    assert scanner.hits == {
        ("deidentified", "ipv4"): 1,
        ("audit", "email_sha256"): 1,
        ("worker_log", "synthetic_user_id"): 1,
        ("dlq.detail", "email"): 1,
    }


def test_canary_events_carry_every_identifier_kind_between_them() -> None:
    import random

    canaries = CanarySet("unit02", users=3, trust_key=TRUST_KEY)
    rng = random.Random(1)
    blob = b" ".join(canaries.event(rng).value or b"" for _ in range(60))
    found = {
        kind
        for kind, values in canaries.values().items()
        if any(v.encode() in blob for v in values)
    }
    assert found >= {
        "user_id",
        "ipv4",
        "ipv6",
        "device_id",
        "advertising_id",
        "cookie_id",
        "click_id",
    }


def test_metric_labels_outside_closed_sets_fail_and_series_are_bounded() -> None:
    check = MetricsCheck(settings())
    good = (
        "# TYPE pipeline_events_in_total counter\n"
        'pipeline_events_in_total{source="tag"} 3.0\n'
        "# TYPE pipeline_decisions_total counter\n"
        'pipeline_decisions_total{purpose="ads",outcome="allow"} 2.0\n'
    )
    check.add("end:w0", good)
    assert check.invariant().passed
    sets = closed_label_sets(settings())
    assert check.bound() == len(sets["source"]) + len(sets["purpose"]) * len(sets["outcome"])
    check.add("end:w1", good + 'pipeline_events_in_total{source="user-77"} 1.0\n')
    result = check.invariant()
    assert not result.passed
    assert result.examples == ["source=<7 characters> x1"]


def test_median_bucket() -> None:
    assert median_bucket({0.1: 1.0, 0.5: 3.0, 1.0: 4.0, float("inf"): 4.0}) == 0.5
    assert median_bucket({}) is None


def test_a_copy_read_on_another_partition_and_audited_as_new_fails(revocation_world: World) -> None:
    """The same event under another key lands elsewhere; audited as new again, it breaks dedup."""
    world = revocation_world
    audits = world.outputs[catalogue.AUDIT.name]
    first = codec.loads(audits[0].value or b"")
    world.raw.append(replace(world.raw[0], partition=3, key=b"someone-else"))
    first["origin"]["partition"] = 3
    first["destinations"] = ["deidentified"]
    world.output(catalogue.AUDIT.name, audits[0].key, first)
    deidentified = world.outputs[catalogue.DEIDENTIFIED.name]
    world.output(
        catalogue.DEIDENTIFIED.name, deidentified[0].key, codec.loads(deidentified[0].value or b"")
    )
    outputs = verdicts(world)["outputs.exactly_once"]
    assert not outputs.passed
    assert outputs.counts["events_audited_new_twice"] == 1
    assert outputs.counts["of_which_across_partitions"] == 1


def test_a_consent_change_the_pipeline_rejected_governs_nothing(revocation_world: World) -> None:
    world = revocation_world
    revocation = world.consent[2]
    rejected = dlq_record(
        Rejected("schema_violation", "key: test"),
        data=revocation.value,
        key=revocation.key,
        origin=Origin(catalogue.CONSENT_CHANGES.name, 0, revocation.offset),
        received_at=0,
    )
    world.output("dlq", rejected.key, rejected.record)
    barrier = verdicts(world)["revocation_barrier"]
    assert barrier.counts["consent_changes_in_dlq"] == 1
    assert barrier.counts["events_after_a_withdrawal"] == 0


EMAIL = "e" * 64


def unnamed(event_id: str) -> bytes:
    """An event naming its person by an email hash only."""
    document = codec.loads(event(event_id, "nobody"))
    del document["user_id"]
    document["user_data"] = {"em": [EMAIL]}
    return codec.dumps(document)


@pytest.fixture
def moved_world() -> World:
    """The email belongs to user-1, then moves to user-2; an event before and after."""
    return simulate(
        [(u, consent(u, 1), NOW_MS - 20_000) for u in USERS],
        [(unnamed("before"), NOW_MS - 8_000), (unnamed("after"), NOW_MS - 1_000)],
        [(f"em:{EMAIL}", "user-1", NOW_MS - 10_000), (f"em:{EMAIL}", "user-2", NOW_MS - 5_000)],
    )


def test_events_resolved_as_of_their_production_pass(moved_world: World) -> None:
    results = verdicts(moved_world)

    assert all(i.passed for i in results.values()), results
    assert results["identity.as_of_production"].counts["audits_checked"] == 2
    assert results["decisions.match_replay"].counts["events_replayed"] >= 1


def test_an_event_named_after_the_former_owner_of_a_key_fails(moved_world: World) -> None:
    pseudonymizer = Pseudonymizer(settings().require_hmac_key(), "t")
    audits = moved_world.outputs[catalogue.AUDIT.name]
    index = next(i for i, m in enumerate(audits) if b'"after"' in (m.value or b""))
    record = codec.loads(audits[index].value or b"")
    record["user_key"] = pseudonymizer.user_key("user-1")
    audits[index] = replace(audits[index], value=codec.dumps(record))

    identity = verdicts(moved_world)["identity.as_of_production"]

    assert not identity.passed
    assert identity.counts["audits_naming_another_subject"] == 1


@pytest.fixture
def linked_in_its_millisecond_world() -> World:
    """The email is first linked in the very millisecond the event is produced."""
    return simulate(
        [(u, consent(u, 1), NOW_MS - 20_000) for u in USERS],
        [(unnamed("same-ms"), NOW_MS - 5_000), (unnamed("later"), NOW_MS - 1_000)],
        [(f"em:{EMAIL}", "user-1", NOW_MS - 5_000)],
    )


def test_an_event_produced_in_the_millisecond_its_key_was_linked_names_the_user(
    linked_in_its_millisecond_world: World,
) -> None:
    results = verdicts(linked_in_its_millisecond_world)

    assert all(i.passed for i in results.values()), results
    assert results["identity.as_of_production"].counts["audits_checked"] == 2


def test_an_anonymous_audit_of_an_event_whose_key_was_just_linked_fails(
    linked_in_its_millisecond_world: World,
) -> None:
    audits = linked_in_its_millisecond_world.outputs[catalogue.AUDIT.name]
    index = next(i for i, m in enumerate(audits) if b'"same-ms"' in (m.value or b""))
    record = codec.loads(audits[index].value or b"")
    record["user_key"] = Pseudonymizer(settings().require_hmac_key(), "t").user_key("anon:same-ms")
    audits[index] = replace(audits[index], value=codec.dumps(record))

    identity = verdicts(linked_in_its_millisecond_world)["identity.as_of_production"]

    assert not identity.passed


def test_a_decision_the_replay_does_not_give_fails(revocation_world: World) -> None:
    audits = revocation_world.outputs[catalogue.AUDIT.name]
    index = next(i for i, m in enumerate(audits) if b'"e4"' in (m.value or b""))
    record = codec.loads(audits[index].value or b"")
    record["outcomes"]["partner_sharing"] = "deny"
    audits[index] = replace(audits[index], value=codec.dumps(record))

    replay = verdicts(revocation_world)["decisions.match_replay"]

    assert not replay.passed
    assert replay.counts["decided_otherwise"] == 1


def test_a_raw_record_carried_twice_between_stages_fails(revocation_world: World) -> None:
    revocation_world.hops.append(revocation_world.hops[0])

    hops = verdicts(revocation_world)["hops.at_most_once"]

    assert not hops.passed
    assert hops.counts["by-event.carried_twice"] == 1


def member_world(audit_subject: str) -> World:
    """An email moves from user-1 (memberships denied) to user-2 at the very millisecond
    a list member naming it is produced; the pipeline attributes it to `audit_subject`."""
    s = settings()
    pseudonymizer = Pseudonymizer(s.require_hmac_key(), s.hmac_key_id)
    at = NOW_MS - 5_000
    world = simulate(
        [
            ("user-1", consent("user-1", 1, personalization=False), NOW_MS - 20_000),
            ("user-2", consent("user-2", 1), NOW_MS - 20_000),
        ],
        [],
        [(f"em:{EMAIL}", "user-1", NOW_MS - 10_000), (f"em:{EMAIL}", "user-2", at)],
    )
    value = codec.dumps(
        {
            "advertiser_id": "adv-1",
            "audience_id": "aud-1",
            "operation": "add",
            "match_keys": {"em": [EMAIL]},
            "uploaded_at": at,
        }
    )
    world.raw.append(Message(catalogue.RAW_AUDIENCE.name, 0, 0, at, b"k", value))
    origin = Origin(catalogue.RAW_AUDIENCE.name, 0, 0)
    world.hop(origin)
    member = parse_audience_member(value)
    assert isinstance(member, AudienceMember)
    state = None
    for msg in world.consent:
        parsed = parse_consent_change(msg.value, key=msg.key)
        assert not isinstance(parsed, Rejected)
        if parsed.user_id == audit_subject:
            state = apply_change(state, parsed)
    decision = decide_membership(member, audit_subject, state, s.policy())
    outcome, change = Memberships().apply(member, decision)
    if change is not None:
        out = audience_record(change, audit_subject, decision)
        world.output(catalogue.AUDIENCES.name, out.key, out.record)
    audit = membership_audit_record(
        member,
        decision,
        subject=audit_subject,
        outcome=outcome,
        emitted=change is not None,
        pseudonymizer=pseudonymizer,
        duplicate=False,
        identity=("em", False),
        origin=origin,
        received_at=at / 1000,
        decided_at=at / 1000,
    )
    world.output(catalogue.AUDIT.name, audit.key, audit.record)
    return world


def feed_audiences(world: World) -> dict[str, Invariant]:
    checker = LedgerChecker(settings())
    for msg in world.outputs.pop(catalogue.AUDIENCES.name, []):
        checker.add_audience(msg)
    return {i.name: i for i in world.feed(checker)}


@pytest.mark.parametrize("subject", ["user-1", "user-2"])
def test_a_member_whose_key_moved_at_its_millisecond_may_name_either_owner(subject: str) -> None:
    memberships = feed_audiences(member_world(subject))["memberships.follow_consent"]

    assert memberships.passed, memberships
    assert memberships.counts["members_subject_unclear"] == 1
    assert memberships.counts["audience_records"] == (1 if subject == "user-2" else 0)


def test_an_unclear_member_attributed_to_neither_owner_fails() -> None:
    memberships = feed_audiences(member_world("user-3"))["memberships.follow_consent"]

    assert not memberships.passed
    assert memberships.counts["unclear_audit_names_no_candidate"] == 1


def test_a_contenders_outputs_are_checked_under_its_own_prefix(revocation_world: World) -> None:
    """A benchmark contender reads `<prefix>raw.tag` and writes `<prefix><name>.<topic>`."""
    for messages in revocation_world.outputs.values():
        messages[:] = [replace(m, topic=f"p.faust_batched.{m.topic}") for m in messages]
    revocation_world.raw[:] = [replace(m, topic=f"p.{m.topic}") for m in revocation_world.raw]
    revocation_world.hops.clear()
    prefixed = settings().model_copy(update={"topic_prefix": "p."})

    def check() -> dict[str, Invariant]:
        checker = LedgerChecker(prefixed, outputs_prefix="p.faust_batched.")
        return {i.name: i for i in revocation_world.feed(checker)}

    results = check()
    harness_own = {"pipeline.caught_up", "workers.no_crash", "pii.canaries"}
    assert set(CONTENDER_INVARIANTS) - harness_own <= set(results)
    assert all(results[name].passed for name in CONTENDER_INVARIANTS if name in results), results
    assert results["outputs.exactly_once"].counts[catalogue.PERSONALIZATION.name] > 0
    revocation_world.outputs[catalogue.AUDIT.name].pop(0)
    assert check()["ledger.exactly_once"].counts["lost"] == 1
