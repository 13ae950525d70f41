"""`consent-pipeline explain`: why one event was decided as it was, from the audit itself.

How it searches, so it stays bounded on large topics:

- by **audit coordinates** (`--audit PARTITION:OFFSET`): one read;
- by **raw coordinates** (`--topic T --partition P --offset O`): the raw record is read
  first; its Kafka timestamp bounds the search of `decisions.audit` and `dlq` (from a
  minute before it), and records are matched on their `origin`;
- by **advertiser and event id**: every partition of `decisions.audit` and `dlq` from
  `--since` (default: the last 24 hours), matched on the audit's `advertiser_id` and
  `event_id` and on the dead letter's original bytes.

Each scan reads committed records only, to the end offsets of when it started, within a
time budget; a progress line goes to stderr while it reads. The consent version's
acknowledgement is looked up in `consent.changes` near the version's time, by the HMAC
user key, when an HMAC key is at hand. Nothing printed is personal data: no hashes,
addresses or user ids; the subject is named by how it was found, never by its key.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from pipeline import catalogue
from pipeline.core.deidentify import Pseudonymizer
from pipeline.core.reasons import (
    PURPOSE_WORDS,
    PURPOSES,
    dlq_words,
    identity_words,
    rule,
    sentence,
)
from pipeline.forensics.scan import Found, Progress, Reader, Reporter
from pipeline.settings import Settings
from schemas import codec

SLACK_MS: Final = 60_000
"""How far before a raw record's timestamp (or a consent version) the searches start."""
CONSENT_WINDOW_MS: Final = 24 * 3600 * 1000
"""How long after a consent version its record is looked for."""


@dataclass(frozen=True, slots=True)
class Query:
    """What to explain: an event by its ids, a raw record, or an audit record."""

    advertiser_id: str | None = None
    event_id: str | None = None
    raw: tuple[str, int, int] | None = None
    """(topic, partition, offset) of the raw input."""
    audit: tuple[int, int] | None = None
    """(partition, offset) of the audit record."""
    since_ms: int | None = None
    budget_s: float = 30.0


@dataclass(slots=True)
class Coordinates:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp": _iso(self.timestamp_ms),
        }


@dataclass(slots=True)
class Explanation:
    """What the search found about one event."""

    audit: dict[str, Any] | None = None
    audit_at: Coordinates | None = None
    duplicates: list[Coordinates] = field(default_factory=list)
    dead_letters: list[tuple[Coordinates, dict[str, Any]]] = field(default_factory=list)
    consent_at: Coordinates | None = None
    consent_note: str | None = None
    searched: list[str] = field(default_factory=list)
    """What was read, for the answer's last line (and the reader's trust)."""
    complete: bool = True
    """False when a scan stopped at its time budget."""
    written: list[str] = field(default_factory=list)
    """The topics the event's records went to, as named on the cluster."""

    @property
    def found(self) -> bool:
        return self.audit is not None or bool(self.dead_letters)


async def explain(
    settings: Settings,
    query: Query,
    *,
    pseudonymizer: Pseudonymizer | None,
    report: Reporter | None = None,
) -> Explanation:
    """Find the event's audit and dead letters, and its consent version's record."""
    answer = Explanation()
    audit_topic = settings.topic(catalogue.AUDIT)
    dlq_topic = settings.topic(catalogue.DLQ)
    async with Reader(settings, client_id=f"{settings.app_id}-explain") as reader:
        since = query.since_ms
        origin: tuple[str, int, int] | None = None
        if query.audit is not None:
            record = await reader.one(audit_topic, *query.audit)
            if record is not None:
                _take_audit(answer, record)
            answer.searched.append(f"{audit_topic} at {query.audit[0]}:{query.audit[1]}")
        else:
            if query.raw is not None:
                raw = await reader.one(*query.raw)
                if raw is None:
                    answer.searched.append(f"{query.raw[0]}: no committed record there")
                    return answer
                since = raw.timestamp_ms - SLACK_MS
                origin = query.raw
            matches = _matcher(query, origin)

            def audit(record: Found) -> None:
                if record.value is not None and matches.audit(record.value):
                    _take_audit(answer, record)

            def dead_letter(record: Found) -> None:
                dead = matches.dead_letter(record.value)
                if dead is not None:
                    answer.dead_letters.append((_at(record), dead))

            await _search(reader, audit_topic, since, query, answer, report, audit)
            await _search(reader, dlq_topic, since, query, answer, report, dead_letter)
        await _consent(settings, reader, answer, pseudonymizer, report)
    if answer.audit is not None:
        destinations = answer.audit.get("destinations") or []
        answer.written = [
            settings.topic(topic)
            for destination, topic in catalogue.BY_DESTINATION.items()
            if destination in destinations
        ]
    return answer


async def _search(
    reader: Reader,
    topic: str,
    since: int | None,
    query: Query,
    answer: Explanation,
    report: Reporter | None,
    take: Callable[[Found], None],
) -> None:
    """Hand every record of `topic` from `since` to `take`, within the query's budget, and
    note in `answer` what was read."""
    progress = Progress()
    async for record in reader.scan(
        await reader.partitions(topic),
        since_ms=since,
        budget_s=query.budget_s,
        progress=progress,
        report=report,
    ):
        take(record)
    answer.complete &= not progress.out_of_time
    answer.searched.append(f"{topic}: {progress.read:,} records{_since(since)}")


class _matcher:
    """Cheap byte checks first, then the parsed record's fields."""

    def __init__(self, query: Query, origin: tuple[str, int, int] | None) -> None:
        self.query = query
        self.origin = origin
        self._needle = None if query.event_id is None else codec.dumps(query.event_id)
        self._raw_needle = None if query.event_id is None else query.event_id.encode()

    def audit(self, value: bytes) -> bool:
        if self._needle is not None and self._needle not in value:
            return False
        record = _json(value)
        if record is None:
            return False
        if self.origin is not None:
            return _origin_of(record) == self.origin
        return (
            record.get("event_id") == self.query.event_id
            and record.get("advertiser_id") == self.query.advertiser_id
        )

    def dead_letter(self, value: bytes | None) -> dict[str, Any] | None:
        record = None if value is None else _json(value)
        if record is None:
            return None
        if self.origin is not None:
            return record if _origin_of(record) == self.origin else None
        try:
            original = base64.b64decode(record.get("original") or "", validate=True)
        except ValueError:
            return None
        if self._raw_needle is None or self._raw_needle not in original:
            return None
        event = _json(original)
        if event is None:
            return None
        if event.get("event_id") != self.query.event_id:
            return None
        if event.get("advertiser_id") != self.query.advertiser_id:
            return None
        return record


def _take_audit(answer: Explanation, record: Found) -> None:
    value = None if record.value is None else _json(record.value)
    if value is None:
        return
    if answer.audit is None or (answer.audit.get("duplicate") and not value.get("duplicate")):
        if answer.audit is not None and answer.audit_at is not None:
            answer.duplicates.append(answer.audit_at)
        answer.audit, answer.audit_at = value, _at(record)
    else:
        answer.duplicates.append(_at(record))


async def _consent(
    settings: Settings,
    reader: Reader,
    answer: Explanation,
    pseudonymizer: Pseudonymizer | None,
    report: Reporter | None,
) -> None:
    """Find the consent change the decision used, by its version and the user key."""
    audit = answer.audit
    version = None if audit is None else audit.get("consent_version")
    if audit is None or not isinstance(version, int):
        return
    if pseudonymizer is None:
        answer.consent_note = "not looked up: no HMAC key (set PIPELINE_HMAC_KEY)"
        return
    if pseudonymizer.key_id != audit.get("key_id"):
        answer.consent_note = "not looked up: the audit was keyed with another HMAC key"
        return
    topic = settings.topic(catalogue.CONSENT_CHANGES)
    needle = f'"changed_at":{version}'.encode()
    progress = Progress()
    async for record in reader.scan(
        await reader.partitions(topic),
        since_ms=version - SLACK_MS,
        budget_s=10.0,
        progress=progress,
        report=report,
    ):
        if record.timestamp_ms > version + CONSENT_WINDOW_MS:
            continue
        if (
            record.key is None
            or record.value is None
            or needle not in record.value.replace(b" ", b"")
        ):
            continue
        user = record.key.decode("utf-8", "replace")
        if pseudonymizer.user_key(user) == audit.get("user_key"):
            answer.consent_at = _at(record)
            return
    answer.searched.append(f"{topic}: {progress.read:,} records from {_iso(version - SLACK_MS)}")
    answer.consent_note = (
        "its record was not found within a day of the version (compacted away, or past "
        "the search's time budget)"
    )


def render(answer: Explanation, query: Query) -> str:
    """The explanation for a person: plain words, rule sources, no personal data."""
    lines: list[str] = []
    audit = answer.audit
    if not answer.found:
        lines.append("No audit record and no dead letter found for this event.")
        lines.append("Searched: " + "; ".join(answer.searched) + ".")
        if not answer.complete:
            lines.append("The search stopped at its time budget: try --budget or --since.")
        return "\n".join(lines)
    if audit is not None and answer.audit_at is not None:
        lines += _render_audit(audit, answer)
    for at, dead in answer.dead_letters:
        lines += [
            *([""] if lines else []),
            f"Dead-lettered: {dead.get('reason')} ({dlq_words(str(dead.get('reason')))})",
            f"  detail: {dead.get('detail')}",
            f"  dlq record: {_where(at)}",
        ]
        origin = _origin_of(dead)
        if origin is not None:
            lines.append(f"  raw record: {origin[0]} partition {origin[1]} offset {origin[2]}")
        lines.append(
            "  `consent-pipeline dlq show --partition "
            f"{at.partition} --offset {at.offset}` shows it; `dlq replay` sends it back."
        )
    lines += ["", "Searched: " + "; ".join(answer.searched) + "."]
    if not answer.complete:
        lines.append("The search stopped at its time budget; more may exist (--budget, --since).")
    return "\n".join(lines)


def _render_audit(audit: dict[str, Any], answer: Explanation) -> list[str]:
    assert answer.audit_at is not None
    outcomes = audit.get("outcomes") or {}
    codes = [str(code) for code in audit.get("reasons") or []]
    timings = audit.get("timings") or {}
    identity = audit.get("identity") or {}
    lines = [
        f"Event {audit.get('event_id')} of advertiser {audit.get('advertiser_id')} "
        f"({audit.get('source')}), decided {_iso_s(timings.get('decided_at'))} under policy "
        f"{audit.get('policy_version')}.",
        f"  audit record: {_where(answer.audit_at)}",
    ]
    origin = _origin_of(audit)
    if origin is not None:
        lines.append(f"  raw record: {origin[0]} partition {origin[1]} offset {origin[2]}")
    lines += ["", "What happened to the data:"]
    for purpose in PURPOSES:
        outcome = str(outcomes.get(purpose, "?"))
        lines.append(
            f"  {PURPOSE_WORDS[purpose]:<16} {outcome:<13} {sentence(purpose, outcome, codes)}"
        )
    lines += ["", "Why (every rule that applied):"]
    for code in codes:
        known = rule(code)
        if known is None:
            lines.append(f"  {code}: not a rule of this policy version")
            continue
        denied = [PURPOSE_WORDS[p] for p in PURPOSES if p in known.denies]
        lines.append(f"  {code}: denies {', '.join(denied) or 'nothing (an exception)'}")
        lines.append(f"      {known.condition}")
        lines.append(f"      source: {known.source}")
    if not codes:
        lines.append("  no rule applied: every purpose was allowed")
    conflict = " (another of its keys named another person; the first one won)"
    lines += [
        "",
        f"Subject: {identity_words(str(identity.get('match')))}"
        f"{conflict if identity.get('conflict') else ''}.",
    ]
    version = audit.get("consent_version")
    if version is None:
        lines.append("Consent: no consent record was used.")
    else:
        lines.append(f"Consent: the version of {_iso(version)} (its newest change's time).")
        if answer.consent_at is not None:
            lines.append(
                f"  acknowledged by Kafka at {_iso(answer.consent_at.timestamp_ms)} "
                f"({answer.consent_at.topic} partition {answer.consent_at.partition} "
                f"offset {answer.consent_at.offset})"
            )
        elif answer.consent_note:
            lines.append(f"  its acknowledgement: {answer.consent_note}")
    if audit.get("duplicate"):
        lines.append("Duplicate: yes; an earlier copy was decided and emitted, this one was not.")
    else:
        extra = len(answer.duplicates)
        copies = ""
        if extra:
            were = "copy was" if extra == 1 else "copies were"
            copies = f" ({extra} later {were} audited as duplicates, not emitted again)"
        lines.append(f"Duplicate: no{copies}.")
    topics = answer.written
    lines.append(
        "Records written: " + (", ".join(topics) if topics else "none (a duplicate)") + "."
    )
    return lines


def as_json(answer: Explanation) -> dict[str, Any]:
    """The explanation for machines: the same facts, with the glossary's words."""
    audit = answer.audit
    body: dict[str, Any] = {"found": answer.found, "complete": answer.complete}
    if audit is not None and answer.audit_at is not None:
        codes = [str(code) for code in audit.get("reasons") or []]
        body["audit"] = {
            "at": answer.audit_at.as_dict(),
            "event_id": audit.get("event_id"),
            "advertiser_id": audit.get("advertiser_id"),
            "source": audit.get("source"),
            "policy_version": audit.get("policy_version"),
            "outcomes": {
                purpose: {
                    "outcome": (audit.get("outcomes") or {}).get(purpose),
                    "said": sentence(
                        purpose, str((audit.get("outcomes") or {}).get(purpose)), codes
                    ),
                }
                for purpose in PURPOSES
            },
            "reasons": [_reason(code) for code in codes],
            "identity": audit.get("identity"),
            "consent_version": audit.get("consent_version"),
            "consent_acknowledged": None
            if answer.consent_at is None
            else answer.consent_at.as_dict(),
            "duplicate": audit.get("duplicate"),
            "duplicates_after": [at.as_dict() for at in answer.duplicates],
            "destinations": audit.get("destinations"),
            "written_to": answer.written,
            "origin": audit.get("origin"),
        }
    body["dead_letters"] = [
        {
            "at": at.as_dict(),
            "reason": dead.get("reason"),
            "meaning": dlq_words(str(dead.get("reason"))),
            "detail": dead.get("detail"),
            "origin": dead.get("origin"),
        }
        for at, dead in answer.dead_letters
    ]
    body["searched"] = answer.searched
    return body


def _reason(code: str) -> dict[str, Any]:
    known = rule(code)
    if known is None:
        return {"code": code, "known": False}
    return {
        "code": code,
        "denies": [p for p in PURPOSES if p in known.denies],
        "condition": known.condition,
        "because": known.because,
        "source": known.source,
    }


def _json(value: bytes) -> dict[str, Any] | None:
    try:
        parsed = codec.loads(value)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _origin_of(record: dict[str, Any]) -> tuple[str, int, int] | None:
    origin = record.get("origin")
    if not isinstance(origin, dict):
        return None
    return (
        str(origin.get("topic")),
        int(origin.get("partition", -1)),
        int(origin.get("offset", -1)),
    )


def _at(record: Found) -> Coordinates:
    return Coordinates(record.topic, record.partition, record.offset, record.timestamp_ms)


def _where(at: Coordinates) -> str:
    return (
        f"{at.topic} partition {at.partition} offset {at.offset}, written {_iso(at.timestamp_ms)}"
    )


def _since(since_ms: int | None) -> str:
    return "" if since_ms is None else f" from {_iso(since_ms)}"


def _iso(ms: int) -> str:
    return (
        datetime.fromtimestamp(ms / 1000, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def _iso_s(seconds: object) -> str:
    return _iso(int(float(seconds) * 1000)) if isinstance(seconds, int | float) else "?"
