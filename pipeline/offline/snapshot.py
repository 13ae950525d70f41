"""Identity links and consent changes for `decide`: from JSON Lines files or from Kafka.

A snapshot folds `identity.links` records the way the identity stage does
(`pipeline.core.identity.apply_link`, last writer wins by `linked_at`) and groups
`consent.changes` records by user, so `decide` resolves an event's match keys to its
subject and finds that subject's consent as a worker that had read them all would.
Files hold one record per line, exactly as the topics carry them; a bad line stops the
load with its file and line number (never its content).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from pipeline import catalogue
from pipeline.core.identity import LinkRow, Resolution, apply_link, choose, kind_of, match_keys
from pipeline.core.parse import (
    ParseLimits,
    Rejected,
    parse_consent_change,
    parse_identity_link,
)
from pipeline.errors import PipelineError
from pipeline.settings import Settings
from schemas.consent import ConsentChange
from schemas.events import Event

NO_KEY_LIMITS: Final = ParseLimits(require_key=False)
"""Lines of a file have no Kafka key; a topic record's key is checked by the worker."""


class SnapshotError(PipelineError):
    """A snapshot file cannot be read or holds a record that is not valid."""


@dataclass(slots=True)
class Snapshot:
    """Each match key's link and each user's consent changes."""

    links: dict[str, LinkRow] = field(default_factory=dict)
    consent: dict[str, list[ConsentChange]] = field(default_factory=lambda: defaultdict(list))
    has_links: bool = False
    has_consent: bool = False

    def resolve(self, event: Event) -> Resolution:
        """Who the event is about from its match keys, by the links as they stand now."""
        found = []
        for key in match_keys(event):
            row = self.links.get(key)
            found.append((kind_of(key), None if row is None else row.user_id))
        return choose(found)

    def add_link(self, data: bytes, key: bytes | None, acknowledged_ms: int | None) -> str | None:
        """Fold one `identity.links` record (None value: a tombstone); or say why not."""
        self.has_links = True
        if not data:
            if key is None:
                return "a tombstone without a key"
            name = key.decode("utf-8", "replace")
            row = self.links.get(name)
            self.links[name] = apply_link(row, None, acknowledged_ms or 0)
            return None
        link = parse_identity_link(data, limits=NO_KEY_LIMITS)
        if isinstance(link, Rejected):
            return f"{link.reason} ({link.detail})"
        row = self.links.get(link.match_key)
        stamp = link.linked_at if acknowledged_ms is None else acknowledged_ms
        self.links[link.match_key] = apply_link(row, link, stamp)
        return None

    def add_consent(self, data: bytes) -> str | None:
        """Keep one `consent.changes` record for its user; or say why not."""
        self.has_consent = True
        change = parse_consent_change(data, limits=NO_KEY_LIMITS)
        if isinstance(change, Rejected):
            return f"{change.reason} ({change.detail})"
        self.consent[change.user_id].append(change)
        return None


def load_files(links: Path | None, consent: Path | None) -> Snapshot:
    """A snapshot of the JSON Lines files given.

    Raises:
        SnapshotError: a file cannot be read, or one of its lines is not a valid record.
    """
    snapshot = Snapshot()
    if links is not None:
        for number, line in _lines(links):
            problem = snapshot.add_link(line, None, None)
            if problem:
                raise SnapshotError(f"{links}: line {number}: not an identity link: {problem}")
    if consent is not None:
        for number, line in _lines(consent):
            problem = snapshot.add_consent(line)
            if problem:
                raise SnapshotError(f"{consent}: line {number}: not a consent change: {problem}")
    return snapshot


async def load_topics(settings: Settings, *, budget_s: float = 120.0) -> Snapshot:
    """A snapshot of `identity.links` and `consent.changes` as committed now.

    Records the worker would dead-letter are skipped here too.

    Raises:
        SnapshotError: the topics could not be read in full within `budget_s`.
    """
    from pipeline.forensics.scan import Progress, Reader

    snapshot = Snapshot(has_links=True, has_consent=True)
    async with Reader(settings, client_id=f"{settings.app_id}-decide") as reader:
        for topic in (catalogue.IDENTITY_LINKS, catalogue.CONSENT_CHANGES):
            name = settings.topic(topic)
            progress = Progress()
            async for record in reader.scan(
                await reader.partitions(name), budget_s=budget_s, progress=progress
            ):
                if topic is catalogue.IDENTITY_LINKS:
                    snapshot.add_link(record.value or b"", record.key, record.timestamp_ms)
                elif record.value is not None:
                    snapshot.add_consent(record.value)
            if progress.out_of_time:
                raise SnapshotError(f"{name}: not read in full within {budget_s:.0f}s")
    return snapshot


def _lines(path: Path) -> Iterable[tuple[int, bytes]]:
    try:
        with path.open("rb") as source:
            for number, line in enumerate(source, start=1):
                stripped = line.strip()
                if stripped:
                    yield number, stripped
    except OSError as exc:
        raise SnapshotError(f"cannot read {path}: {exc.strerror}") from None
