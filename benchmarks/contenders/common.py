"""What the contenders share: their command line, progress lines and the consent decision.

Faust and Quix Streams make the same decision as the pipeline, through the pipeline's
own pure core (`parse_event`, `apply_change`, `decide`, `route`, `audit_record`): one
output record per permitted use plus an audit record per event, or a DLQ record. What
they leave out is what the pipeline adds around the core: deduplication, the consent
history that decides late events, hourly aggregates, transactions and metrics.
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
from pipeline.core.consent import ConsentState, apply_change
from pipeline.core.deidentify import Pseudonymizer
from pipeline.core.parse import (
    ParseLimits,
    Rejected,
    parse_consent_change,
    parse_event,
    processing_error,
)
from pipeline.core.policy import PolicyConfig, decide
from pipeline.core.route import Origin, Output, audit_record, dlq_record, route
from schemas.events import Source

PROGRESS_PREFIX: Final = "PROGRESS "
PROGRESS_INTERVAL_S: Final = 0.1
HMAC_KEY_ENV: Final = "PIPELINE_HMAC_KEY"
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

    def raw_topics(self) -> dict[str, Source]:
        """Full raw topic names and the source each carries."""
        return {
            f"{self.prefix}{topic.name}": source for source, topic in catalogue.RAW_EVENTS.items()
        }

    @property
    def consent_topic(self) -> str:
        return f"{self.prefix}{catalogue.CONSENT_CHANGES.name}"

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
        self._last = 0.0

    def report(self) -> None:
        """Write one progress line: wall time, events, consent records."""
        self._last = time.monotonic()
        sys.stdout.write(
            f'{PROGRESS_PREFIX}{{"t": {time.time():.4f}, "events": {self.events}, '
            f'"consent": {self.consent}}}\n'
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


class Decider:
    """The pipeline's consent decision for one record at a time, without its tables."""

    def __init__(self, key: bytes, key_id: str = "k1") -> None:
        self.policy = PolicyConfig()
        self.pseudonymizer = Pseudonymizer(key, key_id)
        self.limits = ParseLimits()

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
        source: Source,
        value: bytes | None,
        key: bytes | None,
        origin: Origin,
        timestamp_ms: int,
        consent_of: Callable[[str], ConsentState | None],
    ) -> list[Output]:
        """The outputs of one raw record: one per permitted use and the audit, or a DLQ record.

        `consent_of(user_id)` looks the user's state up in the contender's own table.
        """
        now = time.time()
        received_at = timestamp_ms / 1000
        try:
            event = parse_event(source, value, now=now, key=key, limits=self.limits)
            if isinstance(event, Rejected):
                return [self._dlq(event, value, key, origin, received_at)]
            consent = None if event.user_id is None else consent_of(event.user_id)
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
                )
            )
            return outputs
        except Exception as exc:  # as in the pipeline: an outcome, never a lost record
            return [self._dlq(processing_error(exc, "process"), value, key, origin, received_at)]

    @staticmethod
    def _dlq(
        rejected: Rejected,
        value: bytes | None,
        key: bytes | None,
        origin: Origin,
        received_at: float,
    ) -> Output:
        return dlq_record(rejected, data=value, key=key, origin=origin, received_at=received_at)
