"""Identity resolution: match keys, the links they point to, and the winner.

- `match_keys(event)`: the event's normalized keys in the order they are tried: session,
  click, em, ph, maid (within a kind, as the event lists them), at most `MAX_MATCH_KEYS`.
  `external_id` and advertiser cookies are advertiser-scoped and never resolve.
- `apply_link`: a key's link folded last-writer-wins by `linked_at` (an unlink beats a
  link of the same millisecond, then the greater user id, so any order converges); a
  Kafka tombstone unlinks whatever `linked_at` says. Every change of the linked user
  is remembered with the time Kafka acknowledged it, for a window.
- `user_as_of(row, produced_ms)`: the user a key pointed to when an event was produced.
  A change acknowledged after the event was produced does not govern it (the identity
  barrier reads every change acknowledged before). Kafka's timestamps are milliseconds,
  so changes acknowledged in the event's own millisecond may have come before it or
  after: when they leave two users possible, or end with the key unlinked, the key names
  nobody; when the only other possibility is nobody (a key linked in that millisecond),
  it names its user, so a link acknowledged before the event always governs it.
- `choose(found)`: the first key with a live link wins; another key linked to another
  user is a conflict, counted, never a second subject.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, NamedTuple

from schemas.events import Event, SdkEvent, WidgetEvent
from schemas.identity import MATCH_KINDS, IdentityLink, MatchKind
from schemas.normalize import sha256_hex

MAX_MATCH_KEYS: Final = 8
"""Keys of one event that are looked up; each costs a hop, so the list is bounded."""
HISTORY_KEEP_MS: Final = 24 * 3600 * 1000
HISTORY_MAX_ENTRIES: Final = 64


class LinkRow(NamedTuple):
    """A match key's link: its user (None: unlinked), `linked_at`, and recent changes."""

    user_id: str | None
    linked_at: int
    changes: tuple[tuple[int, str | None], ...] = ()
    """(acknowledged ms, the user before that change), oldest first."""
    complete_from_ms: int = 0
    """`changes` tell the user of every moment from then on; earlier ones were pruned."""


class Resolution(NamedTuple):
    """Who an event is about, from which kind of key, and whether another key disagreed."""

    user_id: str | None
    match: MatchKind | None
    conflict: bool


def match_keys(event: Event) -> list[str]:
    """The event's match keys, in the order they are tried, without repeats."""
    keys: dict[str, None] = {}
    by_kind = _keys_by_kind(event)
    for kind in MATCH_KINDS:
        for value in by_kind.get(kind, ()):
            keys.setdefault(f"{kind}:{value}")
    return list(keys)[:MAX_MATCH_KEYS]


def kind_of(key: str) -> MatchKind:
    """The kind of a match key (`em:...` -> `em`)."""
    kind = key.partition(":")[0]
    if kind not in MATCH_KINDS:
        raise ValueError("not a match key")
    return kind


def advertising_id_key(advertising_id: str | None) -> str | None:
    """The `maid` value of a raw advertising id: SHA-256 of it lowercased; None if zeroed."""
    if not advertising_id or advertising_id.strip("0-") == "":
        return None
    return sha256_hex(advertising_id.strip().lower())


def _keys_by_kind(event: Event) -> dict[MatchKind, list[str]]:
    found: dict[MatchKind, list[str]] = {}
    if isinstance(event, WidgetEvent):
        if event.session_id is not None:
            found["session"] = [event.session_id]
        return found
    user_data = event.user_data
    if user_data is not None:
        if user_data.click_id is not None:
            found["click"] = [user_data.click_id]
        found["em"] = list(user_data.em)
        found["ph"] = list(user_data.ph)
    if isinstance(event, SdkEvent):
        maids = [] if event.user_data is None else list(event.user_data.hashed_maids)
        raw = advertising_id_key(None if event.device is None else event.device.advertising_id)
        if raw is not None:
            maids.append(raw)
        found["maid"] = maids
    return found


def apply_link(
    row: LinkRow | None,
    link: IdentityLink | None,
    acknowledged_ms: int,
    *,
    keep_ms: int = HISTORY_KEEP_MS,
    max_entries: int = HISTORY_MAX_ENTRIES,
) -> LinkRow:
    """The row after a link, an unlink (`deleted`), or a tombstone (`link` None)."""
    current = row or LinkRow(None, -1)
    if link is None:
        user, linked_at = None, current.linked_at
    elif _wins(link, current):
        user, linked_at = (None if link.deleted else link.user_id), link.linked_at
    else:
        return current
    changes, complete_from = current.changes, current.complete_from_ms
    if user != current.user_id:
        changes, complete_from = _remember(
            changes, complete_from, (acknowledged_ms, current.user_id), keep_ms, max_entries
        )
    return LinkRow(user, linked_at, changes, complete_from)


def _wins(link: IdentityLink, current: LinkRow) -> bool:
    if link.linked_at != current.linked_at:
        return link.linked_at > current.linked_at
    if link.deleted:
        return current.user_id is not None
    return current.user_id is not None and (link.user_id or "") > current.user_id


def _remember(
    changes: tuple[tuple[int, str | None], ...],
    complete_from: int,
    change: tuple[int, str | None],
    keep_ms: int,
    max_entries: int,
) -> tuple[tuple[tuple[int, str | None], ...], int]:
    entries = [*changes, change]
    kept = [entry for entry in entries if entry[0] >= change[0] - keep_ms][-max_entries:]
    pruned = entries[: len(entries) - len(kept)]
    if pruned:
        complete_from = max(complete_from, pruned[-1][0] + 1)
    return tuple(kept), complete_from


def user_as_of(row: LinkRow | None, produced_ms: int) -> str | None:
    """The user the key pointed to when an event was produced; None if none, or unclear."""
    if row is None:
        return None
    if produced_ms < row.complete_from_ms:  # older than the changes kept: any of them
        known = [before for _, before in row.changes] + [row.user_id]
        return known[0] if all(user == known[0] for user in known) else None
    candidates = _candidates(row, produced_ms)
    last = candidates[-1]
    return last if all(user is None or user == last for user in candidates) else None


def _candidates(row: LinkRow, produced_ms: int) -> list[str | None]:
    """The key's possible users at `produced_ms`, oldest first: the one before the changes
    of that very millisecond, and the one after each of them."""
    candidates: list[str | None] = []
    for acknowledged_ms, before in row.changes:
        if acknowledged_ms >= produced_ms:
            candidates.append(before)
            if acknowledged_ms > produced_ms:
                return candidates
    candidates.append(row.user_id)
    return candidates


def choose(found: Iterable[tuple[MatchKind, str | None]]) -> Resolution:
    """The resolution from each key's user, in try order: the first linked key wins."""
    winner: tuple[MatchKind, str] | None = None
    conflict = False
    for kind, user_id in found:
        if user_id is None:
            continue
        if winner is None:
            winner = (kind, user_id)
        elif user_id != winner[1]:
            conflict = True
    if winner is None:
        return Resolution(None, None, False)
    return Resolution(winner[1], winner[0], conflict)
