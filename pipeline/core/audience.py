"""Customer-list memberships under consent: pure rules, no I/O.

- `member_keys(member)`: the member's match keys in the order they are tried (em, ph,
  maid, in resolution order), at most `MAX_MATCH_KEYS`.
- `member_id(member)`: a deterministic id of one list record: the same member in the same
  upload gives the same id, so a re-sent upload is deduplicated like an event.
- `decide_membership(member, consent, policy)`: a membership is allowed only for a user
  with a live consent record, not deleted, with `personalization` and
  `ads_from_partner_info` on (region defaults apply), and no limited-data-processing
  restriction. Every rule that held is listed, as for events.
- `Memberships`: a user's memberships, each `active` (emitted), `suppressed` (uploaded by
  the advertiser, withheld by consent), `restricted` (uploaded with limited data
  processing: withheld whatever consent says) or `removed`. The advertiser's newest
  change wins (by upload time; an older one arriving later is `superseded`). An allowed
  add makes it active; a denied one suppressed or restricted, withdrawing it if it was
  active; the advertiser's remove makes it removed and is emitted only if it was active.
  A consent change that denies memberships withdraws every active one (`remove`, reason
  `consent.revoked`); one that allows them again restores every suppressed one (`add`,
  reason `consent.granted`). A deleted account's memberships are withdrawn and dropped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Final, Literal, NamedTuple, TypeAlias

from pipeline.core.consent import ConsentState
from pipeline.core.identity import MAX_MATCH_KEYS
from pipeline.core.policy import PolicyConfig, effective_settings, subject_rules
from pipeline.core.reasons import Reason
from schemas.audience import AudienceMember, Operation
from schemas.outputs import MembershipChangeReason, MembershipOutcome

State: TypeAlias = Literal["active", "suppressed", "restricted", "removed"]
ListKey: TypeAlias = tuple[str, str]
"""(advertiser id, audience id)."""

_KINDS: Final = ("em", "ph", "maid")
TOMBSTONE_MS: Final = 7 * 24 * 3600 * 1000
"""How long a removed membership is remembered, so an older add arriving late cannot
restore it."""


class MembershipDecision(NamedTuple):
    """Whether a membership is allowed, and the codes of the rules that held."""

    allowed: bool
    reasons: tuple[str, ...]
    policy_version: str
    consent_version: int | None


class Change(NamedTuple):
    """A change to emit on `activity.audiences`."""

    advertiser_id: str
    audience_id: str
    operation: Operation
    reason: MembershipChangeReason | None


def member_keys(member: AudienceMember) -> list[str]:
    """The member's match keys, in try order, without repeats."""
    keys: dict[str, None] = {}
    for kind in _KINDS:
        for value in getattr(member.match_keys, kind):
            keys.setdefault(f"{kind}:{value}")
    return list(keys)[:MAX_MATCH_KEYS]


def member_id(member: AudienceMember) -> str:
    """A deterministic id of the record: its list, operation, upload time, restriction and
    every key (the same record re-sent has the same id; any other record another)."""
    parts = [
        member.advertiser_id,
        member.audience_id,
        member.operation,
        str(member.uploaded_at),
        member.opt_out_type or "",
    ]
    parts.extend(
        sorted({f"{kind}:{value}" for kind in _KINDS for value in getattr(member.match_keys, kind)})
    )
    return "cl-" + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def allows_memberships(consent: ConsentState | None) -> bool:
    """Whether a user's consent allows customer-list memberships at all."""
    if consent is None or consent.deleted:
        return False
    settings = effective_settings(consent)
    return settings.personalization and settings.ads_from_partner_info


def decide_membership(
    member: AudienceMember,
    user_id: str | None,
    consent: ConsentState | None,
    policy: PolicyConfig,
) -> MembershipDecision:
    """Whether `user_id` (None: no key matched) may be in the member's audience."""
    if consent is not None and consent.user_id != user_id:
        consent = None
    reasons: set[Reason] = set()
    live = subject_rules(user_id, consent, reasons)
    if live is not None:
        settings = effective_settings(live)
        if not settings.personalization:
            reasons.add(Reason.ACCOUNT_PERSONALIZATION_OFF)
        if not settings.ads_from_partner_info:
            reasons.add(Reason.ACCOUNT_PARTNER_ADS_OFF)
    if member.opt_out_type == "LDP":
        reasons.add(Reason.EVENT_LDP)
    return MembershipDecision(
        allowed=not reasons,
        reasons=tuple(sorted(reasons)),
        policy_version=policy.policy_version,
        consent_version=None if consent is None else consent.version,
    )


class Entry(NamedTuple):
    """One membership: its state and the upload time of the change that set it."""

    state: State
    uploaded_at: int
    """Unix ms of the advertiser's newest change applied; older ones are superseded."""


class Memberships:
    """One user's memberships, by (advertiser, audience).

    The advertiser's newest change (by `uploaded_at`) wins: the records of one membership
    may reach the decision in another order than they were uploaded (their match keys,
    and so their paths, can differ), and one older than the change already applied is
    `superseded`. A removed membership is remembered as `removed` for that reason, until
    `TOMBSTONE_MS` after a newer change of the same user.
    """

    __slots__ = ("entries",)

    def __init__(self, entries: dict[ListKey, Entry] | None = None) -> None:
        self.entries: dict[ListKey, Entry] = dict(entries or {})

    def __len__(self) -> int:
        return len(self.entries)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Memberships) and other.entries == self.entries

    def __repr__(self) -> str:
        return f"Memberships({self.entries!r})"

    def state(self, advertiser_id: str, audience_id: str) -> State | None:
        """The state of one membership, None if the user was never in that audience."""
        entry = self.entries.get((advertiser_id, audience_id))
        return None if entry is None else entry.state

    def apply(
        self, member: AudienceMember, decision: MembershipDecision
    ) -> tuple[MembershipOutcome, Change | None]:
        """An advertiser's change: its membership outcome, and what to emit if anything."""
        key = (member.advertiser_id, member.audience_id)
        entry = self.entries.get(key)
        if entry is not None and member.uploaded_at < entry.uploaded_at:
            return "superseded", None
        current = None if entry is None else entry.state
        at = member.uploaded_at
        self._forget_removed(before=at - TOMBSTONE_MS)
        if member.operation == "add":
            if not decision.allowed:
                restricted = Reason.EVENT_LDP in decision.reasons
                self.entries[key] = Entry("restricted" if restricted else "suppressed", at)
                if current != "active":
                    return "denied", None
                return "denied", _change(key, "remove", None if restricted else "consent.revoked")
            self.entries[key] = Entry("active", at)
            change = None if current == "active" else _change(key, "add", None)
            return "added", change
        self.entries[key] = Entry("removed", at)
        if current in (None, "removed"):
            return "not_a_member", None
        if current != "active":
            return "already_withdrawn", None
        return "removed", _change(key, "remove", None)

    def follow_consent(self, allowed: bool, *, deleted: bool = False) -> Iterator[Change]:
        """What a consent change does: withdraw every active membership it denies, or
        restore every suppressed one it allows; a deletion drops them all."""
        for key, entry in list(self.entries.items()):
            if not allowed and entry.state == "active":
                self.entries[key] = entry._replace(state="suppressed")
                yield _change(key, "remove", "consent.revoked")
            elif allowed and entry.state == "suppressed":
                self.entries[key] = entry._replace(state="active")
                yield _change(key, "add", "consent.granted")
        if deleted:
            self.entries.clear()

    def _forget_removed(self, *, before: int) -> None:
        for key, entry in list(self.entries.items()):
            if entry.state == "removed" and entry.uploaded_at < before:
                del self.entries[key]


def _change(key: ListKey, operation: Operation, reason: MembershipChangeReason | None) -> Change:
    return Change(key[0], key[1], operation, reason)
