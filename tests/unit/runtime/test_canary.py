"""PII canaries are found where the outputs forbid identifiers, and only there."""

from __future__ import annotations

from pipeline.runtime.canary import CanaryScanner

CANARY = "canary-4f1d@example.com"


def test_a_canary_in_a_deidentified_record_or_its_key_is_found() -> None:
    scanner = CanaryScanner([CANARY])
    assert scanner.location("deidentified", None, b'{"x":"' + CANARY.encode() + b'"}', {}) == (
        "deidentified"
    )
    assert scanner.location("audit", CANARY.encode(), b"{}", {}) == "audit"


def test_identified_outputs_may_carry_identifiers() -> None:
    scanner = CanaryScanner([CANARY])
    assert scanner.location("personalization", None, CANARY.encode(), {}) is None


def test_dlq_records_are_checked_in_their_detail_only() -> None:
    scanner = CanaryScanner([CANARY])
    assert scanner.location("dlq", None, CANARY.encode(), {"detail": "em: bad"}) is None
    assert scanner.location("dlq", None, b"", {"detail": CANARY}) == "dlq.detail"


def test_no_canaries_means_nothing_to_check() -> None:
    assert not CanaryScanner([])
    assert not CanaryScanner([""])
