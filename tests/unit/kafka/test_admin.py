"""Waiting for created topics to reach the broker's metadata."""

from __future__ import annotations

from typing import Any, cast

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from pipeline.errors import TopicLayoutError
from pipeline.kafka.admin import wait_visible

UNKNOWN_TOPIC = 3


class ScriptedMetadata:
    """Answers metadata requests from a script: a topic becomes visible after n requests."""

    def __init__(self, visible_after: dict[str, int]) -> None:
        self.visible_after = visible_after
        self.requests: list[list[str]] = []

    async def describe_topics(self, topics: list[str]) -> list[dict[str, Any]]:
        self.requests.append(list(topics))
        n = len(self.requests)
        return [
            {"topic": t, "error_code": 0, "partitions": [{"partition": 0}]}
            if n > self.visible_after[t]
            else {"topic": t, "error_code": UNKNOWN_TOPIC, "partitions": []}
            for t in topics
        ]


async def test_returns_once_every_topic_is_visible_asking_only_for_the_pending() -> None:
    metadata = ScriptedMetadata({"a": 0, "b": 2})
    await wait_visible(cast(AIOKafkaAdminClient, metadata), ["a", "b"], timeout_s=5)
    assert metadata.requests == [["a", "b"], ["b"], ["b"]]


async def test_topics_never_visible_fail_naming_them() -> None:
    metadata = ScriptedMetadata({"a": 0, "b": 10**9})
    with pytest.raises(TopicLayoutError, match=r"not visible: b$"):
        await wait_visible(cast(AIOKafkaAdminClient, metadata), ["a", "b"], timeout_s=0.3)
