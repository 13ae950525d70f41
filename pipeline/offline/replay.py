"""The `decide` command: decide events offline, one JSON line in, one JSON line out.

Usage: `consent-pipeline decide [FILE] [--links LINKS.jsonl] [--consent CONSENT.jsonl]
[--from-kafka]` (standard input without FILE).

Each input line is an object, an event::

    {"source": "tag" | "sdk" | "widget",
     "event": {...raw event...},
     "consent": [consent changes for the event's subject, any order] | null,
     "now": unix seconds (optional; default: when the command started)}

or a customer-list member, with the user its match keys resolved to::

    {"source": "audience",
     "member": {...raw.audience record...},
     "user_id": the resolved user | null (no key matched),
     "consent": [consent changes for that user] | null}

Who an event is about is found as the worker finds it: a `user_id` inside the event
counts as a trusted producer's (the pipeline takes it only from a signed record);
otherwise the event's match keys are looked up in the identity snapshot (`--links`, or
`identity.links` with `--from-kafka`), the first linked key winning. Without a snapshot,
such an event is anonymous, and the output says no snapshot was given. A line without
`consent` takes its subject's changes from the consent snapshot (`--consent`, or
`consent.changes` with `--from-kafka`). A field the line carries that `decide` does not
read (a top-level `user_id` on an event line) is reported under `ignored`, never dropped
silently.

Each output line, in input order, is either the decision::

    {"event_id": ..., "outcomes": {"personalization": "allow" | "deny", "ads": ...,
     "measurement": "identified" | "deidentified", "partner_sharing": ...},
     "reasons": [sorted rule codes], "policy_version": ...,
     "subject": {"match": "provided" | "em" | ... | "none", "conflict": bool,
                 "said": "found by a hashed email address"},
     "said": {purpose: what happened to the data, in the words `explain` uses},
     "ignored": [...] (only when something was)}

    {"member_id": ..., "membership": "allow" | "deny", "reasons": [...],
     "policy_version": ..., "consent_version": ...}

or, for a line that cannot be decided, `{"line": N, "error": {"reason": <dlq reason>,
"detail": <field and error type, never the value>}}`.

Lines are numbered from 1; an empty line is an error too, so output lines always pair
up with input lines. A line longer than `max_line_bytes` is `oversized`. The event and
each consent change are re-encoded and go through the streaming parser, so they are
validated, normalized and bounded (size, age) exactly as in the pipeline; lines have no
Kafka key, so `missing_key` never occurs. Consent changes for another user than the
event's subject (or the member's `user_id`) are a `schema_violation`; for an anonymous
event or an unmatched member they are ignored. A summary goes to `errors`; the exit code
is 0 unless the input cannot be read.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, BinaryIO, Final, TextIO

from pipeline.core.audience import decide_membership, member_id
from pipeline.core.consent import fold
from pipeline.core.parse import (
    ParseLimits,
    Rejected,
    parse_audience_member,
    parse_consent_change,
    parse_event,
    processing_error,
    undecodable,
)
from pipeline.core.policy import PolicyConfig, decide
from pipeline.core.reasons import PURPOSES, identity_words, sentence
from pipeline.errors import PipelineError
from schemas import codec
from schemas.consent import ConsentChange
from schemas.events import Source
from schemas.identity import IdentityMatch

if TYPE_CHECKING:
    from pipeline.offline.snapshot import Snapshot

DEFAULT_MAX_LINE_BYTES: Final = 1024 * 1024
_EXIT_UNREADABLE: Final = 1
_SOURCES: Final[frozenset[Source]] = frozenset({"tag", "sdk", "widget"})
_EVENT_LINE_FIELDS: Final = frozenset({"source", "event", "consent", "now"})
_NO_SNAPSHOT: Final = (
    "no identity snapshot given (--links or --from-kafka): match keys were not looked up"
)


def run_decide(
    source: BinaryIO,
    sink: BinaryIO,
    errors: TextIO,
    config: PolicyConfig,
    *,
    limits: ParseLimits | None = None,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    clock: Callable[[], float] = time.time,
    snapshot: Snapshot | None = None,
) -> int:
    """Decide every line of `source` into `sink`; return the exit code.

    Args:
        limits: event age limits (the key requirement is ignored: lines have no key).
        max_line_bytes: longer lines are rejected as `oversized`.
        clock: the default `now` for lines without one, read once at start.
        snapshot: identity links and consent changes to resolve and decide events by.
    """
    limits = dataclasses.replace(limits or ParseLimits(), require_key=False)
    default_now = clock()
    rejected: Counter[str] = Counter()
    number = 0
    try:
        for number, line in enumerate(_lines(source, max_line_bytes), start=1):
            result = _decide_line(line, default_now, config, limits, snapshot)
            if isinstance(result, Rejected):
                rejected[result.reason] += 1
                output: dict[str, Any] = {
                    "line": number,
                    "error": {"reason": result.reason, "detail": result.detail},
                }
            else:
                output = result
            sink.write(codec.dumps(output) + b"\n")
    except _UnreadableInputError as exc:
        errors.write(f"decide: cannot read input after line {number} ({exc})\n")
        return _EXIT_UNREADABLE
    sink.flush()
    errors.write(_summary(number, rejected))
    return 0


def _decide_line(
    line: bytes | None,
    default_now: float,
    config: PolicyConfig,
    limits: ParseLimits,
    snapshot: Snapshot | None,
) -> dict[str, Any] | Rejected:
    if line is None:
        return Rejected("oversized", "line: oversized")
    try:
        request = codec.loads(line)
    except codec.DecodeError:
        return undecodable(line)
    try:
        return _decide_request(request, default_now, config, limits, snapshot)
    except Exception as exc:  # one bad line must not stop the run
        return processing_error(exc, "decide")


def _decide_request(
    request: Any,
    default_now: float,
    config: PolicyConfig,
    limits: ParseLimits,
    snapshot: Snapshot | None,
) -> dict[str, Any] | Rejected:
    if not isinstance(request, dict):
        return Rejected("schema_violation", "line: model_type")
    source = request.get("source")
    if source == "audience":
        return _decide_member(request, config, limits)
    if source not in _SOURCES:
        return _schema_violation(request, "source", "literal_error")
    if not isinstance(request.get("event"), dict):
        return _schema_violation(request, "event", "model_type")
    now = request.get("now")
    if now is None:
        now = default_now
    elif isinstance(now, bool) or not isinstance(now, int | float):
        return Rejected("schema_violation", "now: float_type")
    raw_changes = request.get("consent")
    if raw_changes is not None and not isinstance(raw_changes, list):
        return Rejected("schema_violation", "consent: list_type")

    event = parse_event(source, codec.dumps(request["event"]), now=now, limits=limits)
    if isinstance(event, Rejected):
        return _within(event, "event")
    ignored = [
        f"{name}: not read on an event line" + (_USER_ID_HINT if name == "user_id" else "")
        for name in sorted(set(request) - _EVENT_LINE_FIELDS)
    ]
    match: IdentityMatch = "none"
    conflict = False
    if event.user_id is not None:
        match = "provided"
    elif snapshot is not None and snapshot.has_links:
        found = snapshot.resolve(event)
        if found.user_id is not None and found.match is not None:
            event = event.model_copy(update={"user_id": found.user_id})
            match, conflict = found.match, found.conflict
    else:
        ignored.append(_NO_SNAPSHOT)
    if raw_changes is None and snapshot is not None and event.user_id is not None:
        changes: list[ConsentChange] | Rejected = list(snapshot.consent.get(event.user_id, ()))
    else:
        changes = _consent_of(event.user_id, raw_changes, limits)
    if isinstance(changes, Rejected):
        return changes

    decision = decide(event, fold(changes), config)
    output: dict[str, Any] = {
        "event_id": event.event_id,
        "outcomes": decision.outcomes(),
        "reasons": list(decision.reasons),
        "policy_version": decision.policy_version,
        "subject": {"match": match, "conflict": conflict, "said": identity_words(match)},
        "said": {
            purpose: sentence(purpose, outcome, decision.reasons)
            for purpose, outcome in zip(PURPOSES, decision.outcomes().values(), strict=True)
        },
    }
    if ignored:
        output["ignored"] = ignored
    return output


_USER_ID_HINT: Final = (
    " (a member line's field; put it inside the event to decide it as a trusted producer's)"
)


def _decide_member(
    request: dict[str, Any], config: PolicyConfig, limits: ParseLimits
) -> dict[str, Any] | Rejected:
    if not isinstance(request.get("member"), dict):
        return _schema_violation(request, "member", "model_type")
    user_id = request.get("user_id")
    if user_id is not None and not (isinstance(user_id, str) and user_id):
        return Rejected("schema_violation", "user_id: string_type")
    raw_changes = request.get("consent")
    if raw_changes is not None and not isinstance(raw_changes, list):
        return Rejected("schema_violation", "consent: list_type")
    member = parse_audience_member(codec.dumps(request["member"]), limits=limits)
    if isinstance(member, Rejected):
        return _within(member, "member")
    changes = _consent_of(user_id, raw_changes, limits)
    if isinstance(changes, Rejected):
        return changes
    decision = decide_membership(member, user_id, fold(changes), config)
    return {
        "member_id": member_id(member),
        "membership": "allow" if decision.allowed else "deny",
        "reasons": list(decision.reasons),
        "policy_version": decision.policy_version,
        "consent_version": decision.consent_version,
    }


def _consent_of(
    user_id: str | None, raw_changes: list[Any] | None, limits: ParseLimits
) -> list[ConsentChange] | Rejected:
    """The consent changes of a line, all of `user_id` (none when it is None)."""
    changes: list[ConsentChange] = []
    for index, raw_change in enumerate(raw_changes or ()):
        change = parse_consent_change(codec.dumps(raw_change), limits=limits)
        if isinstance(change, Rejected):
            return _within(change, f"consent.{index}")
        if user_id is not None and change.user_id != user_id:
            return Rejected("schema_violation", f"consent.{index}.user_id: user_mismatch")
        changes.append(change)
    return changes if user_id is not None else []


def _schema_violation(request: dict[str, Any], name: str, error_type: str) -> Rejected:
    return Rejected("schema_violation", f"{name}: {error_type if name in request else 'missing'}")


def _within(rejected: Rejected, field: str) -> Rejected:
    """`rejected` with its detail's field paths placed under `field`."""
    parts = []
    for part in rejected.detail.split("; "):
        if part.startswith("body:"):
            part = field + part.removeprefix("body")
        elif not part.startswith("(+"):
            part = f"{field}.{part}"
        parts.append(part)
    return Rejected(rejected.reason, "; ".join(parts))


class _UnreadableInputError(PipelineError):
    """Reading the input failed; the message is the OS error's type."""


def _lines(source: BinaryIO, max_line_bytes: int) -> Iterator[bytes | None]:
    """Each line without its line ending, or None for one longer than the limit."""
    while line := _read_line(source, max_line_bytes + 1):
        if len(line) > max_line_bytes and not line.endswith(b"\n"):
            while (rest := _read_line(source, max_line_bytes)) and not rest.endswith(b"\n"):
                pass
            yield None
            continue
        yield line.removesuffix(b"\n").removesuffix(b"\r")


def _read_line(source: BinaryIO, limit: int) -> bytes:
    try:
        return source.readline(limit)
    except OSError as exc:
        raise _UnreadableInputError(type(exc).__name__) from exc


def _summary(lines: int, rejected: Counter[str]) -> str:
    total = sum(rejected.values())
    summary = f"decide: {lines} lines, {lines - total} decided, {total} rejected"
    if rejected:
        summary += (
            " (" + ", ".join(f"{reason}: {n}" for reason, n in sorted(rejected.items())) + ")"
        )
    return summary + "\n"
