"""The fault-injection suite's short variant: `make chaos` runs the full one.

Each scenario runs at its short size against a broker of its own (`kafka.sh` on
`TEST_KAFKA_PORT + 100`, fresh for this module and removed after it), because one of
them kills that broker. With `KAFKA_BOOTSTRAP_SERVERS` set, the scenarios run on that
cluster instead and the broker scenario is skipped.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.settings import Settings
from tests.chaos.faults import LocalBroker
from tests.chaos.report import scenario_text
from tests.chaos.scenarios import BY_NAME, run_scenario
from tests.conftest import REPO, TEST_KAFKA_PORT

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

SHORT = (
    "worker-kill9",
    "broker-kill9",
    "poison-pills",
    "pii-canaries",
    "consent-race",
    "identity-race",
    "crc32-partitioner",
    "membership-withdrawal",
    "worker-pause",
    "local-poison",
)
CHAOS_PORT = int(os.environ.get("TEST_CHAOS_KAFKA_PORT", str(int(TEST_KAFKA_PORT) + 100)))


@pytest.fixture(scope="module")
def chaos_cluster() -> Iterator[tuple[str, LocalBroker | None]]:
    """Bootstrap servers, and the broker the scenarios may kill (None on an external cluster)."""
    existing = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if existing:
        yield existing, None
        return
    home = Path(os.environ.get("KAFKA_HOME_DIR", REPO / ".local" / "kafka"))
    broker = LocalBroker(CHAOS_PORT, home)

    def wipe() -> None:
        for name in (f"data-{CHAOS_PORT}", f"logs-{CHAOS_PORT}"):
            shutil.rmtree(home / name, ignore_errors=True)

    asyncio.run(broker.down())
    wipe()
    asyncio.run(broker.up())
    try:
        yield broker.bootstrap, broker
    finally:
        asyncio.run(broker.down())
        wipe()


@pytest.mark.parametrize("name", SHORT)
def test_scenario_holds_every_guarantee(
    name: str, chaos_cluster: tuple[str, LocalBroker | None], tmp_path: Path
) -> None:
    bootstrap, broker = chaos_cluster
    scenario = BY_NAME[name]
    if scenario.needs_broker and broker is None:
        pytest.skip("kills the broker: needs one of its own, not KAFKA_BOOTSTRAP_SERVERS")
    base = Settings.model_validate(
        {"kafka_bootstrap_servers": bootstrap, "topic_partitions": 6, "poll_timeout_ms": 20}
    )
    result = asyncio.run(run_scenario(scenario, base, tmp_path, short=True, broker=broker))
    text = scenario_text(result)
    print(text)
    assert result.passed, text
