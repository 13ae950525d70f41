"""Unit tests of the pure core: no I/O, so Hypothesis keeps no example database on disk."""

from __future__ import annotations

from hypothesis import settings

settings.register_profile("unit", database=None, deadline=None)
settings.load_profile("unit")
