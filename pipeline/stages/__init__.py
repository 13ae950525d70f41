"""The processing stages a worker runs, in the order a raw record passes through them.

intake (any partitioning) -> dedup (by advertiser and event id) -> resolution (by match
key, as many hops as the event has keys on different partitions) -> decision (by
subject, where its consent lives). Each hop goes through an internal topic inside the
batch's Kafka transaction.
"""

from __future__ import annotations

from pipeline.core.parse import ParseLimits
from pipeline.runtime.stage import Stage
from pipeline.settings import Settings
from pipeline.stages.decision import decision_stage
from pipeline.stages.dedup import DedupConfig, DedupStage
from pipeline.stages.intake import IntakeConfig, IntakeStage
from pipeline.stages.resolution import ResolutionConfig, ResolutionStage


def worker_stages(settings: Settings) -> list[Stage]:
    """Every stage of a worker, as `settings` configure them.

    Raises:
        ConfigError: a setting a stage needs is missing or invalid.
    """
    trust_key = settings.trust_key
    return [
        IntakeStage(
            IntakeConfig(
                limits=ParseLimits(max_bytes=settings.max_event_bytes),
                trust_key=None if trust_key is None else trust_key.get_secret_value().encode(),
            )
        ),
        DedupStage(DedupConfig(window_s=settings.dedup_window_hours * 3600)),
        ResolutionStage(ResolutionConfig()),
        decision_stage(settings),
    ]
