"""How decisions progress while faults happen: the committed end of `decisions.audit` and the
group's lag, sampled, and the longest stall after each fault."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from pipeline import catalogue
from pipeline.kafka.config import client_options
from pipeline.settings import Settings

SAMPLE_EVERY_S: Final = 0.5
STALL_WINDOW_S: Final = 180.0


class DecisionTimeline:
    """Samples how many audit records are committed (what `read_committed` readers see), and
    whether the group has input left to process: a stall is time without a new decision
    while there is."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.samples: list[tuple[float, int, bool]] = []
        """(when, audit records committed, whether input was waiting)."""
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._sample())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _sample(self) -> None:
        options = client_options(self.settings)
        reader = AIOKafkaConsumer(
            **options,
            client_id="consent-pipeline-chaos-progress",
            isolation_level="read_committed",
            request_timeout_ms=5_000,
        )
        admin = AIOKafkaAdminClient(**options, client_id="consent-pipeline-chaos-progress")
        audit = self.settings.topic(catalogue.AUDIT)
        started = False
        try:
            while True:
                try:
                    if not started:
                        await reader.start()
                        await admin.start()
                        started = True
                    await self._take(reader, admin, audit)
                except (KafkaError, OSError, TimeoutError):
                    pass  # a broker is down: no sample, the gap shows as a stall
                await asyncio.sleep(SAMPLE_EVERY_S)
        finally:
            if started:
                with contextlib.suppress(Exception):
                    await reader.stop()
                with contextlib.suppress(Exception):
                    await admin.close()

    async def _take(self, reader: AIOKafkaConsumer, admin: AIOKafkaAdminClient, audit: str) -> None:
        inputs = [self.settings.topic(t) for t in (*catalogue.INPUTS, *catalogue.INTERNAL)]
        tps: list[TopicPartition] = []
        for topic in (audit, *inputs):
            partitions = reader.partitions_for_topic(topic) or set()
            tps.extend(TopicPartition(topic, p) for p in partitions)
        if not any(tp.topic == audit for tp in tps):
            await reader._client.force_metadata_update()
            return
        ends = await reader.end_offsets(tps)
        committed: dict[TopicPartition, Any] = await admin.list_consumer_group_offsets(
            self.settings.app_id
        )
        waiting = False
        for tp in tps:
            if tp.topic == audit:
                continue
            meta = committed.get(tp)
            position = meta.offset if meta is not None and meta.offset >= 0 else 0
            waiting = waiting or ends[tp] > position
        done = sum(end for tp, end in ends.items() if tp.topic == audit)
        self.samples.append((time.monotonic(), done, waiting))

    def longest_stall(self, since: float, window_s: float = STALL_WINDOW_S) -> float:
        """The longest time without a new committed decision while input was waiting, from
        `since` on (counted from `since` itself: a stall that began before it ends the same).
        A sample without waiting input (every input committed) ends a stall."""
        last = since
        longest = 0.0
        previous: int | None = None
        waited = False
        for at, done, waiting in self.samples:
            if at > since + window_s:
                break
            if at >= since:
                if previous is not None and done > previous:
                    longest = max(longest, at - last)
                    last = at
                elif not waiting:
                    last = at  # every input committed: idle, not stalled
                waited = waiting
            previous = done
        if waited:
            ends = [at for at, _, _ in self.samples if since <= at <= since + window_s]
            longest = max(longest, ends[-1] - last)
        return round(longest, 1)
