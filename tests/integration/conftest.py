"""Fixtures for tests against the real broker: topics and worker processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pipeline.kafka.admin import create_topics
from pipeline.settings import Settings

if TYPE_CHECKING:
    from tests.integration.collector_io import Running, Tokens

pytestmark = pytest.mark.integration

READY_LINE = "recovered in"
"""The worker's own line once it owns partitions and recovered them (aiokafka's
"Revoking previously assigned partitions" says nothing of readiness)."""


def free_port() -> int:
    """A TCP port on loopback nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def process_env(settings: Settings) -> dict[str, str]:
    """The environment of a command run for `settings`: this one's, with the settings'
    variables (the settings name the cluster; an inherited KAFKA_BOOTSTRAP_SERVERS must not)."""
    env = {**os.environ, **settings.to_env()}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    return env


class WorkerProcess:
    """A `consent-pipeline worker` child process with its output in a file."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        env = process_env(settings)
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "worker"],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60.0, readiness_count: int = 1) -> None:
        """Wait until the worker has logged `readiness_count` ready lines."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.output().count(READY_LINE) >= readiness_count:
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited early:\n{self.output()[-3000:]}")
            time.sleep(0.2)
        raise AssertionError(f"worker not ready in {timeout}s:\n{self.output()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def pipeline_settings(settings_factory: Callable[..., Settings]) -> Settings:
    """Settings for one test, with every topic created on the real cluster."""
    settings = settings_factory(web_port=free_port())
    import asyncio

    asyncio.run(create_topics(settings))
    return settings


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[[Settings], WorkerProcess]]:
    """A factory of worker processes; every one still running is stopped after the test."""
    workers: list[WorkerProcess] = []

    def start(settings: Settings) -> WorkerProcess:
        worker = WorkerProcess(settings, tmp_path / f"worker-{len(workers)}.log")
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture
def tokens() -> Tokens:
    """The test registry's tokens (`tests.integration.collector_io.make_registry`)."""
    from tests.integration.collector_io import Tokens

    return Tokens()


@pytest.fixture
async def collector(pipeline_settings: Settings, tokens: Tokens) -> AsyncIterator[Running]:
    """A collector on a free port for the test registry, with the test trust key."""
    from tests.integration.collector_io import (
        TRUST_KEY,
        configured,
        make_registry,
        running_collector,
    )

    settings = configured(pipeline_settings, trust_key=TRUST_KEY)
    async with running_collector(settings, make_registry(tokens)) as running:
        yield running


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings of one module's pipeline: its own topics on the real cluster."""
    from tests.integration.privacy_io import stack_with_topics

    return stack_with_topics(kafka_bootstrap, tmp_path_factory.mktemp("state"))


@pytest.fixture(scope="module")
def workers(
    stack: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[WorkerProcess]]:
    """One worker of the module's pipeline, ready (a module may ask for more)."""
    from tests.integration.privacy_io import running_workers

    with running_workers(stack, tmp_path_factory.mktemp("logs"), count=1) as running:
        yield running
