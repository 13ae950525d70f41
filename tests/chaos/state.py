"""State recovery: a worker's consent table against a replay of `consent.changes`.

The replay folds every valid change of each user, in the order Kafka appended them, with
the policy core's `apply_change`; consent states are last-writer-wins per field, so the
fold is the state the table must hold. The table is read either from a stopped worker's
RocksDB stores (`<data_dir>/<app_id>/consent/<partition>`) or from its compacted
changelog topic; both hold consent rows as `pipeline.core.stored` writes them (the
recent-change histories are not compared).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pipeline import catalogue
from pipeline.core import stored
from pipeline.core.consent import ConsentState, apply_change
from pipeline.core.parse import Rejected, parse_consent_change
from pipeline.errors import ConsentStateError
from pipeline.settings import Settings
from pipeline.state.stores import RocksStore
from tests.chaos.ledger import Invariant
from tests.chaos.readback import Message, read_topic

MAX_EXAMPLES: Final = 5


@dataclass(frozen=True)
class Stored:
    """A user's row in the consent table."""

    acknowledged_ms: int
    state: ConsentState


async def replay_consent(settings: Settings) -> dict[str, Stored]:
    """Every user's state folded from `consent.changes`, with its newest change's append time."""
    replayed: dict[str, Stored] = {}

    def fold(msg: Message) -> None:
        change = parse_consent_change(msg.value, now=msg.timestamp / 1000, key=msg.key)
        if isinstance(change, Rejected):
            return
        previous = replayed.get(change.user_id)
        state = apply_change(None if previous is None else previous.state, change)
        replayed[change.user_id] = Stored(msg.timestamp, state)

    await read_topic(settings, settings.topic(catalogue.CONSENT_CHANGES), fold)
    return replayed


def _decode(value: bytes) -> Stored:
    row = stored.decode_consent_row(value)
    return Stored(row.acknowledged_ms, row.state)


def rocksdb_table(settings: Settings) -> Iterator[tuple[bytes, bytes]]:
    """The consent rows of a stopped worker's RocksDB stores, every partition."""
    root: Path = settings.data_dir / settings.app_id / "consent"
    if not root.is_dir():
        return
    for partition_dir in sorted(root.iterdir()):
        store = RocksStore(partition_dir)
        try:
            for key in store.scan():
                value = store.get(key)
                if value is not None and not stored.is_history_key(key):
                    yield key, value
        finally:
            store.close()


async def changelog_table(settings: Settings) -> dict[bytes, bytes]:
    """The consent rows of the worker's changelog topic: each key's newest value."""
    table: dict[bytes, bytes | None] = {}

    def keep(msg: Message) -> None:
        if msg.key is not None and not stored.is_history_key(msg.key):
            table[msg.key] = msg.value

    await read_topic(settings, settings.topic(catalogue.changelog("consent")), keep)
    return {key: value for key, value in table.items() if value is not None}


def compare(
    name: str, rows: Iterator[tuple[bytes, bytes]] | dict[bytes, bytes], replay: dict[str, Stored]
) -> Invariant:
    """The table equals the replay: the same users, states and acknowledgement times."""
    items = rows.items() if isinstance(rows, dict) else rows
    seen: set[str] = set()
    different = extra = unreadable = 0
    examples: list[str] = []
    for key, value in items:
        user = key.decode("utf-8", "replace")
        seen.add(user)
        expected = replay.get(user)
        try:
            stored = _decode(value)
        except (ValueError, ConsentStateError):
            unreadable += 1
            continue
        if expected is None:
            extra += 1
            _example(examples, "a row with no consent change behind it")
        elif stored.state.to_dict() != expected.state.to_dict():
            different += 1
            _example(examples, "a state that differs from the replay")
        elif stored.acknowledged_ms != expected.acknowledged_ms:
            different += 1
            _example(examples, "an acknowledgement time that differs from the replay")
    missing = len(set(replay) - seen)
    if missing:
        _example(examples, f"{missing} users of the replay missing from the table")
    counts = {
        "users_in_replay": len(replay),
        "rows_in_table": len(seen),
        "different": different,
        "missing": missing,
        "extra": extra,
        "unreadable": unreadable,
    }
    passed = different == missing == extra == unreadable == 0 and bool(replay)
    return Invariant(name, passed, counts, examples)


def _example(examples: list[str], text: str) -> None:
    if len(examples) < MAX_EXAMPLES:
        examples.append(text)
