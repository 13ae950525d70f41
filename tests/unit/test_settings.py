"""The collector's settings: what a deployment may leave empty, and what it may not."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pipeline.settings import Settings


def test_an_empty_trust_key_is_unset() -> None:
    """Compose passes `PIPELINE_TRUST_KEY: ${PIPELINE_TRUST_KEY:-}` when none is set."""
    assert Settings.model_validate({"trust_key": ""}).trust_key is None


@pytest.mark.parametrize(
    "values",
    [
        {"trust_key": "too-short"},
        {"collector_rate_limit_per_second": 0},
        {"collector_rate_limit_burst": 0},
        {"collector_registry_reload_seconds": 0},
    ],
)
def test_bad_collector_settings_fail_naming_the_setting(values: dict[str, object]) -> None:
    with pytest.raises(ValidationError) as raised:
        Settings.model_validate(values)

    assert raised.value.errors()[0]["loc"] == (next(iter(values)),)
