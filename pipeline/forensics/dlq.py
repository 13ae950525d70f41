"""`consent-pipeline dlq`: list, show and replay dead letters.

- `list`: counts by source topic and reason over a time range (and, with `--records`,
  each record's coordinates, reason and detail: never its payload);
- `show`: one record's reason, detail and origin; its payload only with `--show-payload`,
  which warns that it prints personal data;
- `replay`: chosen records back to the raw topic they came from, their original key and
  bytes, with a `pipeline-replayed-from` header naming the dead letter. A dry run unless
  `--yes`. Running it twice is safe: the dedup stage audits a second copy of an event as a
  duplicate and emits nothing again; consent changes and identity links are
  last-writer-wins by their own time. Records without an origin, or whose origin is not
  an input topic, are never replayed.
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from pipeline import catalogue
from pipeline.core.reasons import dlq_words
from pipeline.forensics.scan import Found, Progress, Reader, Reporter
from pipeline.kafka.producer import Producer
from pipeline.settings import Settings
from schemas import codec

REPLAYED_HEADER: Final = "pipeline-replayed-from"
"""Names the dead letter a replayed record came from: `<dlq topic>:<partition>:<offset>`."""
NOT_WORTH_REPLAYING: Final = frozenset({"invalid_json", "invalid_utf8", "oversized", "too_old"})
"""Reasons a replay of the same bytes meets again, whatever the worker's state."""


@dataclass(frozen=True, slots=True)
class Selection:
    """Which dead letters a command is about."""

    since_ms: int | None = None
    until_ms: int | None = None
    reasons: frozenset[str] = frozenset()
    sources: frozenset[str] = frozenset()
    """Origin topics (as named on the cluster)."""
    budget_s: float = 60.0

    def wants(self, letter: dict[str, Any], timestamp_ms: int) -> bool:
        if self.until_ms is not None and timestamp_ms > self.until_ms:
            return False
        if self.reasons and letter.get("reason") not in self.reasons:
            return False
        return not self.sources or _source(letter) in self.sources


@dataclass(slots=True)
class Letter:
    """One dead letter as read, with where it is."""

    partition: int
    offset: int
    timestamp_ms: int
    record: dict[str, Any]

    @property
    def reason(self) -> str:
        return str(self.record.get("reason"))

    @property
    def source(self) -> str:
        return _source(self.record)

    def coordinates(self, topic: str) -> str:
        return f"{topic}:{self.partition}:{self.offset}"


@dataclass(slots=True)
class Listing:
    letters: list[Letter]
    counts: Counter[tuple[str, str]]
    read: int
    complete: bool


async def read(
    settings: Settings, selection: Selection, *, report: Reporter | None = None
) -> Listing:
    """The dead letters `selection` names, oldest first per partition."""
    topic = settings.topic(catalogue.DLQ)
    letters: list[Letter] = []
    counts: Counter[tuple[str, str]] = Counter()
    progress = Progress()
    async with Reader(settings, client_id=f"{settings.app_id}-dlq") as reader:
        async for found in reader.scan(
            await reader.partitions(topic),
            since_ms=selection.since_ms,
            budget_s=selection.budget_s,
            progress=progress,
            report=report,
        ):
            letter = _letter(found)
            if letter is None or not selection.wants(letter.record, found.timestamp_ms):
                continue
            letters.append(letter)
            counts[(letter.source, letter.reason)] += 1
    return Listing(letters, counts, progress.read, not progress.out_of_time)


async def one(settings: Settings, partition: int, offset: int) -> Letter | None:
    """The dead letter at `partition`/`offset`, or None."""
    async with Reader(settings, client_id=f"{settings.app_id}-dlq") as reader:
        found = await reader.one(settings.topic(catalogue.DLQ), partition, offset)
    return None if found is None else _letter(found)


def render_list(listing: Listing, topic: str, *, records: int) -> str:
    """Counts by source and reason, then up to `records` records' coordinates."""
    lines = [f"{'source':<24} {'reason':<18} {'count':>8}  meaning"]
    for (source, reason), count in sorted(listing.counts.items()):
        lines.append(f"{source:<24} {reason:<18} {count:>8,}  {dlq_words(reason)}")
    total = sum(listing.counts.values())
    lines.append(f"{'total':<43} {total:>8,}  ({listing.read:,} dead letters read)")
    if not listing.complete:
        lines.append("stopped at the time budget: counts are partial (--budget)")
    if records and listing.letters:
        lines += [
            "",
            f"{'dead letter':<28} {'reason':<18} from (raw topic:partition:offset)",
        ]
    for letter in listing.letters[:records]:
        lines.append(
            f"{letter.coordinates(topic):<28} {letter.reason:<18} {_origin(letter.record)}  "
            f"{letter.record.get('detail')}"
        )
    return "\n".join(lines)


def render_show(letter: Letter, topic: str, *, show_payload: bool) -> str:
    """One dead letter: its reason, detail, origin and size; the payload only on request."""
    record = letter.record
    origin = record.get("origin") or {}
    lines = [
        f"dead letter {letter.coordinates(topic)}",
        f"  reason:   {letter.reason} ({dlq_words(letter.reason)})",
        f"  detail:   {record.get('detail')}",
        f"  origin:   {origin.get('topic')} partition {origin.get('partition')} "
        f"offset {origin.get('offset')}"
        if origin
        else "  origin:   none recorded",
        f"  size:     {record.get('size')} bytes; key {'present' if record.get('key') else 'none'}",
    ]
    if show_payload:
        lines.append("  payload (personal data):")
        lines.append("  " + _bytes(record.get("original")).decode("utf-8", "replace"))
    else:
        lines.append("  payload:  not shown (--show-payload prints it: it holds personal data)")
    return "\n".join(lines)


@dataclass(slots=True)
class Plan:
    """What a replay would send, and what it refuses."""

    send: list[Letter]
    refused: Counter[str]
    futile: Counter[str]
    """Records sent though their reason will dead-letter them again."""


def plan(letters: list[Letter], settings: Settings) -> Plan:
    """Which letters can go back to an input topic."""
    inputs = {settings.topic(topic) for topic in catalogue.INPUTS}
    send: list[Letter] = []
    refused: Counter[str] = Counter()
    futile: Counter[str] = Counter()
    for letter in letters:
        if not letter.record.get("origin"):
            refused["no origin recorded"] += 1
        elif letter.source not in inputs:
            refused[f"origin {letter.source} is not an input topic"] += 1
        else:
            send.append(letter)
            if letter.reason in NOT_WORTH_REPLAYING:
                futile[letter.reason] += 1
    return Plan(send, refused, futile)


async def replay(
    settings: Settings, chosen: Plan, *, on_sent: Callable[[int], None] | None = None
) -> int:
    """Send the plan's letters back to their raw topics; the number Kafka acknowledged."""
    topic = settings.topic(catalogue.DLQ)
    acknowledged = 0
    async with Producer(settings, client_id=f"{settings.app_id}-dlq-replay") as producer:
        futures = []
        for letter in chosen.send:
            key = letter.record.get("key")
            futures.append(
                await producer.send(
                    letter.source,
                    _bytes(letter.record.get("original")),
                    None if key is None else _bytes(key),
                    headers=[(REPLAYED_HEADER, letter.coordinates(topic).encode())],
                )
            )
        for future in futures:
            await future
            acknowledged += 1
            if on_sent is not None:
                on_sent(acknowledged)
    return acknowledged


def render_plan(chosen: Plan, topic: str, *, dry_run: bool) -> str:
    by_topic = Counter(letter.source for letter in chosen.send)
    verb = "would send" if dry_run else "sending"
    lines = [f"{verb} {len(chosen.send):,} dead letters back to their raw topics:"]
    lines += [f"  {name}: {count:,}" for name, count in sorted(by_topic.items())]
    for why, count in sorted(chosen.refused.items()):
        lines.append(f"  not replayed, {why}: {count:,}")
    for reason, count in sorted(chosen.futile.items()):
        lines.append(
            f"  note: {count:,} are {reason} and will be dead-lettered again ({dlq_words(reason)})"
        )
    if dry_run:
        lines.append(
            f"a dry run: nothing written. --yes sends them, each with a "
            f"{REPLAYED_HEADER} header naming its record in {topic}."
        )
    return "\n".join(lines)


def _letter(found: Found) -> Letter | None:
    if found.value is None:
        return None
    try:
        record = codec.loads(found.value)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    return Letter(found.partition, found.offset, found.timestamp_ms, record)


def _source(letter: dict[str, Any]) -> str:
    origin = letter.get("origin")
    return str(origin.get("topic")) if isinstance(origin, dict) else "(no origin)"


def _origin(letter: dict[str, Any]) -> str:
    origin = letter.get("origin")
    if not isinstance(origin, dict):
        return "(no origin)"
    return f"{origin.get('topic')}:{origin.get('partition')}:{origin.get('offset')}"


def _bytes(encoded: object) -> bytes:
    return base64.b64decode(str(encoded or ""))
