"""Identity resolution restated for the ledger, apart from the pipeline's identity code.

`Links` folds `identity.links` as read back (append order per key, last writer wins by
`linked_at`, an unlink winning a tie, then the greater user id; a tombstone unlinks) and
remembers when Kafka appended each change of a key's user. `expected(...)` says who an
event is about: the user a trusted producer signed, else the first of its match keys
(session, click, em, ph, maid) whose link, as of the moment the raw record was produced,
names someone; `Unclear` when the changes of a key in that very millisecond leave two
users possible, or end with the key unlinked; a key linked in that millisecond (the only
other possibility being nobody) names its user.
"""

from __future__ import annotations

import bisect
import hashlib
from dataclasses import dataclass, field
from typing import Final

from schemas import codec
from schemas.events import Event, SdkEvent, WidgetEvent
from tests.chaos.readback import Message

MAX_KEYS: Final = 8
KINDS: Final = ("session", "click", "em", "ph", "maid")


class Unclear:
    """An event whose subject cannot be restated: a key changed at its very millisecond."""


UNCLEAR: Final = Unclear()


@dataclass
class _Key:
    user: str | None = None
    linked_at: int = -1
    times: list[int] = field(default_factory=list)
    """When Kafka appended each change of the key's user."""
    users: list[str | None] = field(default_factory=list)
    """The key's user after each of those changes."""


@dataclass
class Expected:
    """Who the ledger says an event is about."""

    user: str | None
    match: str
    subject_key: str
    keys: list[str]


class Links:
    """Every link of `identity.links`, folded as the identity table must fold them."""

    def __init__(self) -> None:
        self._pending: list[tuple[int, int, int, bytes, bytes | None]] = []
        self._keys: dict[str, _Key] = {}
        self.links = 0

    def add(self, msg: Message) -> None:
        if msg.key:
            self._pending.append((msg.partition, msg.offset, msg.timestamp, msg.key, msg.value))

    def build(self, rejected: set[tuple[int, int]]) -> None:
        """Fold the links read, leaving out those the pipeline sent to the DLQ."""
        for partition, offset, timestamp, raw_key, value in sorted(self._pending):
            if (partition, offset) in rejected:
                continue
            key = raw_key.decode("utf-8", "replace")
            entry = self._keys.setdefault(key, _Key())
            user, linked_at = _fold(entry, value)
            if user is None and linked_at is None:
                continue  # malformed: the pipeline DLQ'd it too
            self.links += 1
            if user != entry.user:
                entry.times.append(timestamp)
                entry.users.append(user)
            entry.user = user
            entry.linked_at = entry.linked_at if linked_at is None else linked_at
        self._pending.clear()

    def user_at(self, key: str, produced_ms: int) -> str | Unclear | None:
        entry = self._keys.get(key)
        if entry is None:
            return None
        at = bisect.bisect_left(entry.times, produced_ms)
        before = entry.users[at - 1] if at else None
        same_ms = bisect.bisect_right(entry.times, produced_ms)
        possible = [before, *entry.users[at:same_ms]]
        after = possible[-1]
        if all(user is None or user == after for user in possible):
            return after
        return UNCLEAR

    def candidates(self, keys: list[str], produced_ms: int) -> set[str]:
        """Every user one of `keys` named just before `produced_ms` or at that very ms:
        whom an event with an unclear subject may rightly be attributed to."""
        users: set[str | None] = set()
        for key in keys:
            entry = self._keys.get(key)
            if entry is None:
                continue
            at = bisect.bisect_left(entry.times, produced_ms)
            same_ms = bisect.bisect_right(entry.times, produced_ms)
            users.update(entry.users[max(at - 1, 0) : same_ms])
        return {user for user in users if user is not None}

    def changed_after(self, keys: list[str], produced_ms: int) -> bool:
        """Whether any of `keys` changed its user after `produced_ms` (or at it)."""
        for key in keys:
            entry = self._keys.get(key)
            if entry is not None and entry.times and entry.times[-1] >= produced_ms:
                return True
        return False

    def resolve(self, keys: list[str], produced_ms: int) -> str | Unclear | None:
        """The user the first of `keys` with a live link names, as of `produced_ms`."""
        for key in keys:
            user = self.user_at(key, produced_ms)
            if user is not None:
                return user
        return None

    def expected(self, event: Event, produced_ms: int, trusted: str | None) -> Expected | Unclear:
        """The subject of `event`, produced at `produced_ms`; `trusted`: a signed user id."""
        keys = event_keys(event)
        anonymous = _anonymous_subject(event)
        if trusted is not None:
            return Expected(trusted, "provided", trusted, [])
        for key in keys:
            user = self.user_at(key, produced_ms)
            if isinstance(user, Unclear):
                return UNCLEAR
            if user is not None:
                return Expected(user, key.partition(":")[0], user, keys)
        return Expected(None, "none", anonymous, keys)


def _fold(entry: _Key, value: bytes | None) -> tuple[str | None, int | None]:
    """The key's (user, linked_at) after `value`; (None, None) for an unreadable one."""
    if value is None:
        return None, entry.linked_at
    try:
        link = codec.loads(value)
        linked_at = int(link["linked_at"])
        user = None if link.get("deleted") else str(link["user_id"])
    except (codec.DecodeError, KeyError, TypeError, ValueError):
        return None, None
    if linked_at > entry.linked_at:
        return user, linked_at
    if linked_at < entry.linked_at:
        return entry.user, entry.linked_at
    if user is None:
        return None, linked_at
    if entry.user is not None and user > entry.user:
        return user, linked_at
    return entry.user, entry.linked_at


def event_keys(event: Event) -> list[str]:
    """The event's match keys in try order, without repeats, at most `MAX_KEYS`."""
    found: dict[str, list[str]] = {kind: [] for kind in KINDS}
    if isinstance(event, WidgetEvent):
        if event.session_id:
            found["session"].append(event.session_id)
    elif event.user_data is not None:
        if event.user_data.click_id:
            found["click"].append(event.user_data.click_id)
        found["em"].extend(event.user_data.em)
        found["ph"].extend(event.user_data.ph)
    if isinstance(event, SdkEvent):
        if event.user_data is not None:
            found["maid"].extend(event.user_data.hashed_maids)
        advertising_id = event.device.advertising_id if event.device else None
        if advertising_id and advertising_id.strip("0-"):
            found["maid"].append(
                hashlib.sha256(advertising_id.strip().lower().encode()).hexdigest()
            )
    keys: list[str] = []
    for kind in KINDS:
        for value in found[kind]:
            key = f"{kind}:{value}"
            if key not in keys:
                keys.append(key)
    return keys[:MAX_KEYS]


def _anonymous_subject(event: Event) -> str:
    device = event.device.device_id if isinstance(event, SdkEvent) and event.device else None
    cookie = event.browser.cookie_id if event.browser else None
    return "anon:" + (device or cookie or event.event_id)
