"""The pipeline's one error hierarchy; library errors are mapped here at the boundary."""

from __future__ import annotations


class PipelineError(Exception):
    """Root of every error the pipeline raises on purpose."""


class ConfigError(PipelineError):
    """A setting is missing or invalid; the message names the setting, never its value."""


class TopicLayoutError(PipelineError):
    """The topics on the cluster are missing or not co-partitioned."""


class PolicyConfigError(ConfigError):
    """The policy or pseudonymization configuration is invalid."""


class ConsentStateError(PipelineError):
    """A stored consent state cannot be decoded, or a change is for another user."""


class KafkaUnavailable(PipelineError):
    """Kafka cannot be reached, or did not acknowledge records in time."""


class DeliveryError(PipelineError):
    """A record was accepted locally but Kafka did not acknowledge it."""
