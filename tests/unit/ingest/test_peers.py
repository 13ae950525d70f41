"""The collector shares its rate limit among the replicas its peers name resolves to."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from pipeline.ingest.collector import Collector
from pipeline.ingest.registry import Registry
from pipeline.settings import Settings


def _addresses(*hosts: str) -> list[tuple[Any, ...]]:
    return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (host, 0)) for host in hosts]


async def test_each_replica_holds_the_limit_divided_by_the_replicas_found(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = Settings(collector_peers="collectors.test", collector_rate_limit_per_second=30)
    collector = Collector(settings, Registry())
    answers: list[list[tuple[Any, ...]] | OSError] = [
        _addresses("10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.3"),  # one address twice
        OSError("lookup failed"),
        [],
    ]

    async def resolve(host: str, *_: Any, **__: Any) -> list[tuple[Any, ...]]:
        assert host == "collectors.test"
        answer = answers.pop(0)
        if isinstance(answer, OSError):
            raise answer
        return answer

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", resolve)

    await collector._count_peers("collectors.test")
    assert collector.limiter.replicas == 3
    assert collector.metrics.registry.get_sample_value("pipeline_collector_replicas") == 3

    await collector._count_peers("collectors.test")  # a failed lookup keeps the share
    assert collector.limiter.replicas == 3

    await collector._count_peers("collectors.test")  # none found: this replica alone
    assert collector.limiter.replicas == 1


def test_the_peers_name_must_be_a_host_name() -> None:
    with pytest.raises(ValueError, match="collector_peers"):
        Settings(collector_peers="http://collectors:8080")
