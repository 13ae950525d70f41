"""How decisions progress while faults happen: the committed end of `decisions.audit`,
sampled, and the longest stall after each fault."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Final

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from pipeline import catalogue
from pipeline.kafka.config import client_options
from pipeline.settings import Settings

SAMPLE_EVERY_S: Final = 0.5
STALL_WINDOW_S: Final = 180.0


class DecisionTimeline:
    """Samples how many audit records are committed (what `read_committed` readers see)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.samples: list[tuple[float, int]] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._sample())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _sample(self) -> None:
        reader = AIOKafkaConsumer(
            **client_options(self.settings),
            client_id="consent-pipeline-chaos-progress",
            isolation_level="read_committed",
            request_timeout_ms=5_000,
        )
        topic = self.settings.topic(catalogue.AUDIT)
        tps = [TopicPartition(topic, p) for p in range(self.settings.topic_partitions)]
        started = False
        try:
            while True:
                try:
                    if not started:
                        await reader.start()
                        started = True
                    ends = await reader.end_offsets(tps)
                    self.samples.append((time.monotonic(), sum(ends.values())))
                except (KafkaError, OSError, TimeoutError):
                    pass  # a broker is down: no sample, the gap shows as a stall
                await asyncio.sleep(SAMPLE_EVERY_S)
        finally:
            if started:
                with contextlib.suppress(Exception):
                    await reader.stop()

    def longest_stall(self, since: float, window_s: float = STALL_WINDOW_S) -> float:
        """The longest time without a new committed decision, from `since` on (counted from
        `since` itself: a stall that began before it ends the same)."""
        last_growth = since
        longest = 0.0
        previous: int | None = None
        for at, end in self.samples:
            if at > since + window_s:
                break
            if previous is not None and end > previous and at >= since:
                longest = max(longest, at - last_growth)
                last_growth = at
            previous = end
        tail = [at for at, _ in self.samples if since <= at <= since + window_s]
        if tail:
            longest = max(longest, tail[-1] - last_growth)
        return round(longest, 1)
