"""The root of the pipeline's one error hierarchy, and the errors the pure core raises.

`pipeline.errors` adds the errors of the layers above (topics, Kafka delivery); library
errors are mapped there, at the boundary, with `raise ... from`.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Root of every error the pipeline raises on purpose."""


class ConfigError(PipelineError):
    """A setting is missing or invalid; the message names the setting, never its value."""


class PolicyConfigError(ConfigError):
    """The policy or pseudonymization configuration is invalid."""


class ConsentStateError(PipelineError):
    """A stored consent state cannot be decoded, or a change is for another user."""
