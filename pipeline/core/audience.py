"""Customer-list memberships under consent (SPEC §4.3, §7.5): pure rules, no I/O.

- `member_keys(member)`: the member's match keys in the order they are tried (em, ph,
  maid, as SPEC §4.2 orders them), at most `MAX_MATCH_KEYS`.
- `member_id(member)`: a deterministic id of one list record: the same member in the same
  upload gives the same id, so a re-sent upload is deduplicated like an event.
- `decide_membership(member, consent, policy)`: a membership is allowed only for a user
  with a live consent record, not deleted, with `personalization` and
  `ads_from_partner_info` on (region defaults apply), and no limited-data-processing
  restriction. Every rule that held is listed, as for events.
- `Memberships`: a user's memberships, each `active` (emitted), `suppressed` (uploaded by
  the advertiser, withheld by consent) or `restricted` (uploaded with limited data
  processing: withheld whatever consent says). An allowed add makes it active; a denied
  one suppressed or restricted, withdrawing it if it was active; the advertiser's remove
  deletes it and is emitted only if it was active. A consent change that denies
  memberships withdraws every active one (`remove`, reason `consent.revoked`); one that
  allows them again restores every suppressed one (`add`, reason `consent.granted`). A
  deleted account's memberships are withdrawn and dropped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Final, Literal, NamedTuple, TypeAlias

from pipeline.core.consent import ConsentState
from pipeline.core.identity import MAX_MATCH_KEYS
from pipeline.core.policy import PolicyConfig, Reason, effective_settings
from schemas.audience import AudienceMember, Operation
from schemas.outputs import MembershipChangeReason, MembershipOutcome

State: TypeAlias = Literal["active", "suppressed", "restricted"]
ListKey: TypeAlias = tuple[str, str]
"""(advertiser id, audience id)."""

_KINDS: Final = ("em", "ph", "maid")


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
    reasons: set[str] = set()
    if user_id is None:
        reasons.add(Reason.SUBJECT_ANONYMOUS)
    elif consent is None:
        reasons.add(Reason.CONSENT_MISSING)
    elif consent.deleted:
        reasons.add(Reason.ACCOUNT_DELETED)
    else:
        settings = effective_settings(consent)
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


class Memberships:
    """One user's memberships, by (advertiser, audience)."""

    __slots__ = ("states",)

    def __init__(self, states: dict[ListKey, State] | None = None) -> None:
        self.states: dict[ListKey, State] = dict(states or {})

    def __len__(self) -> int:
        return len(self.states)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Memberships) and other.states == self.states

    def __repr__(self) -> str:
        return f"Memberships({self.states!r})"

    def apply(
        self, member: AudienceMember, decision: MembershipDecision
    ) -> tuple[MembershipOutcome, Change | None]:
        """An advertiser's change: its membership outcome, and what to emit if anything."""
        key = (member.advertiser_id, member.audience_id)
        current = self.states.get(key)
        if member.operation == "add":
            if not decision.allowed:
                restricted = Reason.EVENT_LDP in decision.reasons
                self.states[key] = "restricted" if restricted else "suppressed"
                if current != "active":
                    return "denied", None
                return "denied", _change(key, "remove", None if restricted else "consent.revoked")
            self.states[key] = "active"
            change = None if current == "active" else _change(key, "add", None)
            return "added", change
        if current is None:
            return "not_a_member", None
        del self.states[key]
        if current != "active":
            return "already_withdrawn", None
        return "removed", _change(key, "remove", None)

    def follow_consent(self, allowed: bool, *, deleted: bool = False) -> Iterator[Change]:
        """What a consent change does: withdraw every active membership it denies, or
        restore every suppressed one it allows; a deletion drops them all."""
        for key, state in list(self.states.items()):
            if not allowed and state == "active":
                self.states[key] = "suppressed"
                yield _change(key, "remove", "consent.revoked")
            elif allowed and state == "suppressed":
                self.states[key] = "active"
                yield _change(key, "add", "consent.granted")
        if deleted:
            self.states.clear()


def _change(key: ListKey, operation: Operation, reason: MembershipChangeReason | None) -> Change:
    return Change(key[0], key[1], operation, reason)
