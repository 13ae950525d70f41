"""Topic names and the Faust topic objects the agents read and write."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust

from pipeline.settings import Settings

RAW_TOPICS = ("raw.tag", "raw.sdk", "raw.widget")
CONSENT_TOPIC = "consent.changes"
OUTPUT_TOPICS = (
    "activity.personalization",
    "activity.ads",
    "activity.measurement",
    "activity.partner_share",
    "activity.deidentified",
    "aggregates.deidentified",
    "decisions.audit",
    "dlq",
)


@dataclass(frozen=True)
class Topics:
    """Every topic the worker touches, bound to one app; keys and values are raw bytes."""

    raw: dict[str, Any]
    consent: Any
    outputs: dict[str, Any]

    @classmethod
    def bind(cls, app: faust.App, settings: Settings) -> Topics:
        def topic(name: str, **kwargs: Any) -> Any:
            return app.topic(
                settings.topic(name),
                key_type=bytes,
                value_type=bytes,
                key_serializer="raw",
                value_serializer="raw",
                partitions=settings.topic_partitions,
                replicas=settings.topic_replication,
                **kwargs,
            )

        return cls(
            raw={name: topic(name) for name in RAW_TOPICS},
            consent=topic(CONSENT_TOPIC, compacting=True),
            outputs={name: topic(name) for name in OUTPUT_TOPICS},
        )
