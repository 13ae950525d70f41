"""The ledger checker: every output read back (`read_committed`) and held to the guarantees.

Invariants, each a pass/fail with counts and a few examples (positions and event ids,
never personal data):

- `ledger.exactly_once`: every raw input offset is the origin of exactly one
  audit or DLQ record; no audit or DLQ record claims an offset that does not exist; a
  `consent.changes` record reaches the DLQ at most once.
- `ledger.acknowledged_in_log`: every record the load's producer saw acknowledged is in
  the log (so "every input" includes everything Kafka confirmed).
- `outputs.exactly_once`: each identified output (personalization, ads, partner_share;
  identified by advertiser, event id and the HMAC of the user id) appears exactly as often
  as first-time (non-duplicate) audits list it; measurement and de-identified records
  match, as multisets, the audits listing them; each (advertiser, event id, subject) is
  audited as new exactly once, wherever its copies were read from, and duplicates
  emit nothing.
- `no_leak.audited_decision`: no audit lists a destination its own outcome denies,
  and no identified output exists that no audit of its event allows.
- `revocation_barrier`: for every event of a user who ever withdrew consent, the
  consent states the user may have had when the event was produced (changes Kafka
  appended before it; a change in the same millisecond counts both ways) are folded from
  `consent.changes`; a purpose that every such state denies (by the policy core, and by
  the account rules restated independently here) must be denied in the event's audit
  and never emitted identified. A change the pipeline sent to the DLQ is left out (and
  counted): it never governed anything.
- `identity.as_of_production`: every audit names the subject the ledger resolves on
  its own (`tests.chaos.identity`): the user a trusted producer signed, else the first
  match key whose link, folded from `identity.links` up to the moment the raw record was
  produced, names someone. An email moved to another account before an event therefore
  never attributes the event to its former owner.
- `decisions.match_replay`: an event whose subject's consent and whose keys' links did not
  change after it was produced is decided exactly as the policy core decides it under
  the state of that moment, whatever partition or partitioner its record came through.
- `hops.at_most_once`: no raw record is carried twice on an internal topic between the
  stages (a hop to a partition of the same worker is processed in its transaction and
  not written at all: the report counts the audits decided so).
- `memberships.follow_consent`: replaying the advertisers' list records in
  upload order (each resolved as of its production, copies ignored) and every user's
  final consent gives exactly the memberships `activity.audiences` leaves active; and
  every `add` it emitted was allowed by the consent state it names (so nothing is
  re-added without a re-grant). A member whose key changed owner at its very millisecond
  may rightly belong to either owner: its audit must name one of them, and that one is
  replayed.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from pipeline import catalogue
from pipeline.core.audience import allows_memberships, member_id, member_keys
from pipeline.core.consent import ConsentState, apply_change
from pipeline.core.deidentify import Pseudonymizer
from pipeline.core.parse import (
    ParseLimits,
    Rejected,
    parse_audience_member,
    parse_consent_change,
    parse_event,
)
from pipeline.core.policy import Decision, PolicyConfig, decide
from pipeline.core.trust import TRUST_HEADER, is_trusted
from pipeline.settings import Settings
from schemas import codec
from schemas.audience import AudienceMember
from schemas.consent import ConsentChange
from schemas.events import Event
from schemas.internal import HOP_HEADER
from tests.chaos.identity import UNCLEAR, Links, Unclear
from tests.chaos.load import Acknowledged
from tests.chaos.pii import PiiScanner
from tests.chaos.readback import Message, read_topic

PERSONALIZATION: Final = 1
ADS: Final = 2
SHARING: Final = 4
MEASUREMENT: Final = 8
"""Identified measurement."""
DEIDENTIFIED: Final = 16

DESTINATION_BITS: Final[Mapping[str, int]] = MappingProxyType(
    {
        "personalization": PERSONALIZATION,
        "ads": ADS,
        "partner_share": SHARING,
        "measurement": MEASUREMENT,
        "deidentified": DEIDENTIFIED,
    }
)
CONSENT_TOPIC: Final = catalogue.CONSENT_CHANGES.name
IDENTITY_TOPIC: Final = catalogue.IDENTITY_LINKS.name
TABLE_TOPICS: Final = (CONSENT_TOPIC, IDENTITY_TOPIC)
RAW_TOPICS: Final = tuple(topic.name for topic in catalogue.RAW.values())
HOP_TOPICS: Final = (catalogue.BY_EVENT, catalogue.BY_SUBJECT)
IDENTIFIED_TOPICS: Final[Mapping[str, str]] = MappingProxyType(
    {
        topic.name: topic.destination
        for topic in (catalogue.PERSONALIZATION, catalogue.ADS, catalogue.PARTNER_SHARE)
        if topic.destination is not None
    }
)
MAX_EXAMPLES: Final = 5

Identity = tuple[str, str, str]
"""(advertiser id or "", event id, user_key): one event, as dedup sees it."""
Position = tuple[str, int, int]
"""(logical topic, partition, offset)."""


@dataclass(frozen=True)
class Invariant:
    """One checked guarantee: whether it held, counts, and a few examples if it did not."""

    name: str
    passed: bool
    counts: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "counts": self.counts, "examples": self.examples}


@dataclass(slots=True)
class _Audit:
    position: Position
    identity: Identity
    """(advertiser, event id, user_key): whom the outputs of this event name."""
    duplicate: bool
    denied: int
    destinations: int
    source: str
    advertiser_id: str
    event_time: int


@dataclass
class _Offsets:
    """Per-partition byte arrays indexed by offset: input present, times accounted for."""

    present: dict[tuple[str, int], bytearray] = field(default_factory=dict)
    accounted: dict[tuple[str, int], bytearray] = field(default_factory=dict)

    @staticmethod
    def _bump(arrays: dict[tuple[str, int], bytearray], key: tuple[str, int], offset: int) -> None:
        array = arrays.get(key)
        if array is None:
            array = arrays[key] = bytearray()
        if offset >= len(array):
            array.extend(bytes(offset + 1 - len(array) + 1024))
        if array[offset] < 255:
            array[offset] += 1

    def input(self, topic: str, partition: int, offset: int) -> None:
        self._bump(self.present, (topic, partition), offset)

    def account(self, topic: str, partition: int, offset: int) -> None:
        self._bump(self.accounted, (topic, partition), offset)

    def count(self, key: tuple[str, int], offset: int, *, accounted: bool) -> int:
        array = (self.accounted if accounted else self.present).get(key)
        return array[offset] if array is not None and offset < len(array) else 0


@dataclass
class _UserHistory:
    """A user's consent changes in the order Kafka appended them, and the states between."""

    timestamps: list[int] = field(default_factory=list)
    changes: list[ConsentChange] = field(default_factory=list)
    states: list[ConsentState | None] = field(default_factory=lambda: [None])
    withdrawals: int = 0


class LedgerChecker:
    """Collects what was read back; `invariants()` says whether the guarantees held.

    Feed all of `consent.changes` (`add_consent`) and `dlq` (`add_dlq`) before the raw
    topics (`add_raw`): events are checked against the consent history as they arrive, and
    a change the pipeline rejected to the DLQ is not part of that history.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        scanner: PiiScanner | None = None,
        limits: ParseLimits | None = None,
        outputs_prefix: str | None = None,
    ) -> None:
        self.settings = settings
        self.outputs_prefix = outputs_prefix
        """Where a benchmark contender's outputs are (`<prefix><contender>.`), if they are
        not the pipeline's own."""
        self.scanner = scanner
        self.policy: PolicyConfig = settings.policy()
        self.pseudonymizer = Pseudonymizer(settings.require_hmac_key(), settings.hmac_key_id)
        self.limits = limits or ParseLimits(max_bytes=settings.max_event_bytes, require_key=False)
        key = settings.trust_key
        self.trust_key = None if key is None else key.get_secret_value().encode()
        self.links = Links()
        self.identity_in_dlq: set[tuple[int, int]] = set()
        self.expected_subject: dict[Position, str] = {}
        """The user_key (first 16 hex digits) the ledger's own resolution gives each event."""
        self.unclear_subjects = 0
        self.replayed: dict[Position, int] = {}
        """The purposes the replay denies, for events decided under an unchanged state."""
        self.hops: dict[str, Counter[Position]] = {t.name: Counter() for t in HOP_TOPICS}
        self.members: list[tuple[int, int, int, AudienceMember, str | Unclear | None]] = []
        self.unclear_members: dict[tuple[int, int], tuple[Position, set[str], str]] = {}
        """The users an unclear member's keys named around its production, and its
        anonymous subject: the audit says which of them the pipeline chose."""
        self.audience_records: list[tuple[int, int, dict[str, Any]]] = []
        self._hop_names = {settings.topic(t): t.name for t in HOP_TOPICS}
        self.offsets = _Offsets()
        self.inputs: Counter[str] = Counter()
        self.dlq: Counter[str] = Counter()
        self.outputs: Counter[str] = Counter()
        self.histories: dict[str, _UserHistory] = {}
        self.consent_in_dlq: set[tuple[int, int]] = set()
        self._changes: list[tuple[int, int, int, ConsentChange]] = []
        self._histories_built = False
        self.must_deny: dict[Position, int] = {}
        self.after_withdrawal = 0
        self.audits: list[_Audit] = []
        self.identified: dict[tuple[str, Identity], int] = {}
        self.measurement: Counter[tuple[str, str, str, int]] = Counter()
        self.deidentified: Counter[tuple[str, str, int]] = Counter()
        self.phantom: list[str] = []
        self.unreadable: Counter[str] = Counter()

    # -- inputs -------------------------------------------------------------------

    def add_identity(self, msg: Message) -> None:
        self.inputs[IDENTITY_TOPIC] += 1
        self.offsets.input(IDENTITY_TOPIC, msg.partition, msg.offset)
        self.links.add(msg)

    def add_consent(self, msg: Message) -> None:
        self.inputs[CONSENT_TOPIC] += 1
        self.offsets.input(CONSENT_TOPIC, msg.partition, msg.offset)
        change = parse_consent_change(msg.value, now=msg.timestamp / 1000, key=msg.key)
        if not isinstance(change, Rejected):
            self._changes.append((msg.timestamp, msg.partition, msg.offset, change))

    def _consent_histories(self) -> None:
        """Fold each user's changes in append order, leaving out those the pipeline DLQ'd.

        Called once `consent.changes` and `dlq` are read, before the raw topics.
        """
        if self._histories_built:
            return
        self._histories_built = True
        self.links.build(self.identity_in_dlq)
        rejected = self.consent_in_dlq
        for timestamp, partition, offset, change in sorted(self._changes, key=lambda c: c[:3]):
            if (partition, offset) in rejected:
                continue
            history = self.histories.setdefault(change.user_id, _UserHistory())
            history.timestamps.append(timestamp)
            history.changes.append(change)
            history.states.append(apply_change(history.states[-1], change))
            if withdraws(change):
                history.withdrawals += 1
        self._changes.clear()

    def add_raw(self, msg: Message) -> None:
        self._consent_histories()
        topic = self._logical(msg.topic)
        self.inputs[topic] += 1
        self.offsets.input(topic, msg.partition, msg.offset)
        position = (topic, msg.partition, msg.offset)
        source = catalogue.by_name(topic).source
        assert source is not None
        if source == "audience":
            self._add_member(msg, position)
            return
        event = parse_event(source, msg.value, now=msg.timestamp / 1000, limits=self.limits)
        if isinstance(event, Rejected):
            return
        trusted = None
        if event.user_id is not None:
            key = self.trust_key
            if key is not None and is_trusted(key, msg.value, msg.header(TRUST_HEADER)):
                trusted = event.user_id
            event = event.model_copy(update={"user_id": None})
        expected = self.links.expected(event, msg.timestamp, trusted)
        if isinstance(expected, Unclear):
            self.unclear_subjects += 1
            return
        self.expected_subject[position] = self.pseudonymizer.user_key(expected.subject_key)[:16]
        if expected.user is None:
            return
        event = event.model_copy(update={"user_id": expected.user})
        history = self.histories.get(expected.user)
        before = upto = 0
        if history is not None:
            before = bisect.bisect_left(history.timestamps, msg.timestamp)
            upto = bisect.bisect_right(history.timestamps, msg.timestamp)
        unchanged = history is None or before == len(history.timestamps)
        if unchanged and not self.links.changed_after(expected.keys, msg.timestamp):
            state = None if history is None else history.states[-1]
            self.replayed[position] = decision_bits(decide(event, state, self.policy))
        if history is None or not history.withdrawals:
            return
        states = history.states[before : upto + 1]
        denied = -1
        for state in states:
            denied &= decision_bits(decide(event, state, self.policy)) | account_rule_bits(
                event, state
            )
        if any(withdraws(change) for change in history.changes[:before]):
            self.after_withdrawal += 1
        self.must_deny[position] = denied

    def _add_member(self, msg: Message, position: Position) -> None:
        member = parse_audience_member(msg.value, limits=self.limits)
        if isinstance(member, Rejected):
            return
        user = self.links.resolve(member_keys(member), msg.timestamp)
        self.members.append((msg.timestamp, msg.partition, msg.offset, member, user))
        if isinstance(user, Unclear):
            candidates = self.links.candidates(member_keys(member), msg.timestamp)
            anonymous = f"anon:{member_id(member)}"
            self.unclear_members[msg.partition, msg.offset] = (position, candidates, anonymous)
        else:
            subject = user if user is not None else f"anon:{member_id(member)}"
            self.expected_subject[position] = self.pseudonymizer.user_key(subject)[:16]

    def add_audience(self, msg: Message) -> None:
        self.outputs[catalogue.AUDIENCES.name] += 1
        try:
            self.audience_records.append((msg.partition, msg.offset, codec.loads(msg.value or b"")))
        except codec.DecodeError:
            self.unreadable[catalogue.AUDIENCES.name] += 1

    def add_hop(self, msg: Message) -> None:
        """A record on an internal topic: counted by the raw record it carries."""
        topic = self._hop_names.get(msg.topic, msg.topic)
        try:
            origin = codec.loads(msg.header(HOP_HEADER) or b"")["origin"]
            position = (self._logical(origin["topic"]), origin["partition"], origin["offset"])
        except (codec.DecodeError, KeyError, TypeError):
            self.unreadable[topic] += 1
            return
        self.hops[topic][position] += 1

    # -- outputs ------------------------------------------------------------------

    def add_audit(self, msg: Message) -> None:
        self.outputs[catalogue.AUDIT.name] += 1
        if self.scanner is not None:
            self.scanner.scan("audit", msg.key, msg.value)
        try:
            record = codec.loads(msg.value or b"")
            origin = record["origin"]
            position = (self._logical(origin["topic"]), origin["partition"], origin["offset"])
            outcomes = record["outcomes"]
            audit = _Audit(
                position=position,
                identity=(record["advertiser_id"] or "", record["event_id"], record["user_key"]),
                duplicate=bool(record["duplicate"]),
                denied=outcome_bits(outcomes),
                destinations=destination_bits(record["destinations"]),
                source=record["source"],
                advertiser_id=record["advertiser_id"] or "",
                event_time=int(record["timings"]["event_time"]),
            )
        except (codec.DecodeError, KeyError, TypeError, ValueError):
            self.unreadable[catalogue.AUDIT.name] += 1
            return
        self._account(position, "audit")
        self.audits.append(audit)

    def add_dlq(self, msg: Message) -> None:
        self.outputs[catalogue.DLQ.name] += 1
        if self.scanner is not None:
            self.scanner.scan_dlq(msg.value or b"")
        try:
            record = codec.loads(msg.value or b"")
            origin = record["origin"]
            position = (self._logical(origin["topic"]), origin["partition"], origin["offset"])
            self.dlq[record["reason"]] += 1
        except (codec.DecodeError, KeyError, TypeError):
            self.unreadable[catalogue.DLQ.name] += 1
            return
        self._account(position, "dlq")
        if position[0] == CONSENT_TOPIC:
            self.consent_in_dlq.add((position[1], position[2]))
        elif position[0] == IDENTITY_TOPIC:
            self.identity_in_dlq.add((position[1], position[2]))

    def add_identified(self, msg: Message) -> None:
        logical = self._logical(msg.topic)
        destination = IDENTIFIED_TOPICS[logical]
        self.outputs[logical] += 1
        if self.scanner is not None:
            self.scanner.scan(destination, msg.key, msg.value)
        try:
            record = codec.loads(msg.value or b"")
            identity = (
                record["advertiser_id"] or "",
                record["event_id"],
                self.pseudonymizer.user_key(record["user_id"]),
            )
        except (codec.DecodeError, KeyError, TypeError):
            self.unreadable[logical] += 1
            return
        key = (destination, identity)
        self.identified[key] = self.identified.get(key, 0) + 1

    def add_measurement(self, msg: Message) -> None:
        self.outputs[catalogue.MEASUREMENT.name] += 1
        if self.scanner is not None:
            self.scanner.scan("measurement", msg.key, msg.value)
        try:
            r = codec.loads(msg.value or b"")
            self.measurement[
                (r["user_key"], r["source"], r["advertiser_id"] or "", int(r["event_time"]))
            ] += 1
        except (codec.DecodeError, KeyError, TypeError, ValueError):
            self.unreadable[catalogue.MEASUREMENT.name] += 1

    def add_deidentified(self, msg: Message) -> None:
        self.outputs[catalogue.DEIDENTIFIED.name] += 1
        if self.scanner is not None:
            self.scanner.scan("deidentified", msg.key, msg.value)
        try:
            r = codec.loads(msg.value or b"")
            self.deidentified[(r["source"], r["advertiser_id"] or "", int(r["event_hour"]))] += 1
        except (codec.DecodeError, KeyError, TypeError, ValueError):
            self.unreadable[catalogue.DEIDENTIFIED.name] += 1

    def add_aggregate(self, msg: Message) -> None:
        self.outputs[catalogue.AGGREGATES.name] += 1
        if self.scanner is not None:
            self.scanner.scan("aggregates", msg.key, msg.value)

    def _logical(self, topic: str) -> str:
        for prefix in (self.outputs_prefix, self.settings.topic_prefix):
            if prefix and topic.startswith(prefix):
                return topic[len(prefix) :]
        return topic

    def _account(self, position: Position, kind: str) -> None:
        topic, partition, offset = position
        if topic not in (*RAW_TOPICS, *TABLE_TOPICS) or (topic in TABLE_TOPICS and kind == "audit"):
            self.phantom.append(f"{kind} origin {topic}/{partition}@{offset}")
            return
        self.offsets.account(topic, partition, offset)

    # -- verdicts -----------------------------------------------------------------

    def invariants(self, acknowledged: Acknowledged | None = None) -> list[Invariant]:
        return [
            self._ledger(),
            self._acknowledged(acknowledged),
            self._outputs(),
            self._no_leak(),
            self._revocations(),
            self._identities(),
            self._replay(),
            self._hops(),
            self._memberships(),
        ]

    def _ledger(self) -> Invariant:
        lost, duplicated, phantom = 0, 0, len(self.phantom)
        examples: list[str] = list(self.phantom[:MAX_EXAMPLES])
        offsets = self.offsets
        keys = set(offsets.present) | set(offsets.accounted)
        for key in sorted(keys):
            present = offsets.present.get(key, bytearray())
            accounted = offsets.accounted.get(key, bytearray())
            topic, partition = key
            for offset in range(max(len(present), len(accounted))):
                p = present[offset] if offset < len(present) else 0
                a = accounted[offset] if offset < len(accounted) else 0
                if topic in TABLE_TOPICS:
                    bad = a > 1 or (a and not p)
                    duplicated += a > 1
                    phantom += bool(a and not p)
                else:
                    bad = a != p
                    lost += bool(p and not a)
                    duplicated += bool(p and a > 1)
                    phantom += bool(a and not p)
                if bad and len(examples) < MAX_EXAMPLES:
                    examples.append(f"{topic}/{partition}@{offset}: {a} audit+dlq records")
        counts = {
            "raw_inputs": sum(n for t, n in self.inputs.items() if t not in TABLE_TOPICS),
            "consent_inputs": self.inputs[CONSENT_TOPIC],
            "identity_inputs": self.inputs[IDENTITY_TOPIC],
            "audit_records": len(self.audits),
            "dlq_records": sum(self.dlq.values()),
            "lost": lost,
            "accounted_twice": duplicated,
            "phantom_origins": phantom,
            "unreadable_records": sum(self.unreadable.values()),
            **{f"dlq.{reason}": n for reason, n in sorted(self.dlq.items())},
        }
        passed = lost == duplicated == phantom == 0 and not self.unreadable
        return Invariant("ledger.exactly_once", passed, counts, examples)

    def _acknowledged(self, acknowledged: Acknowledged | None) -> Invariant:
        if acknowledged is None:
            return Invariant("ledger.acknowledged_in_log", True, {"acknowledged": 0})
        missing = 0
        examples: list[str] = []
        for topic, partition, offset in acknowledged.offsets():
            logical = self._logical(topic)
            if not self.offsets.count((logical, partition), offset, accounted=False):
                missing += 1
                if len(examples) < MAX_EXAMPLES:
                    examples.append(f"{logical}/{partition}@{offset} acknowledged, not in log")
        counts = {
            "acknowledged": acknowledged.count,
            "missing_from_log": missing,
            "resent_after_failure": acknowledged.resent,
            "never_acknowledged": acknowledged.given_up,
        }
        return Invariant("ledger.acknowledged_in_log", missing == 0, counts, examples)

    def _owners(self) -> dict[Identity, list[_Audit]]:
        """The first-time (non-duplicate) audits of each event; exactly one is right."""
        owners: dict[Identity, list[_Audit]] = {}
        for audit in self.audits:
            if not audit.duplicate:
                owners.setdefault(audit.identity, []).append(audit)
        return owners

    def _outputs(self) -> Invariant:
        owners = self._owners()
        examples: list[str] = []
        new_twice = across_partitions = 0
        by_event: dict[tuple[str, str], list[_Audit]] = {}
        for audit in self.audits:
            if not audit.duplicate:  # deduplication is by (advertiser, event id)
                advertiser, event_id, _ = audit.identity
                by_event.setdefault((advertiser, event_id), []).append(audit)
        for (_, event_id), copies in by_event.items():
            if len(copies) > 1:
                new_twice += 1
                partitions = sorted({a.position[1] for a in copies})
                if len(partitions) > 1:
                    across_partitions += 1
                where = ", ".join(_where(a.position) for a in copies)
                _example(examples, f"event {event_id} audited as new {len(copies)} times: {where}")
        twice = unaudited = missing = duplicate_emitted = 0
        expected: Counter[tuple[str, Identity]] = Counter()
        for identity, audits in owners.items():
            for audit in audits:
                for destination in IDENTIFIED_TOPICS.values():
                    if audit.destinations & DESTINATION_BITS[destination]:
                        expected[destination, identity] += 1
        for key, n in self.identified.items():
            listed = expected.get(key, 0)
            if not listed:
                unaudited += n
                _example(examples, f"{key[0]} record for event {key[1][1]} in no audit")
            elif n > listed:
                twice += n - listed
                _example(examples, f"{key[0]} record for event {key[1][1]} written {n} times")
        for key, listed in expected.items():
            n = self.identified.get(key, 0)
            if n < listed:
                missing += listed - n
                _example(examples, f"{key[0]} record for event {key[1][1]} missing")
        expected_measurement: Counter[tuple[str, str, str, int]] = Counter()
        expected_deidentified: Counter[tuple[str, str, int]] = Counter()
        for audit in self.audits:
            if audit.duplicate:
                if audit.destinations:
                    duplicate_emitted += 1
                    _example(examples, f"duplicate of event {audit.identity[1]} emitted")
                continue
            if audit.destinations & MEASUREMENT:
                measured = (audit.identity[2], audit.source, audit.advertiser_id, audit.event_time)
                expected_measurement[measured] += 1
            if audit.destinations & DEIDENTIFIED:
                hour = audit.event_time - audit.event_time % 3600
                expected_deidentified[(audit.source, audit.advertiser_id, hour)] += 1
        measurement_extra = sum((self.measurement - expected_measurement).values())
        measurement_missing = sum((expected_measurement - self.measurement).values())
        deidentified_extra = sum((self.deidentified - expected_deidentified).values())
        deidentified_missing = sum((expected_deidentified - self.deidentified).values())
        counts = {
            **{topic: self.outputs[topic] for topic in sorted(self.outputs)},
            "identified_written_twice": twice,
            "identified_without_audit": unaudited,
            "identified_missing": missing,
            "measurement_extra": measurement_extra,
            "measurement_missing": measurement_missing,
            "deidentified_extra": deidentified_extra,
            "deidentified_missing": deidentified_missing,
            "events_audited_new_twice": new_twice,
            "of_which_across_partitions": across_partitions,
            "duplicates_emitted": duplicate_emitted,
            "duplicates_audited": sum(1 for a in self.audits if a.duplicate),
        }
        failures = (
            twice
            + unaudited
            + missing
            + measurement_extra
            + measurement_missing
            + deidentified_extra
            + deidentified_missing
            + new_twice
            + duplicate_emitted
        )
        return Invariant("outputs.exactly_once", failures == 0, counts, examples[:MAX_EXAMPLES])

    def _no_leak(self) -> Invariant:
        owners = self._owners()
        listed_but_denied = emitted_but_denied = 0
        examples: list[str] = []
        for audit in self.audits:
            if audit.destinations & audit.denied:
                listed_but_denied += 1
                _example(examples, f"audit of event {audit.identity[1]} lists a denied purpose")
        for (destination, identity), n in self.identified.items():
            bit = DESTINATION_BITS[destination]
            allowing = sum(
                1
                for audit in owners.get(identity, [])
                if audit.destinations & bit and not audit.denied & bit
            )
            if n > allowing:
                emitted_but_denied += n - allowing
                _example(
                    examples, f"{destination} record for event {identity[1]}: no audit allows it"
                )
        counts = {
            "audits_listing_a_denied_purpose": listed_but_denied,
            "identified_outputs_no_audit_allows": emitted_but_denied,
        }
        return Invariant(
            "no_leak.audited_decision",
            listed_but_denied + emitted_but_denied == 0,
            counts,
            examples,
        )

    def _revocations(self) -> Invariant:
        by_position = {audit.position: audit for audit in self.audits}
        identified = PERSONALIZATION | ADS | SHARING | MEASUREMENT
        audit_allows = emitted = unaudited = 0
        examples: list[str] = []
        must_deny_events = 0
        for position, denied in self.must_deny.items():
            if not denied:
                continue
            must_deny_events += 1
            audit = by_position.get(position)
            if audit is None:
                unaudited += 1  # decided in the DLQ, or lost: the ledger invariant says which
                continue
            if denied & ~audit.denied & identified:
                audit_allows += 1
                _example(examples, f"event {audit.identity[1]} at {_where(position)}: audit allows")
            # A duplicate emits nothing (checked above); its first copy's time governs that one.
            if not audit.duplicate and audit.destinations & denied & identified:
                emitted += 1
                _example(examples, f"event {audit.identity[1]}: emitted after a revocation")
        counts = {
            "users_with_withdrawals": sum(1 for h in self.histories.values() if h.withdrawals),
            "withdrawals": sum(h.withdrawals for h in self.histories.values()),
            "consent_changes_in_dlq": len(self.consent_in_dlq),
            "events_checked": len(self.must_deny),
            "events_after_a_withdrawal": self.after_withdrawal,
            "events_with_a_purpose_denied_at_production": must_deny_events,
            "audit_allowed_a_denied_purpose": audit_allows,
            "identified_output_after_revocation": emitted,
            "not_audited": unaudited,
        }
        return Invariant("revocation_barrier", audit_allows + emitted == 0, counts, examples)

    def _identities(self) -> Invariant:
        checked = mismatched = unexpected = 0
        examples: list[str] = []
        for audit in self.audits:
            expected = self.expected_subject.get(audit.position)
            if expected is None:
                continue
            checked += 1
            if audit.identity[2][:16] != expected:
                mismatched += 1
                _example(examples, f"event {audit.identity[1]} at {_where(audit.position)}")
        for position in self.expected_subject:
            if not self.offsets.count(position[:2], position[2], accounted=True):
                unexpected += 1
        counts = {
            "links_folded": self.links.links,
            "identity_links_in_dlq": len(self.identity_in_dlq),
            "audits_checked": checked,
            "subjects_unclear_skipped": self.unclear_subjects,
            "audits_naming_another_subject": mismatched,
            "events_unaccounted": unexpected,
        }
        return Invariant("identity.as_of_production", mismatched == 0, counts, examples)

    def _replay(self) -> Invariant:
        checked = mismatched = 0
        examples: list[str] = []
        for audit in self.audits:
            expected = self.replayed.get(audit.position)
            if expected is None or audit.duplicate:
                continue
            checked += 1
            if expected != audit.denied:
                mismatched += 1
                _example(examples, f"event {audit.identity[1]} at {_where(audit.position)}")
        counts = {"events_replayed": checked, "decided_otherwise": mismatched}
        return Invariant(
            "decisions.match_replay", mismatched == 0 and checked > 0, counts, examples
        )

    def _hops(self) -> Invariant:
        examples: list[str] = []
        counts: dict[str, int] = {}
        failures = 0
        audited = {audit.position for audit in self.audits}
        for topic, positions in self.hops.items():
            name = topic.rpartition(".")[2]
            twice = sum(1 for n in positions.values() if n > 1)
            counts[f"{name}.records"] = sum(positions.values())
            counts[f"{name}.carried_twice"] = twice
            failures += twice
            if twice:
                _example(
                    examples, f"a raw record carried {max(positions.values())} times on {name}"
                )
        decided = self.hops[catalogue.BY_SUBJECT.name]
        counts["decided_in_process"] = sum(1 for position in audited if position not in decided)
        return Invariant("hops.at_most_once", failures == 0, counts, examples)

    def _memberships(self) -> Invariant:
        examples: list[str] = []
        expected: dict[tuple[str, str, str], bool] = {}
        """(user, advertiser, audience) -> whether the advertiser's last change added it."""
        seen: set[str] = set()
        chosen = self._unclear_members_chosen()
        unclear = unexplained = 0
        # The advertiser's newest change wins: by upload time, then as produced.
        newest_last = sorted(self.members, key=lambda m: (m[3].uploaded_at, *m[:3]))
        for _, partition, offset, member, resolved in newest_last:
            user: str | None
            if not isinstance(resolved, Unclear):
                user = resolved
            else:
                # A key changed at the member's very millisecond: either user is right, and
                # the audit says which one the pipeline chose.
                unclear += 1
                choice = chosen.get((partition, offset))
                if choice is None:
                    continue  # in the DLQ or lost: the ledger invariant says which
                if isinstance(choice, Unclear):
                    unexplained += 1
                    _example(examples, f"member at {partition}:{offset}: audit names no candidate")
                    continue
                user = choice[0]
            identifier = member_id(member)
            if identifier in seen or user is None:
                continue  # a copy (deduplicated), or nobody to be a member
            seen.add(identifier)
            key = (user, member.advertiser_id, member.audience_id)
            expected[key] = member.operation == "add" and member.opt_out_type is None
        active: dict[tuple[str, str, str], bool] = {}
        unjustified = 0
        for _, _, record in sorted(self.audience_records, key=lambda r: r[:2]):
            key = (record["user_id"], record["advertiser_id"], record["audience_id"])
            active[key] = record["operation"] == "add"
            if record["operation"] == "add" and not self._allows(record):
                unjustified += 1
                _example(examples, f"an add for audience {record['audience_id']} consent denies")
        leaked = missing = 0
        for key in set(expected) | set(active):
            history = self.histories.get(key[0])
            final = history.states[-1] if history is not None else None
            want = expected.get(key, False) and allows_memberships(final)
            have = active.get(key, False)
            if have and not want:
                leaked += 1
                _example(examples, f"audience {key[2]}: a membership consent excludes is active")
            elif want and not have:
                missing += 1
                _example(examples, f"audience {key[2]}: an allowed membership is not active")
        counts = {
            "list_records": len(self.members),
            "audience_records": len(self.audience_records),
            "memberships_expected": sum(
                1 for key, added in expected.items() if added and key in active
            ),
            "active_but_excluded": leaked,
            "allowed_but_not_active": missing,
            "adds_their_consent_denies": unjustified,
            "members_subject_unclear": unclear,
            "unclear_audit_names_no_candidate": unexplained,
        }
        passed = leaked == missing == unjustified == unexplained == 0
        return Invariant("memberships.follow_consent", passed, counts, examples)

    def _unclear_members_chosen(self) -> dict[tuple[int, int], tuple[str | None] | Unclear]:
        """Whom the pipeline attributed each audited unclear member to: one of the
        candidates, or (None,) for nobody; UNCLEAR when its audit names someone else."""
        audits = {audit.position: audit.identity[2][:16] for audit in self.audits}
        chosen: dict[tuple[int, int], tuple[str | None] | Unclear] = {}
        for at, (position, candidates, anonymous) in self.unclear_members.items():
            subject = audits.get(position)
            if subject is None:
                continue  # in the DLQ or lost: the ledger invariant says which
            by_key: dict[str, str | None] = {
                self.pseudonymizer.user_key(user)[:16]: user for user in candidates
            }
            by_key[self.pseudonymizer.user_key(anonymous)[:16]] = None
            chosen[at] = (by_key[subject],) if subject in by_key else UNCLEAR
        return chosen

    def _allows(self, record: dict[str, Any]) -> bool:
        """Whether the consent state an emitted membership names allows memberships."""
        history = self.histories.get(record["user_id"])
        version = record.get("consent_version")
        if history is None or version is None:
            return False
        states = [s for s in history.states if s is not None and s.version == version]
        return bool(states) and allows_memberships(states[-1])


def withdraws(change: ConsentChange) -> bool:
    """Whether a change takes something away: a setting off, deletion, a device opt-out."""
    if change.deleted:
        return True
    settings = change.settings
    if settings is not None and any(
        getattr(settings, name) is False for name in settings.model_fields_set
    ):
        return True
    device = change.device
    return device is not None and (
        device.ads_opt_out is True
        or ("att_status" in device.model_fields_set and device.att_status != "authorized")
    )


def decision_bits(decision: Decision) -> int:
    """The purposes a decision denies, as bits."""
    bits = 0
    if decision.personalization == "deny":
        bits |= PERSONALIZATION
    if decision.ads == "deny":
        bits |= ADS
    if decision.partner_sharing == "deny":
        bits |= SHARING
    if decision.measurement == "deidentified":
        bits |= MEASUREMENT
    return bits


def outcome_bits(outcomes: Mapping[str, str]) -> int:
    """The purposes an audit's `outcomes` deny, as bits."""
    bits = 0
    if outcomes["personalization"] == "deny":
        bits |= PERSONALIZATION
    if outcomes["ads"] == "deny":
        bits |= ADS
    if outcomes["partner_sharing"] == "deny":
        bits |= SHARING
    if outcomes["measurement"] == "deidentified":
        bits |= MEASUREMENT
    return bits


def destination_bits(destinations: Iterable[str]) -> int:
    bits = 0
    for destination in destinations:
        bits |= DESTINATION_BITS.get(destination, 0)
    return bits


def account_rule_bits(event: Event, state: ConsentState | None) -> int:
    """What a user's account settings deny, restated from the policy apart from the policy core.

    Deletion denies every identified use; personalization off denies personalization and
    ads, ads-from-partner-info off denies ads on tag and sdk events, both waived for a
    purchase on the platform; sharing off denies partner sharing. Measurement is
    identified only when ads are allowed, and sharing needs ads.
    """
    if state is None or state.user_id != event.user_id:
        return 0
    everything = PERSONALIZATION | ADS | SHARING | MEASUREMENT
    if state.deleted:
        return everything
    on_platform_purchase = event.surface == "on_platform" and event.event_name == "checkout"
    bits = 0
    if not on_platform_purchase:
        if state.personalization is not None and state.personalization.value is False:
            bits |= everything
        if (
            event.source in ("tag", "sdk")
            and state.ads_from_partner_info is not None
            and state.ads_from_partner_info.value is False
        ):
            bits |= ADS | SHARING | MEASUREMENT
    if state.partner_sharing is not None and state.partner_sharing.value is False:
        bits |= SHARING
    return bits


def _example(examples: list[str], text: str) -> None:
    if len(examples) < MAX_EXAMPLES:
        examples.append(text)


def _where(position: Position) -> str:
    return f"{position[0]}/{position[1]}@{position[2]}"


async def check(
    settings: Settings,
    *,
    acknowledged: Acknowledged | None = None,
    scanner: PiiScanner | None = None,
    contender: str | None = None,
) -> list[Invariant]:
    """Read every input and output topic of `settings` back and check the invariants.

    With `contender`, the outputs are that benchmark contender's (`<prefix><contender>.`
    + the catalogue's name; it has no internal topics, so `hops.at_most_once` finds none).
    """
    outputs_prefix = None if contender is None else f"{settings.topic_prefix}{contender}."
    checker = LedgerChecker(settings, scanner=scanner, outputs_prefix=outputs_prefix)

    def topic(t: catalogue.Topic) -> str:
        if outputs_prefix is not None and t not in catalogue.INPUTS:
            return f"{outputs_prefix}{t.name}"
        return settings.topic(t)

    await read_topic(settings, topic(catalogue.CONSENT_CHANGES), checker.add_consent)
    await read_topic(settings, topic(catalogue.IDENTITY_LINKS), checker.add_identity)
    await read_topic(settings, topic(catalogue.DLQ), checker.add_dlq)
    for raw in catalogue.RAW.values():
        await read_topic(settings, topic(raw), checker.add_raw)
    await read_topic(settings, topic(catalogue.AUDIT), checker.add_audit)
    for identified in (catalogue.PERSONALIZATION, catalogue.ADS, catalogue.PARTNER_SHARE):
        await read_topic(settings, topic(identified), checker.add_identified)
    await read_topic(settings, topic(catalogue.MEASUREMENT), checker.add_measurement)
    await read_topic(settings, topic(catalogue.DEIDENTIFIED), checker.add_deidentified)
    await read_topic(settings, topic(catalogue.AGGREGATES), checker.add_aggregate)
    await read_topic(settings, topic(catalogue.AUDIENCES), checker.add_audience)
    if contender is None:
        for hop in HOP_TOPICS:
            await read_topic(settings, topic(hop), checker.add_hop)
    return checker.invariants(acknowledged)
