"""A user's consent state, folded from `consent.changes`.

Every field is last-writer-wins by `changed_at`, independently of the others, so replays
and out-of-order delivery converge on the same state. Two changes stamped with the same
millisecond are broken by value, the more restrictive winning: a setting `false` over
`null` over `true`; an unknown country or birth year over a known one, then the later
birth year and the greater country code; an ATT status other than `authorized` over
`authorized`; an ads opt-out over none. The result never depends on arrival order.

Deletion is final: once a change with `deleted: true` is seen, the state keeps only the
user id, the flag and the newest `changed_at`, whatever arrives before or after it.

States are named tuples (immutable and cheap to build: the streaming layer decodes one
per event) and round-trip through `to_dict` / `from_dict`; `pipeline.core.stored` holds
the bytes a table keeps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any, Final, Generic, NamedTuple, TypeVar

from pipeline.core.errors import ConsentStateError
from schemas.consent import ConsentChange
from schemas.events import AttStatus

V = TypeVar("V")

STATE_FORMAT: Final = 1
_NO_DEVICES: Final[Mapping[str, DeviceState]] = MappingProxyType({})


class Stamped(NamedTuple, Generic[V]):
    """A field's value and the `changed_at` (unix ms) of the change that set it."""

    value: V
    changed_at: int


class DeviceState(NamedTuple):
    """Choices recorded for one of the user's devices; `None` when never set."""

    platform: Stamped[str | None] | None = None
    att_status: Stamped[AttStatus | None] | None = None
    ads_opt_out: Stamped[bool | None] | None = None


class ConsentState(NamedTuple):
    """Everything the policy knows about one user's choices; `None` fields were never set.

    `version` is the newest `changed_at` folded in: the consent version an audit cites.
    """

    user_id: str
    version: int
    deleted: bool = False
    personalization: Stamped[bool | None] | None = None
    ads_from_partner_info: Stamped[bool | None] | None = None
    partner_sharing: Stamped[bool | None] | None = None
    country: Stamped[str | None] | None = None
    birth_year: Stamped[int | None] | None = None
    devices: Mapping[str, DeviceState] = _NO_DEVICES

    def to_dict(self) -> dict[str, Any]:
        """A compact, JSON-ready form for a key-value store; `from_dict` reverses it."""
        return {
            "format": STATE_FORMAT,
            "user_id": self.user_id,
            "version": self.version,
            "deleted": self.deleted,
            "fields": _stamped_to_dict(self, _STATE_FIELDS),
            "devices": {
                device_id: _stamped_to_dict(device, _DEVICE_FIELDS)
                for device_id, device in self.devices.items()
            },
        }

    @classmethod
    def from_dict(cls, data: Any) -> ConsentState:
        """Rebuild a state from `to_dict` output.

        Raises:
            ConsentStateError: `data` is not a state this version wrote.
        """
        try:
            user_id, version, deleted = data["user_id"], data["version"], data["deleted"]
            if (
                data["format"] != STATE_FORMAT
                or type(user_id) is not str
                or type(version) is not int
                or type(deleted) is not bool
            ):
                raise ValueError("unexpected format or type")
            devices = {
                device_id: DeviceState(**_stamped_from_dict(raw, _DEVICE_FIELDS))
                for device_id, raw in data["devices"].items()
            }
            return cls(
                user_id,
                version,
                deleted,
                devices=MappingProxyType(devices) if devices else _NO_DEVICES,
                **_stamped_from_dict(data["fields"], _STATE_FIELDS),
            )
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ConsentStateError(
                f"stored consent state is malformed ({type(exc).__name__})"
            ) from None


def apply_change(state: ConsentState | None, change: ConsentChange) -> ConsentState:
    """The state after `change`; `None` stands for a user with no record yet.

    Raises:
        ConsentStateError: `change` is for another user than `state`.
    """
    if state is None:
        state = ConsentState(user_id=change.user_id, version=change.changed_at)
    elif state.user_id != change.user_id:
        raise ConsentStateError("consent change is for another user than the state")
    version = max(state.version, change.changed_at)
    if state.deleted or change.deleted:
        return ConsentState(user_id=state.user_id, version=version, deleted=True)

    updates: dict[str, Any] = {"version": version}
    for part in (change.settings, change.profile):
        if part is not None:
            for name in part.model_fields_set:
                candidate = Stamped(getattr(part, name), change.changed_at)
                updates[name] = _last_writer(getattr(state, name), candidate, _STATE_FIELDS[name])
    if change.device is not None:
        device_id = change.device.device_id
        device = state.devices.get(device_id, DeviceState())
        device_updates = {
            name: _last_writer(
                getattr(device, name),
                Stamped(getattr(change.device, name), change.changed_at),
                _DEVICE_FIELDS[name],
            )
            for name in change.device.model_fields_set & _DEVICE_FIELDS.keys()
        }
        updates["devices"] = MappingProxyType(
            {**state.devices, device_id: device._replace(**device_updates)}
        )
    return state._replace(**updates)


def fold(
    changes: Iterable[ConsentChange], state: ConsentState | None = None
) -> ConsentState | None:
    """Apply `changes`, in any order, to `state`; `None` if there were none and no state.

    Raises:
        ConsentStateError: the changes are for more than one user.
    """
    for change in changes:
        state = apply_change(state, change)
    return state


class _FieldRule(NamedTuple):
    """How one field breaks same-millisecond ties, and which stored values are valid."""

    restrictiveness: Callable[[Any], Any]
    value_types: tuple[type, ...]


def _last_writer(
    current: Stamped[Any] | None, candidate: Stamped[Any], rule: _FieldRule
) -> Stamped[Any]:
    if current is None or candidate.changed_at > current.changed_at:
        return candidate
    if candidate.changed_at < current.changed_at:
        return current
    more_restrictive = rule.restrictiveness(candidate.value) > rule.restrictiveness(current.value)
    return candidate if more_restrictive else current


def _permission(value: bool | None) -> int:
    """A granted permission is the least restrictive value; unset sits in between."""
    return 0 if value is True else 1 if value is None else 2


def _opt_out(value: bool | None) -> int:
    return 2 if value is True else 1 if value is None else 0


def _att_status(value: AttStatus | None) -> int:
    """A total order (any order of same-millisecond changes gives one state): authorized,
    unset, not determined, denied, restricted (which the person cannot change)."""
    return _ATT_ORDER[value]


def _unknown_first(value: str | None) -> tuple[bool, str]:
    return (value is None, value or "")


def _birth_year(value: int | None) -> tuple[bool, int]:
    return (value is None, value or 0)


_STATE_FIELDS: Final[Mapping[str, _FieldRule]] = MappingProxyType(
    {
        "personalization": _FieldRule(_permission, (bool,)),
        "ads_from_partner_info": _FieldRule(_permission, (bool,)),
        "partner_sharing": _FieldRule(_permission, (bool,)),
        "country": _FieldRule(_unknown_first, (str,)),
        "birth_year": _FieldRule(_birth_year, (int,)),
    }
)
_DEVICE_FIELDS: Final[Mapping[str, _FieldRule]] = MappingProxyType(
    {
        "platform": _FieldRule(_unknown_first, (str,)),
        "att_status": _FieldRule(_att_status, (str,)),
        "ads_opt_out": _FieldRule(_opt_out, (bool,)),
    }
)
_ATT_ORDER: Final[Mapping[AttStatus | None, int]] = MappingProxyType(
    {"authorized": 0, None: 1, "not_determined": 2, "denied": 3, "restricted": 4}
)
_ATT_STATUSES: Final = frozenset({"authorized", "denied", "restricted", "not_determined"})


def _stamped_to_dict(
    record: ConsentState | DeviceState, rules: Mapping[str, _FieldRule]
) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for name in rules:
        stamped = getattr(record, name)
        if stamped is not None:
            out[name] = [stamped.value, stamped.changed_at]
    return out


def _stamped_from_dict(raw: Any, rules: Mapping[str, _FieldRule]) -> dict[str, Stamped[Any]]:
    out: dict[str, Stamped[Any]] = {}
    for name, (value, changed_at) in raw.items():
        # `type(...) in` rather than isinstance: a bool is not an acceptable int here
        if type(changed_at) is not int or (
            value is not None and type(value) not in rules[name].value_types
        ):
            raise TypeError("unexpected type")
        if name == "att_status" and value is not None and value not in _ATT_STATUSES:
            raise ValueError("unexpected value")
        out[name] = Stamped(value, changed_at)
    return out


class Snapshot(NamedTuple):
    """A user's state just before a change Kafka acknowledged at `acknowledged_ms`."""

    acknowledged_ms: int
    before: ConsentState | None


class History(NamedTuple):
    """The states before a user's recent changes, oldest first.

    `complete_from_ms`: the history knows the state of every moment from then on; earlier
    snapshots were pruned (by age or count).
    """

    snapshots: tuple[Snapshot, ...] = ()
    complete_from_ms: int = 0


def remember(
    history: History,
    before: ConsentState | None,
    acknowledged_ms: int,
    *,
    keep_ms: int,
    max_entries: int,
) -> History:
    """`history` with the state before a newly applied change, pruned to the window."""
    snapshots = [*history.snapshots, Snapshot(acknowledged_ms, before)]
    kept = [s for s in snapshots if s.acknowledged_ms >= acknowledged_ms - keep_ms]
    kept = kept[-max_entries:]
    pruned = snapshots[: len(snapshots) - len(kept)]
    complete_from = history.complete_from_ms
    if pruned:
        complete_from = max(complete_from, pruned[-1].acknowledged_ms + 1)
    return History(tuple(kept), complete_from)


def states_as_of(
    history: History, current: ConsentState | None, produced_ms: int
) -> list[ConsentState | None]:
    """Every state the user may have had when an event was produced at `produced_ms`.

    Changes apply in the order Kafka acknowledged them, so the state then is the state
    before the first change acknowledged after it. Changes in the same millisecond as the
    event may have come before or after it, so each state around them is a candidate. If
    the history no longer reaches back to `produced_ms`, every state it holds is one.
    """
    if produced_ms < history.complete_from_ms:
        return [s.before for s in history.snapshots] + [current]
    candidates: list[ConsentState | None] = []
    for snapshot in history.snapshots:
        if snapshot.acknowledged_ms >= produced_ms:
            candidates.append(snapshot.before)
            if snapshot.acknowledged_ms > produced_ms:
                return candidates
    candidates.append(current)
    return candidates
