"""Measuring a contender from outside: its progress, CPU time and memory.

Progress comes from the contender itself: `PROGRESS` lines on its stdout (ceiling, Faust,
Quix), or the pipeline workers' Prometheus endpoints: raw records finished (an audit or DLQ
record written: `pipeline_events_out_total{topic="decisions.audit"}` and the raw sources'
`pipeline_dlq_total`; a record the first stage has taken in but the last has not decided
is not progress) and the table records folded (`pipeline_consent_changes_total` and
`pipeline_identity_links_total`). CPU time and resident memory come
from /proc through psutil, for every process of the contender. The arithmetic on what is
measured is in `benchmarks.stats`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import aiohttp
import psutil
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.contenders.common import PROGRESS_PREFIX
from benchmarks.stats import completed_inputs, histogram_buckets, metric_sum
from schemas import codec


@dataclass(frozen=True)
class Progress:
    """A contender's counts at one moment (wall-clock time, as time.time())."""

    t: float
    events: int
    consent: int
    """Table records folded: consent changes and identity links."""


class ProgressSource(Protocol):
    """Where the harness reads a contender's progress."""

    async def read(self) -> Progress | None: ...


class StdoutProgress:
    """Follows `PROGRESS` lines on a contender's stdout; other lines go to a log file."""

    def __init__(self, stream: asyncio.StreamReader, log_path: Path) -> None:
        self.latest: Progress | None = None
        self._task = asyncio.create_task(self._follow(stream, log_path))

    async def _follow(self, stream: asyncio.StreamReader, log_path: Path) -> None:
        with log_path.open("ab") as log:
            while line := await stream.readline():
                # Faust's spinner may put terminal escape codes before a line.
                at = line.find(PROGRESS_PREFIX.encode())
                if at >= 0:
                    data = codec.loads(line[at + len(PROGRESS_PREFIX) :])
                    tables = data["consent"] + data.get("links", 0)
                    self.latest = Progress(data["t"], data["events"], tables)
                else:
                    log.write(line)

    async def read(self) -> Progress | None:
        return self.latest

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class MetricsProgress:
    """Scrapes the pipeline workers' `/metrics` and sums their counters."""

    def __init__(self, session: aiohttp.ClientSession, ports: Sequence[int]) -> None:
        self.session = session
        self.urls = [f"http://127.0.0.1:{port}/metrics" for port in ports]

    async def scrape(self) -> list[str] | None:
        """The text of every worker's `/metrics`, or None while one does not answer."""
        texts = []
        for url in self.urls:
            try:
                async with self.session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as r:
                    if r.status != 200:
                        return None
                    texts.append(await r.text())
            except (aiohttp.ClientError, TimeoutError):
                return None
        return texts

    async def read(self) -> Progress | None:
        texts = await self.scrape()
        if texts is None:
            return None
        events = consent = 0.0
        for text in texts:
            events += completed_inputs(text)
            consent += metric_sum(text, "pipeline_consent_changes")
            consent += metric_sum(text, "pipeline_identity_links")
        return Progress(time.time(), int(events), int(consent))

    async def gauge(self, name: str) -> float | None:
        """The sum over workers of every sample of metric family `name`."""
        texts = await self.scrape()
        if not texts:
            return None
        return sum(
            sample.value
            for text in texts
            for metric in text_string_to_metric_families(text)
            if metric.name == name
            for sample in metric.samples
        )

    async def histogram(self, name: str) -> list[tuple[float, float]]:
        """The cumulative buckets (upper bound, count) of histogram `name`, summed over
        workers."""
        texts = await self.scrape() or []
        buckets: dict[float, float] = {}
        for text in texts:
            for le, count in histogram_buckets(text, name):
                buckets[le] = buckets.get(le, 0.0) + count
        return sorted(buckets.items())


class ProcessGroup:
    """CPU time and memory of a contender's processes (and their children)."""

    def __init__(self, pids: Iterable[int]) -> None:
        self.processes = [psutil.Process(pid) for pid in pids]
        self.peak_rss = 0
        self._last_cpu = 0.0

    def _members(self) -> list[psutil.Process]:
        members = []
        for process in self.processes:
            with contextlib.suppress(psutil.Error):
                members.append(process)
                members.extend(process.children(recursive=True))
        return members

    def sample(self) -> tuple[float, int]:
        """CPU seconds used so far and resident bytes now, over every member."""
        cpu = 0.0
        rss = 0
        for member in self._members():
            with contextlib.suppress(psutil.Error):
                times = member.cpu_times()
                cpu += times.user + times.system
                rss += member.memory_info().rss
        self._last_cpu = max(self._last_cpu, cpu)  # a member that just exited drops out
        self.peak_rss = max(self.peak_rss, rss, self.high_water_mark())
        return self._last_cpu, rss

    def high_water_mark(self) -> int:
        """Sum of the members' peak resident sizes (VmHWM), which catches spikes between
        samples."""
        total = 0
        for member in self._members():
            with contextlib.suppress(OSError, psutil.Error):
                for line in Path(f"/proc/{member.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1]) * 1024
        return total
