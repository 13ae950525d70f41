"""Consent-enforcing streaming pipeline for ad signals."""

__version__ = "0.1.0"
