"""Errors of the ingest package, under the pipeline's one hierarchy."""

from __future__ import annotations

from pipeline.errors import ConfigError


class RegistryError(ConfigError):
    """The advertiser registry cannot be read, is invalid, or cannot take a change."""
