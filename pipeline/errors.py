"""The pipeline's one error hierarchy: the core's errors and those of the layers above."""

from __future__ import annotations

import traceback
from pathlib import Path

from pipeline.core.errors import ConfigError, ConsentStateError, PipelineError, PolicyConfigError

__all__ = [
    "ConfigError",
    "ConsentStateError",
    "DeliveryError",
    "KafkaUnavailable",
    "PipelineError",
    "PolicyConfigError",
    "StoreLocked",
    "TopicLayoutError",
    "WorkerFault",
]


class TopicLayoutError(PipelineError):
    """The topics on the cluster are missing or not co-partitioned."""


class KafkaUnavailable(PipelineError):
    """Kafka cannot be reached, or did not acknowledge records in time."""


class DeliveryError(PipelineError):
    """A record was accepted locally but Kafka did not acknowledge it."""


class WorkerFault(PipelineError):
    """The worker cannot do its job (its state, disk or lock): never a record's fault.

    The batch in flight is aborted and nothing of it is dead-lettered; the worker stops
    taking input, retries, and exits when it cannot recover. The message names the cause
    and the setting to look at (`setting`).
    """

    def __init__(
        self,
        message: str,
        *,
        setting: str = "PIPELINE_DATA_DIR",
        store: tuple[str, int] | None = None,
    ) -> None:
        super().__init__(message)
        self.setting = setting
        self.store = store
        """The (table, partition) of the local store at fault, if one is."""


class StoreLocked(WorkerFault):
    """Another process holds the lock of a local store."""


def where(exc: BaseException) -> str:
    """Where an exception was raised, as `file:line in function` frames: never its message,
    which may quote a value."""
    frames = traceback.extract_tb(exc.__traceback__)[-3:]
    return " <- ".join(f"{Path(f.filename).name}:{f.lineno} in {f.name}" for f in reversed(frames))
