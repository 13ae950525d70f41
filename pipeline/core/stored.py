"""The bytes a table keeps: the one place that encodes and decodes stored values.

Tables (`pipeline.state`) hold bytes to bytes; their changelog topics carry the same
bytes. Nothing but this module builds or parses them:

- consent table, user rows: key `<user id>`, value `<acknowledged ms>:[2, <state>]`, the
  unix ms at which Kafka appended the newest change folded in, then the state as a JSON
  array of `ConsentState`'s fields in order (each stamped field `[value, changed_at]` or
  null, devices `{device id: [platform, att_status, ads_opt_out]}`), decoded and
  type-checked in C in a few µs, so no cache of decoded states is needed. Rows written
  before carry the state as `ConsentState.to_dict` writes it (`{...}`, also bare, with
  the time unknown: -1) and still read.
- consent table, histories: key `\\x01<user id>`, value `[complete_from_ms, [[ms,
  state or null], ...]]`, the states before the user's recent changes.
- dedup table: key `<advertiser id>\\x1f<event id>`, value `[topic, partition, offset,
  seen_at]`, where the event was first read and when (unix seconds).
- aggregates table: key `\\x00meta`, value `[closed_before, late_events]`; every other key
  is a cell key as a JSON list, value `[count, value_sum]`.
- identity table: key `<match key>`, value `[user_id or null, linked_at, complete_from_ms,
  [[acknowledged ms, user before or null], ...]]`.
- memberships table: key `<user id>`, value `[[advertiser id, audience id, state,
  uploaded_at], ...]`, the state `active`, `suppressed`, `restricted` or `removed`,
  `uploaded_at` the unix ms of the newest change applied.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Final, Literal, NamedTuple

import msgspec

from pipeline.core.aggregate import Cell, CellKey, cell_key_from_list
from pipeline.core.audience import Entry, Memberships
from pipeline.core.consent import ConsentState, History, Snapshot
from pipeline.core.errors import ConsentStateError
from pipeline.core.identity import LinkRow
from schemas import codec

HISTORY_PREFIX: Final = b"\x01"
AGGREGATE_META_KEY: Final = b"\x00meta"
UNKNOWN_ACKNOWLEDGEMENT: Final = -1


class ConsentRow(NamedTuple):
    """A user's row in the consent table."""

    state: ConsentState
    acknowledged_ms: int
    """When Kafka appended the newest change folded into `state` (unix ms; -1 unknown)."""


class DedupEntry(NamedTuple):
    """Where an (advertiser, event id) was first read, and when (unix seconds)."""

    topic: str
    partition: int
    offset: int
    seen_at: float


# -- consent ------------------------------------------------------------------------


COMPACT_STATE_FORMAT: Final = 2
_NO_DEVICES: Final = ConsentState._field_defaults["devices"]
assert ConsentState._fields[-1] == "devices", "decode_state replaces the last field"


def _devices_as_dict(value: object) -> object:
    if isinstance(value, MappingProxyType):
        return dict(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


_STATE_ENCODER: Final = msgspec.json.Encoder(enc_hook=_devices_as_dict)
_STATE_DECODER: Final = msgspec.json.Decoder(tuple[Literal[2], ConsentState])


def encode_state(state: ConsentState) -> bytes:
    """A consent state as a compact JSON array (`[2, [user_id, version, ...]]`)."""
    return _STATE_ENCODER.encode((COMPACT_STATE_FORMAT, state))


def decode_state(data: bytes) -> ConsentState:
    """A consent state from `encode_state` bytes, or from `ConsentState.to_dict`'s JSON.

    Raises:
        ConsentStateError: `data` is not a state this version wrote.
    """
    if data[:1] != b"{":
        try:
            state = _STATE_DECODER.decode(data)[1]
        except msgspec.MsgspecError as exc:  # its message may quote stored values
            raise ConsentStateError(
                f"stored consent state is malformed ({type(exc).__name__})"
            ) from None
        devices = state.devices  # decoded as a dict; states hold read-only mappings
        return ConsentState._make(
            (*state[:-1], MappingProxyType(devices) if devices else _NO_DEVICES)
        )
    try:
        decoded = codec.loads(data)
    except codec.DecodeError:
        raise ConsentStateError("stored consent state is not JSON") from None
    return ConsentState.from_dict(decoded)


def encode_consent_row(state: ConsentState, acknowledged_ms: int) -> bytes:
    """A user row of the consent table."""
    return b"%d:" % acknowledged_ms + encode_state(state)


def decode_consent_row(data: bytes) -> ConsentRow:
    """A user row of the consent table, from `encode_consent_row` bytes (or a bare state).

    Raises:
        ConsentStateError: `data` is not a row this version wrote.
    """
    if data[:1] == b"{":  # a bare state, as rows were before they carried the time
        return ConsentRow(decode_state(data), UNKNOWN_ACKNOWLEDGEMENT)
    stamp, separator, state = data.partition(b":")
    if not separator or not stamp.isdigit():
        raise ConsentStateError("stored consent row has no acknowledgement time")
    return ConsentRow(decode_state(state), int(stamp))


def history_key(user_key: bytes) -> bytes:
    """The consent-table key of a user's history."""
    return HISTORY_PREFIX + user_key


def is_history_key(key: bytes) -> bool:
    """Whether a consent-table key is a history's rather than a user row's."""
    return key.startswith(HISTORY_PREFIX)


def encode_history(history: History) -> bytes:
    """A user's consent history."""
    return codec.dumps(
        [
            history.complete_from_ms,
            [
                [s.acknowledged_ms, None if s.before is None else s.before.to_dict()]
                for s in history.snapshots
            ],
        ]
    )


def decode_history(data: bytes) -> History:
    """A user's consent history from `encode_history` bytes.

    Raises:
        ConsentStateError: `data` is not a history this version wrote.
    """
    try:
        complete_from, raw = codec.loads(data)
        return History(
            tuple(
                Snapshot(int(ms), None if state is None else ConsentState.from_dict(state))
                for ms, state in raw
            ),
            int(complete_from),
        )
    except (codec.DecodeError, TypeError, ValueError):
        raise ConsentStateError("stored consent history is malformed") from None


# -- dedup --------------------------------------------------------------------------


def dedup_key(advertiser_id: str | None, event_id: str) -> bytes:
    """The dedup-table key of an (advertiser, event id)."""
    return f"{advertiser_id or ''}\x1f{event_id}".encode()


def encode_dedup(entry: DedupEntry) -> bytes:
    """A dedup entry."""
    return codec.dumps(list(entry))


def decode_dedup(data: bytes) -> DedupEntry:
    """A dedup entry from `encode_dedup` bytes."""
    topic, partition, offset, seen_at = codec.loads(data)
    return DedupEntry(topic, partition, offset, seen_at)


# -- aggregates ---------------------------------------------------------------------


def encode_cell_key(key: CellKey) -> bytes:
    """An aggregation cell's table key."""
    return codec.dumps(list(key))


def decode_cell_key(data: bytes) -> CellKey:
    """An aggregation cell key from `encode_cell_key` bytes."""
    return cell_key_from_list(codec.loads(data))


def encode_cell(cell: Cell) -> bytes:
    """An open aggregation cell's counts."""
    return codec.dumps([cell.count, cell.value_sum])


def decode_cell(data: bytes) -> Cell:
    """An open aggregation cell from `encode_cell` bytes."""
    count, value_sum = codec.loads(data)
    return Cell(count, value_sum)


def encode_aggregate_meta(closed_before: int, late_events: int) -> bytes:
    """The aggregates table's closed-hour mark and late-event count."""
    return codec.dumps([closed_before, late_events])


def decode_aggregate_meta(data: bytes) -> tuple[int, int]:
    """`(closed_before, late_events)` from `encode_aggregate_meta` bytes."""
    closed_before, late_events = codec.loads(data)
    return int(closed_before), int(late_events)


# -- identity -----------------------------------------------------------------------


def encode_link_row(row: LinkRow) -> bytes:
    """A match key's row of the identity table."""
    return codec.dumps(
        [row.user_id, row.linked_at, row.complete_from_ms, [list(c) for c in row.changes]]
    )


def decode_link_row(data: bytes) -> LinkRow:
    """A match key's row from `encode_link_row` bytes.

    Raises:
        ValueError: `data` is not a row this version wrote.
    """
    try:
        user_id, linked_at, complete_from, changes = codec.loads(data)
        if (user_id is not None and type(user_id) is not str) or type(linked_at) is not int:
            raise TypeError("unexpected type")
        return LinkRow(
            user_id,
            linked_at,
            tuple((int(ms), before) for ms, before in changes),
            int(complete_from),
        )
    except (codec.DecodeError, TypeError, ValueError):
        raise ValueError("stored identity row is malformed") from None


# -- memberships --------------------------------------------------------------------

_STATES: Final = frozenset({"active", "suppressed", "restricted", "removed"})


def encode_memberships(memberships: Memberships) -> bytes:
    """A user's customer-list memberships."""
    return codec.dumps(
        [
            [a, b, entry.state, entry.uploaded_at]
            for (a, b), entry in sorted(memberships.entries.items())
        ]
    )


def decode_memberships(data: bytes) -> Memberships:
    """A user's memberships from `encode_memberships` bytes.

    Raises:
        ValueError: `data` is not a row this version wrote.
    """
    try:
        rows = codec.loads(data)
        entries = {}
        for advertiser, audience, state, uploaded_at in rows:
            if (
                state not in _STATES
                or type(advertiser) is not str
                or type(audience) is not str
                or type(uploaded_at) is not int
            ):
                raise ValueError("unexpected value")
            entries[advertiser, audience] = Entry(state, uploaded_at)
        return Memberships(entries)
    except (codec.DecodeError, TypeError, ValueError):
        raise ValueError("stored memberships are malformed") from None
