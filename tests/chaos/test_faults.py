"""The fault suite supervises a benchmark contender as a process manager would: a crash is
counted and the process started again, its local state wiped after a row of crashes."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from benchmarks.contenders.common import PROGRESS_PREFIX
from pipeline.settings import Settings
from tests.chaos import faults
from tests.chaos.faults import FaultError, FaultLog, Worker, WorkerPool


def pool(tmp_path: Path, contender: str | None) -> WorkerPool:
    settings = Settings.model_validate(
        {"hmac_key": "unit-test-hmac-key-0123456789abcdef", "topic_prefix": "p."}
    )
    return WorkerPool(settings, tmp_path, FaultLog(), contender)


def test_a_contender_runs_its_module_on_the_suites_topics_and_group(tmp_path: Path) -> None:
    worker = pool(tmp_path, "faust_batched").slot("w0")
    command = worker.command()
    assert command[1:3] == ["-m", "benchmarks.contenders.faust_batched"]
    args = dict(zip(command[3::2], command[4::2], strict=True))
    assert args["--prefix"] == "p."
    assert args["--group"] == worker.settings.app_id
    assert args["--state-dir"] == str(worker.settings.data_dir)
    assert pool(tmp_path, None).slot("w0").command()[1:] == ["-m", "pipeline.cli", "worker"]


def test_a_contender_crashing_while_starting_is_restarted_then_wiped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Worker, "command", lambda self: [sys.executable, "-c", "exit(1)"])
    monkeypatch.setattr(faults, "SUPERVISED_START_S", 4.0)
    crashing = pool(tmp_path, "faust_batched")
    worker = crashing.slot("w0")
    worker.settings.data_dir.mkdir(parents=True)
    (worker.settings.data_dir / "store").write_text("state")

    with pytest.raises(FaultError):
        asyncio.run(crashing.start("w0"))

    entries = crashing.faults.entries
    assert sum("crashed while starting" in e for e in entries) >= faults.CONTENDER_RESTARTS
    assert any("wiped the local state of worker w0" in e for e in entries)
    assert not (worker.settings.data_dir / "store").exists()
    assert worker.unexpected_exits
    assert set(worker.unexpected_exits) == {1}


@pytest.mark.parametrize(("contender", "starts"), [("faust_batched", 2), (None, 1)])
def test_an_exit_by_itself_is_counted_and_a_contender_started_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, contender: str | None, starts: int
) -> None:
    monkeypatch.setattr(Worker, "command", lambda self: [sys.executable, "-c", "exit(2)"])
    crashing = pool(tmp_path, contender)
    worker = crashing.slot("w0")
    worker.start()
    assert worker.proc is not None
    worker.proc.wait()
    crashing.revive()
    assert worker.unexpected_exits == [2]
    assert worker.starts == starts
    revived = any("crashed; started again" in e for e in crashing.faults.entries)
    assert revived == (contender is not None)
    assert worker.proc.wait() == 2


def test_a_contender_is_ready_once_its_log_has_a_progress_line_read_in_pieces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Worker, "command", lambda self: [sys.executable, "-c", "pass"])
    worker = pool(tmp_path, "faust_batched").slot("w0")
    worker.start()
    assert worker.proc is not None
    worker.proc.wait()
    log = worker.logs[-1]
    line = f"{PROGRESS_PREFIX} 100 events\n".encode()
    cut = len(PROGRESS_PREFIX) // 2
    with log.open("ab") as out:
        out.write(b"loading tables\n" + line[:cut])
    assert not worker._reported_progress()
    with log.open("ab") as out:
        out.write(line[cut:])
    assert worker._reported_progress()
    assert worker._reported_progress()  # stays ready

    worker.start()  # a new process writes a new log
    assert not worker._reported_progress()


def test_a_stall_is_time_without_a_decision_while_input_waits() -> None:
    from pipeline.settings import Settings
    from tests.chaos.progress import DecisionTimeline

    timeline = DecisionTimeline(Settings())
    timeline.samples = [
        (0.0, 10, True),
        (1.0, 20, True),
        (2.0, 20, True),  # a fault at 1.5 s: nothing new for 3 s
        (4.0, 20, True),
        (5.0, 30, True),
        (6.0, 30, False),  # caught up: idle time is no stall
        (20.0, 30, False),
    ]

    assert timeline.longest_stall(1.5) == 3.5
    assert timeline.longest_stall(5.5) == 0.0
