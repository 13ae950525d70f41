"""The worker's state folder (`PIPELINE_DATA_DIR`): one worker at a time.

A worker takes an exclusive lock on `<data dir>/<app id>/worker.lock` (and writes its process
id there) before it opens any store, and holds it until it exits: a second worker started
on the same folder is refused at once, with a message saying which process holds it,
instead of fighting the first over RocksDB's own locks. A folder the worker cannot use (a
file in its way, no permission, a read-only or full disk) is a `WorkerFault`, which the
worker retries before it gives up.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import IO

from pipeline.errors import ConfigError, WorkerFault
from pipeline.host import describe_process

LOCK_FILE = "worker.lock"


class FolderInUse(ConfigError):
    """Another live worker holds the state folder."""


class StateFolder:
    """The lock on a worker's state folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._file: IO[str] | None = None

    @property
    def locked(self) -> bool:
        return self._file is not None

    def lock(self) -> None:
        """Take the folder for this process (a second call does nothing).

        Raises:
            FolderInUse: another process holds it; names the process.
            WorkerFault: the folder cannot be created or written.
        """
        if self._file is not None:
            return
        path = self.root / LOCK_FILE
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            handle = path.open("a+")
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else type(exc).__name__
            raise WorkerFault(
                f"cannot use the state folder PIPELINE_DATA_DIR ({self.root}): {reason.lower()}"
            ) from exc
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            text = handle.read().strip()
            handle.close()
            by = describe_process(int(text)) if text.isdigit() else "another process"
            raise FolderInUse(
                f"PIPELINE_DATA_DIR ({self.root}) is in use by another worker, {by}; "
                "give each worker its own folder"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._file = handle

    def unlock(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def holder(root: Path) -> int | None:
    """The process holding the state folder `root`, if a live one does."""
    path = root / LOCK_FILE
    try:
        with path.open("a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                text = handle.read().strip()
                return int(text) if text.isdigit() else -1
            fcntl.flock(handle, fcntl.LOCK_UN)
    except OSError:
        return None
    return None
