"""Bytes in, a valid record or a `Rejected` out: parsing never raises.

A reject carries a DLQ reason and a detail naming the field and the error type,
never the value, so it can be logged, counted and written to the DLQ safely.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from schemas import codec, normalize
from schemas.audience import AudienceMember
from schemas.consent import ConsentChange
from schemas.events import EVENT_MODELS, Event, SdkEvent, Source, TagEvent
from schemas.fast import FastModel
from schemas.identity import IdentityLink
from schemas.outputs import DlqReason

ModelT = TypeVar("ModelT", bound=BaseModel)

_FIELD_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_MAX_ERRORS_IN_DETAIL: Final = 3
_CONTACT_POINTS: Final = frozenset({"em", "ph"})


@dataclass(frozen=True, slots=True)
class Rejected:
    """An input that cannot be processed: a DLQ reason and a value-free detail."""

    reason: DlqReason
    detail: str


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """Bounds every input must respect (each breach has its DLQ reason)."""

    max_bytes: int = 64 * 1024
    max_age_s: int = 7 * 24 * 3600
    max_future_s: int = 3600
    require_key: bool = True
    age_margin_s: int = 0
    """How much younger than `max_age_s` an event must be: a producer that checks an event
    before Kafka appends it (the collector) leaves the time the append may take, since the
    worker checks the event against the moment of the append."""


DEFAULT_LIMITS: Final = ParseLimits()
_FAST_EVENTS: Final = {source: FastModel(model) for source, model in EVENT_MODELS.items()}
"""The compiled decoders of the hot path (`decode_event`), derived from the models."""


def parse_event(
    source: Source,
    data: bytes | None,
    *,
    now: float,
    key: bytes | None = None,
    limits: ParseLimits = DEFAULT_LIMITS,
) -> Event | Rejected:
    """Validate one raw `source` event, or say why it cannot be processed.

    Args:
        source: which collector the bytes came from (`raw.<source>`).
        data: the record's value, exactly as read.
        now: the current time, unix seconds; bounds `event_time`.
        key: the record's key; checked only when `limits.require_key`.
        limits: size, age and key requirements.
    """
    try:
        checked = _check_envelope(data, key, limits)
        if isinstance(checked, Rejected):
            return checked
        event = _validate_event(EVENT_MODELS[source], checked)
        if isinstance(event, Rejected):
            return event
        return check_event_time(event, now, limits) or event
    except Exception as exc:  # parsing is total: a bug here becomes a reject, not a crash
        return processing_error(exc, "parse")


def decode_event(
    source: Source,
    data: bytes | None,
    *,
    now: float,
    key: bytes | None = None,
    limits: ParseLimits = DEFAULT_LIMITS,
) -> Event | Rejected:
    """`parse_event` on the hot path: the same accepts, rejects and values, decoded in C.

    The event is an instance of the compiled decoder (`schemas.fast`) when that accepts
    the bytes, which reads as the model but is not one (copy it with
    `schemas.fast.replace`); anything it does not accept goes through `parse_event`'s
    pydantic validation, which gives the reject and its detail.
    """
    try:
        checked = _check_envelope(data, key, limits)
        if isinstance(checked, Rejected):
            return checked
        event = _FAST_EVENTS[source].decode(checked)
        if event is None:
            validated = _validate_event(EVENT_MODELS[source], checked)
            if isinstance(validated, Rejected):
                return validated
            event = validated
        return check_event_time(event, now, limits) or event
    except Exception as exc:  # parsing is total: a bug here becomes a reject, not a crash
        return processing_error(exc, "parse")


def parse_consent_change(
    data: bytes | None,
    *,
    now: float | None = None,
    key: bytes | None = None,
    limits: ParseLimits = DEFAULT_LIMITS,
) -> ConsentChange | Rejected:
    """Validate one `consent.changes` record, or say why it cannot be processed.

    Consent changes may be arbitrarily old (replays converge), but when `now` is given
    a `changed_at` more than `limits.max_future_s` ahead is rejected as `in_future`:
    under last-writer-wins it would otherwise pin the field until that time.
    """
    try:
        checked = _check_envelope(data, key, limits)
        if isinstance(checked, Rejected):
            return checked
        change = _validate(ConsentChange, checked)
        if isinstance(change, Rejected):
            return change
        if now is not None and change.changed_at > (now + limits.max_future_s) * 1000:
            return Rejected("in_future", "changed_at: in_future")
        return change
    except Exception as exc:
        return processing_error(exc, "parse")


def parse_audience_member(
    data: bytes | None, *, limits: ParseLimits = DEFAULT_LIMITS
) -> AudienceMember | Rejected:
    """Validate one `raw.audience` record (any key), or say why it cannot be processed."""
    try:
        checked = _check_envelope(data, None, dataclasses.replace(limits, require_key=False))
        if isinstance(checked, Rejected):
            return checked
        return _validate(AudienceMember, checked)
    except Exception as exc:
        return processing_error(exc, "parse")


def parse_identity_link(
    data: bytes | None, *, key: bytes | None = None, limits: ParseLimits = DEFAULT_LIMITS
) -> IdentityLink | Rejected:
    """Validate one `identity.links` record (not a tombstone), or say why it cannot be applied."""
    try:
        checked = _check_envelope(data, key, limits)
        if isinstance(checked, Rejected):
            return checked
        return _validate(IdentityLink, checked)
    except Exception as exc:
        return processing_error(exc, "parse")


def check_event_time(event: Event, now: float, limits: ParseLimits) -> Rejected | None:
    """The reject for an event too far in the past or the future of `now` (the moment Kafka
    appended its record, for the worker), or None."""
    if event.event_time < now - limits.max_age_s + limits.age_margin_s:
        return Rejected("too_old", "event_time: too_old")
    if event.event_time > now + limits.max_future_s:
        return Rejected("in_future", "event_time: in_future")
    return None


def processing_error(exc: BaseException, stage: str) -> Rejected:
    """The reject for an unexpected exception: its type only, never its message."""
    return Rejected("processing_error", f"{stage}: {type(exc).__name__}")


def _check_envelope(data: bytes | None, key: bytes | None, limits: ParseLimits) -> bytes | Rejected:
    if data is None:
        return Rejected("invalid_json", "body: empty")
    if len(data) > limits.max_bytes:
        return Rejected("oversized", f"body: oversized ({len(data)} > {limits.max_bytes} bytes)")
    if limits.require_key and not key:
        return Rejected("missing_key", "key: missing")
    return data


def _validate(model: type[ModelT], data: bytes) -> ModelT | Rejected:
    try:
        return model.model_validate_json(data)
    except ValidationError as exc:
        return _rejected(data, _errors(exc))


def _validate_event(model: type[Event], data: bytes) -> Event | Rejected:
    try:
        return model.model_validate_json(data)
    except ValidationError as exc:
        errors = _errors(exc)
    if errors and all(_is_contact_point_error(error) for error in errors):
        return _ingest_raw_contact_points(model, data, errors)
    return _rejected(data, errors)


def _ingest_raw_contact_points(
    model: type[Event], data: bytes, errors: list[ErrorDetails]
) -> Event | Rejected:
    """Hash the raw emails/phones that failed validation, then validate again.

    The slow path of ingest, taken only when contact points were the only problem, so
    the common, already-hashed event is validated once, without leaving Rust.
    """
    try:
        document = codec.loads(data)
    except codec.DecodeError:
        return _rejected(data, errors)
    hashed_raw = normalize.hash_raw_contact_points(document["user_data"])
    event = _validate(model, codec.dumps(document))
    if hashed_raw and isinstance(event, TagEvent | SdkEvent) and event.user_data is not None:
        return event.model_copy(update={"user_data": event.user_data.with_raw_pii_hashed()})
    return event


def _is_contact_point_error(error: ErrorDetails) -> bool:
    loc = error["loc"]
    return (
        error["type"] == "string_pattern_mismatch"
        and len(loc) == 3
        and loc[0] == "user_data"
        and loc[1] in _CONTACT_POINTS
    )


def _errors(exc: ValidationError) -> list[ErrorDetails]:
    return exc.errors(include_url=False, include_context=False, include_input=False)


def _rejected(data: bytes, errors: list[ErrorDetails]) -> Rejected:
    if errors and errors[0]["type"] == "json_invalid":
        return undecodable(data)
    described = [
        f"{_location(error['loc'])}: {error['type']}" for error in errors[:_MAX_ERRORS_IN_DETAIL]
    ]
    if len(errors) > _MAX_ERRORS_IN_DETAIL:
        described.append(f"(+{len(errors) - _MAX_ERRORS_IN_DETAIL} more)")
    return Rejected("schema_violation", "; ".join(described))


def undecodable(data: bytes) -> Rejected:
    """The reject for bytes that are not JSON: `invalid_utf8` or `invalid_json`."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejected("invalid_utf8", f"body: invalid_utf8 at byte {exc.start}")
    if not data.strip():
        return Rejected("invalid_json", "body: empty")
    return Rejected("invalid_json", "body: json_invalid")


def _location(loc: Iterable[Any]) -> str:
    # Locations hold field names and list indexes; anything else (a union member's
    # tag, say) is dropped, so a detail can never echo input text.
    parts = []
    for part in loc:
        if isinstance(part, int) or (isinstance(part, str) and _FIELD_NAME.fullmatch(part)):
            parts.append(str(part))
    return ".".join(parts) or "body"
