"""What stands in a process's way before it starts: a port another process listens on."""

from __future__ import annotations

import os
import socket

from pipeline.host import describe_process, port_holder, port_problem


def test_a_taken_port_is_named_with_its_setting_and_the_process_holding_it() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]

        problem = port_problem("PIPELINE_WEB_PORT", "127.0.0.1", port)
        on_every_address = port_problem("PIPELINE_WEB_PORT", "0.0.0.0", port)

    assert problem is not None
    assert problem.startswith(
        f"PIPELINE_WEB_PORT (127.0.0.1:{port}) is in use by pid {os.getpid()}"
    )
    assert on_every_address is not None
    assert f"pid {os.getpid()}" in on_every_address
    assert port_holder(port) is None  # closed since


def test_a_free_port_is_no_problem() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert port_problem("PIPELINE_COLLECTOR_PORT", "127.0.0.1", port) is None


def test_a_process_is_described_by_its_command_shortened() -> None:
    described = describe_process(os.getpid())

    assert described.startswith(f"pid {os.getpid()} (python")
    assert len(described) < 100
    assert describe_process(2**22 + 7) == f"pid {2**22 + 7}"
