"""PII canaries: synthetic identifiers that must never appear where outputs forbid them.

Operators (and the fault-injection suite) seed canary values, such as a synthetic email,
IP, user id or advertising id, into test traffic and list them in `PIPELINE_PII_CANARIES`.
The worker then checks every record it writes to a place that must hold no such
identifier, and counts each hit in `pipeline_pii_canary_hits_total{location}`. The values
themselves are never logged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Final

log = logging.getLogger(__name__)

CHECKED: Final = frozenset({"measurement", "deidentified", "aggregates", "audit"})
"""Destinations whose keys and values must carry no raw identifier."""


class CanaryScanner:
    """Finds canary values in outgoing records."""

    def __init__(self, canaries: Iterable[str]) -> None:
        self._canaries = tuple(c.encode() for c in canaries if c)

    def __bool__(self) -> bool:
        return bool(self._canaries)

    def location(
        self, destination: str, key: bytes | None, value: bytes, record: dict[str, Any]
    ) -> str | None:
        """Where a canary appears in this record, or None."""
        if destination in CHECKED:
            blob = value + (key or b"")
            if any(canary in blob for canary in self._canaries):
                return destination
        elif destination == "dlq":
            detail = str(record.get("detail", "")).encode()
            if any(canary in detail for canary in self._canaries):
                return "dlq.detail"
        return None
