"""`python -m tests.chaos.poisoned`: a pipeline worker in which records carrying a marker
raise, in the stage the marker names (the fault suite's `local-poison` scenario).

A correct stage raises for no input, so the records that raise are planted from here, as
the suite plants a SIGSTOP or a full disk: an event whose `custom_data.content_ids` holds
`chaos-poison-<stage>` makes that stage's processing raise `RuntimeError` for that record
only. The worker is otherwise the product's own (`pipeline.cli worker`): each such record
must end in the DLQ as `processing_error`, alone, and every other record of its batches
must be decided.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, Final

from pipeline.runtime.stage import InputRecord, Stage
from pipeline.stages.decision import DecisionStage
from pipeline.stages.dedup import DedupStage
from pipeline.stages.intake import IntakeStage
from pipeline.stages.resolution import ResolutionStage

MARKER: Final = "chaos-poison-"
STAGES: Final[dict[str, type[Stage]]] = {
    "intake": IntakeStage,
    "dedup": DedupStage,
    "resolve": ResolutionStage,
    "decide": DecisionStage,
}


class PlantedPoison(RuntimeError):
    """Raised by a stage for a record the fault suite marked."""


def poison(stage: str) -> str:
    """The content id that makes `stage` raise for its event."""
    return f"{MARKER}{stage}"


def _poisoned(name: str, process: Callable[..., Any]) -> Callable[..., Any]:
    marker = poison(name).encode()

    def process_or_raise(self: Any, record: InputRecord, *args: Any, **kwargs: Any) -> Any:
        if record.value is not None and marker in record.value:
            raise PlantedPoison(name)
        return process(self, record, *args, **kwargs)

    return process_or_raise


def main() -> int:
    for name, stage in STAGES.items():
        setattr(stage, "process", _poisoned(name, stage.process))  # noqa: B010
    from pipeline.cli import main as cli

    return cli(["worker"])


if __name__ == "__main__":
    sys.exit(main())
