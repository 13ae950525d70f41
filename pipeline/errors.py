"""The pipeline's one error hierarchy: the core's errors and those of the layers above."""

from __future__ import annotations

from pipeline.core.errors import ConfigError, ConsentStateError, PipelineError, PolicyConfigError

__all__ = [
    "ConfigError",
    "ConsentStateError",
    "DeliveryError",
    "KafkaUnavailable",
    "PipelineError",
    "PolicyConfigError",
    "TopicLayoutError",
]


class TopicLayoutError(PipelineError):
    """The topics on the cluster are missing or not co-partitioned."""


class KafkaUnavailable(PipelineError):
    """Kafka cannot be reached, or did not acknowledge records in time."""


class DeliveryError(PipelineError):
    """A record was accepted locally but Kafka did not acknowledge it."""
