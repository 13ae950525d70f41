"""The worker's log: a stop it explains in one line is not logged again with its stack."""

from __future__ import annotations

import logging

from pipeline.errors import PipelineError


class _ExpectedStop(logging.Filter):
    """Drops the stack from the log record of a stop the worker chose and explained in one
    line of its own (a `PipelineError`: a fault it could not recover from, a layout it
    refuses), which mode logs again as a crash with its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and (
            record.exc_info[1] is None or isinstance(record.exc_info[1], PipelineError)
        ):
            record.exc_info = None
            record.exc_text = None
        return True


def quiet_expected_stops() -> None:
    """Install `_ExpectedStop` on the root logger's handlers (once Faust has set them up)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _ExpectedStop) for f in handler.filters):
            handler.addFilter(_ExpectedStop())
