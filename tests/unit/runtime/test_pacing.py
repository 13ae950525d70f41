"""The intake is held back while the later stages have a backlog, with hysteresis."""

from __future__ import annotations

from pipeline.runtime.engine import INTAKE_PAUSE_BATCHES, pace_intake

BATCH = 2000


def test_more_than_two_batches_pending_holds_the_intake_back() -> None:
    assert pace_intake(INTAKE_PAUSE_BATCHES * BATCH + 1, BATCH, held=False)
    assert not pace_intake(INTAKE_PAUSE_BATCHES * BATCH, BATCH, held=False)


def test_less_than_one_batch_pending_lets_it_go_again() -> None:
    assert not pace_intake(BATCH - 1, BATCH, held=True)
    assert pace_intake(BATCH, BATCH, held=True)


def test_in_between_it_stays_as_it_is() -> None:
    middle = (BATCH + INTAKE_PAUSE_BATCHES * BATCH) // 2
    assert pace_intake(middle, BATCH, held=True)
    assert not pace_intake(middle, BATCH, held=False)
