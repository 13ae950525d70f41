"""What breaks: worker processes (killed, stopped, restarted, added, removed) and the broker.

Workers are `python -m pipeline.cli worker` child processes (or a benchmark contender's,
`benchmarks.contenders`), each in its own session, with a stable worker id (its
transactional id), its own web port and state folder, and one log file per start. Only
processes this module started are ever signalled, by their pid. The local broker is
`deploy/local/kafka.sh`'s, on a port the suite owns: it is killed with SIGKILL through the
pid the script recorded and started again with the script.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, NamedTuple

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from benchmarks.contenders import MODULES
from benchmarks.contenders.common import PROGRESS_PREFIX
from pipeline import catalogue
from pipeline.errors import PipelineError
from pipeline.kafka.config import client_options
from pipeline.settings import Settings

log = logging.getLogger(__name__)

REPO: Final = Path(__file__).resolve().parents[2]
KAFKA_SH: Final = REPO / "deploy" / "local" / "kafka.sh"
CONTENDER_RESTARTS: Final = 3
"""Crashes in a row after which a contender's local state is wiped before it starts again."""
CRASH_WINDOW_S: Final = 120.0
"""A crash this soon after its start continues a row of crashes."""
SUPERVISED_START_S: Final = 600.0
"""How long a supervised contender may take to start, crashes included."""


class FaultError(PipelineError):
    """A fault could not be injected or undone (a worker or the broker would not start)."""


def free_port() -> int:
    """A TCP port on loopback nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class FaultLog:
    """What was done to the system, with seconds since the scenario began."""

    started: float = field(default_factory=time.monotonic)
    entries: list[str] = field(default_factory=list)

    def add(self, text: str) -> None:
        self.entries.append(f"t={time.monotonic() - self.started:7.1f}s {text}")
        log.info("fault: %s", text)


class LogMark(NamedTuple):
    """A place in a worker slot's logs: which process's log, and how far into it."""

    log: int
    offset: int


class Worker:
    """One worker slot: a stable id, port and state folder; a process per start.

    With `contender` (a name of `benchmarks.contenders.MODULES`) the slot runs that
    contender instead, in the consumer group `settings.app_id`, reading the raw topics
    under `settings.topic_prefix` and writing under the prefix and its own name; it has no
    web server and counts as ready once it reports progress.
    """

    def __init__(
        self,
        settings: Settings,
        log_dir: Path,
        name: str,
        contender: str | None = None,
        *,
        poisoned: bool = False,
    ) -> None:
        self.settings = settings
        self.name = name
        self.contender = contender
        self.poisoned = poisoned
        """Runs the worker in which planted records raise (`tests.chaos.poisoned`)."""
        self.log_dir = log_dir
        self.logs: list[Path] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.starting = False
        """A supervised start is under way (`WorkerPool._ready`)."""
        self.crashed = False
        """The last process exited by itself."""
        self.crash_streak = 0
        """Crashes in a row, each soon after its start (`CRASH_WINDOW_S`)."""
        self.started_at = 0.0
        self.expected_exit = False
        self.unexpected_exits: list[int] = []
        self._scanned = 0
        """Bytes of the current log already searched for the progress line."""
        self._progressed = False

    def start(self) -> None:
        """Start a new process for this slot (the previous one must have exited)."""
        if self.running:
            raise FaultError(f"worker {self.name} is already running")
        self.starts += 1
        path = self.log_dir / f"{self.name}.{self.starts}.log"
        self.logs.append(path)
        self._scanned, self._progressed = 0, False
        env = {**os.environ, **self.settings.to_env()}
        env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
        with path.open("ab") as out:
            self.proc = subprocess.Popen(
                self.command(),
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.expected_exit = False
        self.crashed = False
        self.started_at = time.monotonic()

    def command(self) -> list[str]:
        """The process this slot runs: the pipeline's worker, or the contender."""
        if self.contender is None and self.poisoned:
            return [sys.executable, "-m", "tests.chaos.poisoned"]
        if self.contender is None:
            return [sys.executable, "-m", "pipeline.cli", "worker"]
        s = self.settings
        return [
            sys.executable,
            "-m",
            MODULES[self.contender],
            "--bootstrap",
            s.kafka_bootstrap_servers,
            "--prefix",
            s.topic_prefix,
            "--group",
            s.app_id,
            "--partitions",
            str(s.topic_partitions),
            "--state-dir",
            str(s.data_dir),
        ]

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def check(self) -> None:
        """Note an exit nobody asked for (a crash)."""
        if self.proc is not None and not self.expected_exit:
            code = self.proc.poll()
            if code is not None:
                self.unexpected_exits.append(code)
                self.expected_exit = True
                self.crashed = True
                soon = time.monotonic() - self.started_at < CRASH_WINDOW_S
                self.crash_streak = self.crash_streak + 1 if soon else 1

    def send(self, sig: int) -> None:
        """Send `sig` to the process, if it runs; its exit is then expected."""
        if self.running and self.proc is not None:
            self.expected_exit = True
            self.proc.send_signal(sig)

    def signal_only(self, sig: int) -> None:
        """Send `sig` (SIGSTOP, SIGCONT) without expecting the process to exit."""
        if self.running and self.proc is not None:
            self.proc.send_signal(sig)

    def log_mark(self) -> LogMark:
        """How much of the current log is written: where `wait_line` starts looking. A
        process started after the mark writes a new log, which is read from its start."""
        path = self.logs[-1] if self.logs else None
        size = path.stat().st_size if path is not None and path.exists() else 0
        return LogMark(len(self.logs), size)

    def lines_since(self, mark: LogMark | int) -> list[str]:
        """The current log's lines written after `mark` (an offset: of the current log)."""
        path = self.logs[-1] if self.logs else None
        if path is None or not path.exists():
            return []
        offset = mark if isinstance(mark, int) else mark.offset
        if isinstance(mark, LogMark) and mark.log != len(self.logs):
            offset = 0
        with path.open("rb") as log_file:
            log_file.seek(offset)
            return log_file.read().decode(errors="replace").splitlines()

    async def wait_line(self, text: str, *, after: LogMark | int, timeout_s: float) -> str:
        """Wait until the current log has a line containing `text` written after `after`;
        returns the line.

        Raises:
            FaultError: none in time, or the process exited.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in self.lines_since(after):
                if text in line:
                    return line
            if not self.running:
                raise FaultError(f"worker {self.name} exited while waiting for {text!r}")
            await asyncio.sleep(0.2)
        raise FaultError(f"worker {self.name} logged no {text!r} in {timeout_s:.0f}s")

    async def wait_exit(self, timeout_s: float) -> int | None:
        """Wait for the process to end; SIGKILL it after `timeout_s`."""
        proc = self.proc
        if proc is None:
            return None
        try:
            return await asyncio.to_thread(proc.wait, timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            return await asyncio.to_thread(proc.wait)

    async def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60.0) -> int | None:
        self.send(sig)
        return await self.wait_exit(timeout_s)

    async def wait_ready(self, timeout_s: float = 120.0) -> float:
        """Wait until `/ready` answers 200; returns the seconds it took.

        Raises:
            FaultError: the process exited, or was not ready in time.
        """
        started = time.monotonic()
        url = f"http://127.0.0.1:{self.settings.web_port}/ready"
        while time.monotonic() - started < timeout_s:
            if not self.running:
                raise FaultError(f"worker {self.name} exited while starting")
            if self.contender is not None:
                if self._reported_progress():
                    return time.monotonic() - started
            elif await asyncio.to_thread(_http_ok, url):
                return time.monotonic() - started
            await asyncio.sleep(0.25)
        raise FaultError(f"worker {self.name} not ready after {timeout_s:.0f}s")

    def _reported_progress(self) -> bool:
        """The contender's current log has a progress line (it runs and has its tables);
        reads only what was written since the last look."""
        path = self.logs[-1]
        if self._progressed or not path.exists():
            return self._progressed
        prefix = PROGRESS_PREFIX.encode()
        start = max(0, self._scanned - len(prefix) + 1)  # a line cut by the last read
        with path.open("rb") as log_file:
            log_file.seek(start)
            written = log_file.read()
        self._scanned = start + len(written)
        self._progressed = prefix in written
        return self._progressed

    async def scrape(self) -> str | None:
        """The worker's `/metrics` text, or None when it does not answer (or is a contender)."""
        if not self.running or self.contender is not None:
            return None
        url = f"http://127.0.0.1:{self.settings.web_port}/metrics"
        return await asyncio.to_thread(_http_text, url)

    def log_texts(self) -> list[tuple[str, bytes]]:
        return [(path.name, path.read_bytes()) for path in self.logs if path.exists()]


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _http_text(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())
    except (urllib.error.URLError, OSError, ValueError):
        return None


class WorkerPool:
    """Worker slots `w0`, `w1`, ... of one consumer group (one app id)."""

    def __init__(
        self,
        settings: Settings,
        root: Path,
        faults: FaultLog,
        contender: str | None = None,
        *,
        poisoned: bool = False,
    ) -> None:
        self.settings = settings
        self.root = root
        self.faults = faults
        self.contender = contender
        self.poisoned = poisoned
        self.workers: dict[str, Worker] = {}
        (root / "logs").mkdir(parents=True, exist_ok=True)

    def slot(self, name: str) -> Worker:
        worker = self.workers.get(name)
        if worker is None:
            settings = self.settings.model_copy(
                update={
                    "worker_id": name,
                    "web_port": free_port(),
                    "data_dir": self.root / "state" / name,
                }
            )
            worker = Worker(
                settings, self.root / "logs", name, self.contender, poisoned=self.poisoned
            )
            self.workers[name] = worker
        return worker

    async def start(self, name: str, *, wait: bool = True) -> Worker:
        worker = self.slot(name)
        worker.start()
        if wait:
            seconds = await self._ready(worker)
            self.faults.add(f"started worker {name} (ready in {seconds:.1f}s)")
        else:
            self.faults.add(f"started worker {name}")
        return worker

    async def _ready(self, worker: Worker) -> float:
        """Wait until the worker is ready. A contender is supervised as a process manager
        would: a crash while starting is counted and it is started again (`_start_again`)."""
        if worker.contender is None:
            return await worker.wait_ready()
        started = time.monotonic()
        worker.starting = True
        try:
            while True:
                try:
                    await worker.wait_ready()
                    return time.monotonic() - started
                except FaultError:
                    if worker.running or time.monotonic() - started > SUPERVISED_START_S:
                        raise
                worker.check()
                self.faults.add(f"worker {worker.name} crashed while starting")
                self._start_again(worker)
        finally:
            worker.starting = False

    def _start_again(self, worker: Worker) -> None:
        """Start a crashed contender again; after `CONTENDER_RESTARTS` crashes in a row, each
        within `CRASH_WINDOW_S` of its start, wipe its local state first (what Faust's
        `ConsistencyError` asks for), so it recovers its tables from their changelogs."""
        if worker.crash_streak >= CONTENDER_RESTARTS:
            self.wipe_state(worker.name)
            worker.crash_streak = 0
        worker.start()

    def revive(self) -> None:
        """Note every worker's exit nobody asked for (a crash), and start again every
        contender that exited so."""
        for worker in self.workers.values():
            worker.check()
            if worker.contender is None or worker.starting or worker.running:
                continue
            if worker.crashed:
                self.faults.add(f"worker {worker.name} crashed; started again")
                self._start_again(worker)

    async def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        worker = self.workers[name]
        label = "kill -9" if sig == signal.SIGKILL else f"kill -{signal.Signals(sig).name}"
        pid = worker.pid
        await worker.stop(sig, timeout_s=60.0)
        self.faults.add(f"{label} worker {name} (pid {pid})")

    async def restart(self, name: str, sig: int = signal.SIGKILL, pause_s: float = 0.0) -> None:
        """Signal the worker, wait for it to exit, pause, start it again and wait until ready."""
        worker = self.workers[name]
        worker.starting = True  # a contender's supervisor (`revive`) keeps off meanwhile
        try:
            await self.kill(name, sig)
            worker.check()  # it may have crashed by itself just before
            if pause_s:
                await asyncio.sleep(pause_s)
            worker.start()
            seconds = await self._ready(worker)
        finally:
            worker.starting = False
        self.faults.add(f"restarted worker {name} after {pause_s:.1f}s (ready in {seconds:.1f}s)")

    def wipe_state(self, name: str) -> None:
        worker = self.workers[name]
        if worker.running:
            raise FaultError("wipe the state of a stopped worker only")
        shutil.rmtree(worker.settings.data_dir, ignore_errors=True)
        self.faults.add(f"wiped the local state of worker {name}")

    def running(self) -> list[str]:
        return [name for name, worker in self.workers.items() if worker.running]

    def check(self) -> None:
        for worker in self.workers.values():
            worker.check()

    @property
    def unexpected_exits(self) -> dict[str, list[int]]:
        return {n: w.unexpected_exits for n, w in self.workers.items() if w.unexpected_exits}

    async def scrape_all(self) -> dict[str, str]:
        texts = {}
        for name, worker in self.workers.items():
            text = await worker.scrape()
            if text is not None:
                texts[name] = text
        return texts

    async def stop_all(self, timeout_s: float = 60.0) -> None:
        self.check()
        await asyncio.gather(
            *(w.stop(signal.SIGTERM, timeout_s) for w in self.workers.values() if w.running)
        )


class LocalBroker:
    """The single-node broker `deploy/local/kafka.sh` runs on `port`."""

    def __init__(self, port: int, home: Path | None = None, faults: FaultLog | None = None) -> None:
        self.port = port
        self.home = home or Path(os.environ.get("KAFKA_HOME_DIR", REPO / ".local" / "kafka"))
        self.faults = faults

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pidfile(self) -> Path:
        return self.home / f"broker-{self.port}.pid"

    def pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except OSError:
            return None
        return pid

    async def _script(self, command: str) -> None:
        env = {**os.environ, "KAFKA_PORT": str(self.port), "KAFKA_HOME_DIR": str(self.home)}
        proc = await asyncio.create_subprocess_exec(
            str(KAFKA_SH),
            command,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            tail = out.decode(errors="replace")[-2000:]
            raise FaultError(f"kafka.sh {command} failed on port {self.port}:\n{tail}")

    async def up(self) -> float:
        started = time.monotonic()
        await self._script("up")
        return time.monotonic() - started

    async def down(self) -> None:
        await self._script("down")

    async def kill9(self) -> None:
        """SIGKILL the broker process and wait until it is gone."""
        pid = self.pid()
        if pid is None:
            raise FaultError(f"no broker running on port {self.port}")
        os.kill(pid, signal.SIGKILL)
        for _ in range(300):
            try:
                os.kill(pid, 0)
            except OSError:
                break
            await asyncio.sleep(0.1)
        if self.faults is not None:
            self.faults.add(f"kill -9 broker 127.0.0.1:{self.port} (pid {pid})")

    async def restart_after_kill(self, pause_s: float) -> None:
        await self.kill9()
        await asyncio.sleep(pause_s)
        seconds = await self.up()
        if self.faults is not None:
            self.faults.add(f"restarted broker after {pause_s:.1f}s down (up in {seconds:.1f}s)")

    async def graceful_restart(self) -> None:
        await self.down()
        seconds = await self.up()
        if self.faults is not None:
            self.faults.add(f"restarted broker gracefully (up in {seconds:.1f}s)")


class LagProbe:
    """How many records the group has not committed yet: inputs and the hops between stages."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        topics = (*catalogue.INPUTS, *catalogue.INTERNAL)
        self.topics = [settings.topic(topic) for topic in topics]

    async def lag(self) -> int | None:
        """Records behind, or None while the cluster or the group cannot be asked."""
        options = client_options(self.settings)
        admin = AIOKafkaAdminClient(**options, client_id="consent-pipeline-chaos-lag")
        consumer = AIOKafkaConsumer(**options, client_id="consent-pipeline-chaos-lag")
        try:
            await admin.start()
            await consumer.start()
            tps: list[TopicPartition] = []
            for topic in self.topics:
                partitions = consumer.partitions_for_topic(topic)
                if not partitions:
                    await consumer._client.force_metadata_update()
                    partitions = consumer.partitions_for_topic(topic) or set()
                tps.extend(TopicPartition(topic, p) for p in partitions)
            ends = await consumer.end_offsets(tps)
            committed = await admin.list_consumer_group_offsets(self.settings.app_id)
            behind = 0
            for tp in tps:
                meta = committed.get(tp)
                position = meta.offset if meta is not None and meta.offset >= 0 else 0
                behind += max(0, ends[tp] - position)
            return behind
        except (TimeoutError, KafkaError, OSError):
            return None
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()
            with contextlib.suppress(Exception):
                await admin.close()

    async def wait_caught_up(self, timeout_s: float, poll_s: float = 2.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if await self.lag() == 0:
                return True
            await asyncio.sleep(poll_s)
        return False


class LocalCluster:
    """Three KRaft nodes `deploy/local/kafka.sh` runs (`KAFKA_NODES=3`), from `port`: node n
    (its broker id) listens on `port + 2(n-1)`. Every topic is replicated three times with
    `min.insync.replicas=2`, and so are the transaction state log and consumer offsets."""

    NODES: Final = (1, 2, 3)

    def __init__(self, port: int, home: Path | None = None, faults: FaultLog | None = None) -> None:
        self.port = port
        self.home = home or Path(os.environ.get("KAFKA_HOME_DIR", REPO / ".local" / "kafka"))
        self.faults = faults

    def node_port(self, node: int) -> int:
        return self.port + 2 * (node - 1)

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{self.node_port(n)}" for n in self.NODES)

    def pid(self, node: int) -> int | None:
        return LocalBroker(self.node_port(node), self.home).pid()

    async def _script(self, command: str, node: int | None = None) -> float:
        env = {
            **os.environ,
            "KAFKA_PORT": str(self.port),
            "KAFKA_NODES": "3",
            "KAFKA_HOME_DIR": str(self.home),
        }
        env.pop("KAFKA_NODE", None)
        if node is not None:
            env["KAFKA_NODE"] = str(node)
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            str(KAFKA_SH),
            command,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            tail = out.decode(errors="replace")[-2000:]
            raise FaultError(f"kafka.sh {command} failed (node {node}):\n{tail}")
        return time.monotonic() - started

    async def up(self) -> None:
        await self._script("up")

    async def down(self) -> None:
        await self._script("down")

    def running(self) -> list[int]:
        return [n for n in self.NODES if self.pid(n) is not None]

    async def kill9(self, node: int, why: str = "") -> None:
        pid = self.pid(node)
        await self._script("kill", node)
        if self.faults is not None:
            self.faults.add(f"kill -9 broker {node} (pid {pid}){why}")

    async def start(self, node: int) -> None:
        seconds = await self._script("up", node)
        if self.faults is not None:
            self.faults.add(f"started broker {node} (up in {seconds:.1f}s)")

    async def stop(self, node: int, why: str = "") -> None:
        seconds = await self._script("down", node)
        if self.faults is not None:
            self.faults.add(f"stopped broker {node} gracefully in {seconds:.1f}s{why}")
