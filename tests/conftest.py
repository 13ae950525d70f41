"""Session-wide fixtures: a real Kafka broker, and uuid-named topics and app ids."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pipeline.settings import Settings

REPO = Path(__file__).resolve().parents[1]
KAFKA_SH = REPO / "deploy" / "local" / "kafka.sh"
# The test broker listens on its own port and keeps its own data, apart from `make kafka-up`'s.
TEST_KAFKA_PORT = os.environ.get("TEST_KAFKA_PORT", "19092")
TRUST_KEY = b"integration-test-trust-key-0123456789abcdef"
"""The trust key of the tests' workers: records signed with it name their user."""


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers of a real Kafka cluster: $KAFKA_BOOTSTRAP_SERVERS, or a local broker."""
    existing = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if existing:
        yield existing
        return
    env = {**os.environ, "KAFKA_PORT": TEST_KAFKA_PORT}
    home = Path(env.get("KAFKA_HOME_DIR", REPO / ".local" / "kafka"))
    subprocess.run([str(KAFKA_SH), "down"], env=env, check=True)
    shutil.rmtree(home / f"data-{TEST_KAFKA_PORT}", ignore_errors=True)
    subprocess.run([str(KAFKA_SH), "up"], env=env, check=True)
    try:
        yield f"127.0.0.1:{TEST_KAFKA_PORT}"
    finally:
        subprocess.run([str(KAFKA_SH), "down"], env=env, check=False)


@pytest.fixture
def unique_name() -> Callable[[str], str]:
    """A factory of uuid-suffixed names, so topics and app ids never collide between tests."""

    def make(stem: str) -> str:
        return f"{stem}-{uuid.uuid4().hex[:12]}"

    return make


@pytest.fixture
def settings_factory(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> Callable[..., Settings]:
    """Settings for one test: its own app id, topic prefix and state folder on the real cluster."""

    def make(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "kafka_bootstrap_servers": kafka_bootstrap,
            "app_id": unique_name("test-app"),
            "topic_prefix": unique_name("t") + ".",
            "store": "memory",
            "data_dir": tmp_path / "state",
            "topic_partitions": 3,
            "hmac_key": "integration-test-hmac-key-0123456789abcdef",
            "trust_key": TRUST_KEY.decode(),
            "hmac_key_id": "test-1",
            "poll_timeout_ms": 20,
        }
        values.update(overrides)
        return Settings.model_validate(values)

    return make
