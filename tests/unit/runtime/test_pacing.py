"""The intake is held back while the later stages have a backlog, with hysteresis."""

from __future__ import annotations

from pipeline.runtime.engine import INTAKE_PAUSE_BATCHES, pace_intake, unread

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


def test_what_the_worker_itself_wrote_counts_before_a_fetch_reports_it() -> None:
    # The last fetch saw the partition end at 100; this worker's commits reached 2,600.
    assert unread(100, 2_600, position=100) == 2_500
    assert unread(None, 2_600, position=0) == 2_600


def test_a_fetch_that_saw_further_than_its_own_writes_counts() -> None:
    # Other workers write to the same internal partition.
    assert unread(5_000, 2_600, position=1_000) == 4_000


def test_nothing_is_pending_once_read_past_both_ends() -> None:
    # The position passes the commit marker after the last record.
    assert unread(2_600, 2_600, position=2_601) == 0
