"""What the contenders share: their command line, progress lines and the consent decision.

Faust and Quix Streams make the same decision as the pipeline, through the pipeline's
own pure core (`decode_event`, `apply_change`, `apply_link`, `match_keys`, `decide`,
`route`, `audit_record`): a raw record names its user through a trusted producer's
signature or its match keys, looked up in the links folded from `identity.links`; then
one output record per permitted use plus an audit record per event, or a DLQ record.
What they leave out is what the pipeline adds around the core: deduplication, the
consent and link histories that decide late events, hourly aggregates, customer lists,
the internal hops that partition identity by match key, and metrics.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from pipeline import catalogue
from pipeline.core import identity
from pipeline.core.consent import ConsentState, apply_change
from pipeline.core.deidentify import Pseudonymizer
from pipeline.core.parse import (
    ParseLimits,
    Rejected,
    decode_event,
    parse_consent_change,
    parse_identity_link,
    processing_error,
)
from pipeline.core.policy import PolicyConfig, decide
from pipeline.core.route import Origin, Output, audit_record, dlq_record, route
from pipeline.core.trust import TRUST_HEADER, is_trusted
from schemas import fast
from schemas.events import Event, RecordSource
from schemas.identity import IdentityMatch

PROGRESS_PREFIX: Final = "PROGRESS "
PROGRESS_INTERVAL_S: Final = 0.1
HMAC_KEY_ENV: Final = "PIPELINE_HMAC_KEY"
TRUST_KEY_ENV: Final = "PIPELINE_TRUST_KEY"
Headers = list[tuple[str, bytes]] | tuple[tuple[str, bytes], ...]
DESTINATIONS: Final = (
    "personalization",
    "ads",
    "measurement",
    "partner_share",
    "deidentified",
    "audit",
    "dlq",
)
"""The pipeline destinations the Faust and Quix contenders write, each to its own topic."""


@dataclass(frozen=True)
class ContenderArgs:
    """Where a contender reads and writes, and as which consumer group."""

    bootstrap: str
    prefix: str
    group: str
    name: str
    partitions: int
    state_dir: str
    consent_only: bool = False
    """Faust: run the consent agent only, to load the table."""

    def raw_topics(self) -> dict[str, RecordSource]:
        """Full raw topic names and the source each carries (customer lists included: the
        contenders audit them as records they do not handle)."""
        return {f"{self.prefix}{topic.name}": source for source, topic in catalogue.RAW.items()}

    @property
    def consent_topic(self) -> str:
        return f"{self.prefix}{catalogue.CONSENT_CHANGES.name}"

    @property
    def identity_topic(self) -> str:
        return f"{self.prefix}{catalogue.IDENTITY_LINKS.name}"

    def output_topic(self, destination: str) -> str:
        """This contender's own topic for a pipeline destination (`audit`, `ads`, ...)."""
        topic = catalogue.BY_DESTINATION[destination]  # type: ignore[index]
        return f"{self.prefix}{self.name}.{topic.name}"


def parse_args(
    name: str,
    description: str,
    argv: list[str] | None = None,
    *,
    consent_only_flag: bool = False,
) -> ContenderArgs:
    """The common command line of a contender (`--consent-only` when asked for)."""
    parser = argparse.ArgumentParser(prog=f"benchmarks.contenders.{name}", description=description)
    parser.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers")
    parser.add_argument("--prefix", required=True, help="topic prefix of the input")
    parser.add_argument("--group", required=True, help="consumer group (fresh for each run)")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--state-dir", default=".local/bench/state", help="local state")
    if consent_only_flag:
        parser.add_argument(
            "--consent-only", action="store_true", help="load the consent table only"
        )
    args = parser.parse_args(argv)
    return ContenderArgs(
        bootstrap=args.bootstrap,
        prefix=args.prefix,
        group=args.group,
        name=name,
        partitions=args.partitions,
        state_dir=args.state_dir,
        consent_only=getattr(args, "consent_only", False),
    )


class Progress:
    """Counts what a contender consumed and reports it on stdout for the harness."""

    def __init__(self) -> None:
        self.events = 0
        """Raw records consumed (events, duplicates and malformed records alike)."""
        self.consent = 0
        """Consent records folded into the consent table."""
        self.links = 0
        """`identity.links` records folded into the links table."""
        self._last = 0.0

    def report(self) -> None:
        """Write one progress line: wall time, events, consent records."""
        self._last = time.monotonic()
        sys.stdout.write(
            f'{PROGRESS_PREFIX}{{"t": {time.time():.4f}, "events": {self.events}, '
            f'"consent": {self.consent}, "links": {self.links}}}\n'
        )
        sys.stdout.flush()

    def maybe_report(self) -> None:
        """`report`, at most every `PROGRESS_INTERVAL_S`."""
        if time.monotonic() - self._last >= PROGRESS_INTERVAL_S:
            self.report()


def hmac_key() -> bytes:
    """The HMAC key of the pseudonymous `user_key`, from the pipeline's own variable.

    Raises:
        SystemExit: the variable is missing or shorter than 32 bytes.
    """
    key = os.environ.get(HMAC_KEY_ENV, "").encode()
    if len(key) < 32:
        raise SystemExit(f"{HMAC_KEY_ENV} must hold at least 32 bytes")
    return key


def trust_key() -> bytes | None:
    """The key trusted producers sign raw records with, from the pipeline's own variable."""
    key = os.environ.get(TRUST_KEY_ENV, "").encode()
    return key or None


UNSUPPORTED_RECORD = Rejected("schema_violation", "source: not_supported")
"""A customer-list record: the contenders do not keep memberships (the pipeline does)."""


class Decider:
    """The pipeline's consent decision for one record at a time, without its tables."""

    def __init__(self, key: bytes, key_id: str = "k1", trust: bytes | None = None) -> None:
        self.policy = PolicyConfig()
        self.pseudonymizer = Pseudonymizer(key, key_id)
        self.limits = ParseLimits(require_key=False)
        self.trust = trust

    def link(
        self, row: identity.LinkRow | None, value: bytes | None, key: bytes | None, at_ms: int
    ) -> identity.LinkRow | None:
        """A match key's row after an `identity.links` record; None if it cannot be applied."""
        if key is None:
            return None
        link = None
        if value is not None:
            parsed = parse_identity_link(value, key=key)
            if isinstance(parsed, Rejected) or parsed.match_key.encode() != key:
                return None
            link = parsed
        return identity.apply_link(row, link, at_ms)

    def fold(
        self, state: ConsentState | None, value: bytes | None, key: bytes | None, now: float
    ) -> ConsentState | None:
        """The user's state after a `consent.changes` record; None if it cannot be applied."""
        change = parse_consent_change(value, now=now, key=key, limits=self.limits)
        if isinstance(change, Rejected):
            return None
        if state is not None and state.user_id != change.user_id:
            return None
        return apply_change(state, change)

    def decide(
        self,
        source: RecordSource,
        value: bytes | None,
        key: bytes | None,
        origin: Origin,
        timestamp_ms: int,
        consent_of: Callable[[str], ConsentState | None],
        link_of: Callable[[str], identity.LinkRow | None],
        headers: Headers = (),
    ) -> list[Output]:
        """The outputs of one raw record: one per permitted use and the audit, or a DLQ record.

        `consent_of(user_id)` looks the user's state up in the contender's own table,
        `link_of(match_key)` a match key's link row.
        """
        now = time.time()
        received_at = timestamp_ms / 1000
        try:
            if source == "audience":
                return [self._dlq(UNSUPPORTED_RECORD, value, key, origin, received_at)]
            event = decode_event(source, value, now=now, key=key, limits=self.limits)
            if isinstance(event, Rejected):
                return [self._dlq(event, value, key, origin, received_at)]
            user, match = self._subject(event, value, headers, link_of, timestamp_ms)
            event = fast.replace(event, user_id=user)
            consent = None if user is None else consent_of(user)
            decision = decide(event, consent, self.policy)
            outputs = route(event, decision, consent, self.pseudonymizer)
            outputs.append(
                audit_record(
                    event,
                    decision,
                    pseudonymizer=self.pseudonymizer,
                    destinations=[output.destination for output in outputs],
                    duplicate=False,
                    origin=origin,
                    received_at=received_at,
                    decided_at=now,
                    identity=match,
                )
            )
            return outputs
        except Exception as exc:  # as in the pipeline: an outcome, never a lost record
            return [self._dlq(processing_error(exc, "process"), value, key, origin, received_at)]

    def _subject(
        self,
        event: Event,
        value: bytes | None,
        headers: Headers,
        link_of: Callable[[str], identity.LinkRow | None],
        produced_ms: int,
    ) -> tuple[str | None, tuple[IdentityMatch, bool]]:
        """Who the event is about: a trusted producer's user, else its first linked key."""
        if event.user_id is not None and self.trust is not None:
            signature = next((v for k, v in headers if k == TRUST_HEADER), None)
            if is_trusted(self.trust, value, signature):
                return event.user_id, ("provided", False)
        found = [
            (identity.kind_of(key), identity.user_as_of(link_of(key), produced_ms))
            for key in identity.match_keys(event)
        ]
        resolution = identity.choose(found)
        return resolution.user_id, (resolution.match or "none", resolution.conflict)

    @staticmethod
    def _dlq(
        rejected: Rejected,
        value: bytes | None,
        key: bytes | None,
        origin: Origin,
        received_at: float,
    ) -> Output:
        return dlq_record(rejected, data=value, key=key, origin=origin, received_at=received_at)
