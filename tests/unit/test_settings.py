"""The collector's and the web pages' settings: what a deployment may leave empty, and what
it may not."""

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
        {"collector_worker_urls": "worker-0:6066"},
        {"collector_worker_urls": "http://worker-0:6066/path"},
        {"collector_worker_timeout_seconds": 0},
        {"web_canonical_url": "worker-0:6066"},
    ],
)
def test_bad_collector_settings_fail_naming_the_setting(values: dict[str, object]) -> None:
    with pytest.raises(ValidationError) as raised:
        Settings.model_validate(values)

    assert raised.value.errors()[0]["loc"] == (next(iter(values)),)


def test_the_consent_api_asks_the_worker_urls_given_in_order() -> None:
    settings = Settings.model_validate(
        {"collector_worker_urls": "http://worker-0:6066/, https://worker-1.example:443"}
    )

    assert settings.collector_worker_urls == [
        "http://worker-0:6066",
        "https://worker-1.example:443",
    ]
    assert settings.to_env()["PIPELINE_COLLECTOR_WORKER_URLS"] == (
        "http://worker-0:6066,https://worker-1.example:443"
    )


def test_a_worker_announces_its_canonical_url_else_its_web_host_and_port() -> None:
    announced = Settings.model_validate({"web_canonical_url": "http://worker-0.workers:6066/"})
    local = Settings.model_validate({"web_host": "127.0.0.1", "web_port": 6070})
    everywhere = Settings.model_validate({"web_host": "0.0.0.0", "web_port": 6070})

    assert announced.canonical_url == "http://worker-0.workers:6066"
    assert local.canonical_url == "http://127.0.0.1:6070"
    assert everywhere.canonical_url.endswith(":6070")
    assert "0.0.0.0" not in everywhere.canonical_url


def test_a_barrier_longer_than_its_transaction_allows_fails_naming_both_settings() -> None:
    with pytest.raises(ValidationError) as failed:
        Settings(barrier_timeout_seconds=25, transaction_timeout_seconds=30)

    message = str(failed.value)
    assert "PIPELINE_BARRIER_TIMEOUT_SECONDS" in message
    assert "PIPELINE_TRANSACTION_TIMEOUT_SECONDS" in message
