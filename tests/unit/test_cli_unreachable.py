"""A one-shot command that cannot reach the cluster says so in one line naming the setting."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.parametrize(
    "command",
    [
        ["topics", "check"],
        ["dlq", "list"],
        ["explain", "--advertiser", "adv-1", "--event-id", "evt-1"],
        ["decide", "--from-kafka"],
    ],
    ids=lambda command: " ".join(command[:2]),
)
def test_an_unreachable_cluster_is_one_line_naming_the_setting(command: list[str]) -> None:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{closed_port()}"}
    env.pop("PIPELINE_HMAC_KEY", None)
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *command],
        env=env,
        input="",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    lines = [line for line in done.stderr.splitlines() if not line.startswith("using the")]
    assert done.returncode == 2
    assert len(lines) == 1, done.stderr
    assert "KAFKA_BOOTSTRAP_SERVERS" in lines[0]
    assert "Traceback" not in done.stderr
