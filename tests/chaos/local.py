"""Faults of one worker's own machine: its state folder, a store's lock, corrupt store files,
a full disk, and records that raise in each stage.

The first four are faults of the worker, never of a record: the worker must abort what it
was doing, dead-letter nothing, stop taking input (its partitions go to the other worker
while it leaves the group), and be back to work once the fault is removed; the report
gives that time. The last plants records that raise (`tests.chaos.poisoned`): each must be
dead-lettered alone, as `processing_error`, and every other record decided.

Each holds the ledger's invariants, and `dlq.only_bad_records`: the DLQ holds exactly the
malformed records the load planted, and the planted poison as `processing_error`.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final

from pipeline import catalogue
from pipeline.kafka.producer import Producer
from schemas import codec
from tests.chaos.faults import LogMark, Worker
from tests.chaos.ledger import Invariant
from tests.chaos.poisoned import STAGES, poison
from tests.chaos.readback import Message, read_topic
from tests.chaos.state import compare, replay_consent, rocksdb_table
from tests.chaos.zombies import RECOVERED

if TYPE_CHECKING:
    from tests.chaos.scenarios import Harness

FAULT_LINE: Final = "worker fault:"
FAULT_HELD_S: Final = 20.0
"""How long a fault stays before the suite removes it."""
LOCK_HELD_S: Final = 50.0
"""Longer than the 30 s a worker waits for a store's lock: it stands down meanwhile."""
TMPFS_MB: Final = 64
POISON_PER_STAGE: Final = 12


async def back_to_work(h: Harness, worker: Worker, since: float, mark: LogMark) -> None:
    """Wait for `worker` to recover its assignment after the fault was removed at `since`."""
    await worker.wait_line(RECOVERED, after=mark, timeout_s=180)
    seconds = time.monotonic() - since
    h.faults.add(f"worker {worker.name} back to work {seconds:.1f}s after the fault was removed")
    h.notes.append(f"back to work {seconds:.1f}s after the fault was removed ({worker.name})")


async def stood_down(h: Harness, worker: Worker, after: LogMark | int, what: str) -> None:
    await worker.wait_line(FAULT_LINE, after=after, timeout_s=180)
    h.faults.add(f"worker {worker.name} stood down: {what}")
    await asyncio.sleep(FAULT_HELD_S)


async def data_dir_unusable(h: Harness) -> None:
    """w0's state folder is a file when it starts; later every file and folder of it is
    immutable (`chattr +i`, which holds for root too) when it restarts; w1 works meanwhile."""
    await h.pool.start("w1")
    load = h.start_load(h.plan(h.size.events))
    await h.wait_progress(h.size.fault_points[0], load)
    w0 = h.pool.slot("w0")
    folder = w0.settings.data_dir
    shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    folder.write_text("a file where the state folder should be")
    w0.start()
    h.faults.add(f"started worker w0 with PIPELINE_DATA_DIR a file ({folder.name})")
    await stood_down(h, w0, 0, "its state folder is a file")
    mark = w0.log_mark()
    folder.unlink()
    since = time.monotonic()
    h.faults.add("removed the file")
    await back_to_work(h, w0, since, mark)

    await h.wait_progress(h.size.fault_points[1], load)
    if shutil.which("chattr") is not None:
        await h.pool.kill("w0", signal.SIGTERM)
        if await _run("chattr", "-R", "+i", str(folder)) == 0:
            try:
                w0.start()
                h.faults.add("restarted worker w0 on an immutable state folder (chattr -R +i)")
                await stood_down(h, w0, 0, "its state folder is immutable")
                mark = w0.log_mark()
            finally:
                await _run("chattr", "-R", "-i", str(folder))
            since = time.monotonic()
            h.faults.add("made the folder writable again (chattr -R -i)")
            await back_to_work(h, w0, since, mark)
        else:
            h.notes.append("chattr +i is not available on this file system: step skipped")
    await load
    await h.settle()


async def store_locked(h: Harness) -> None:
    """Another process holds the lock of every one of w0's dedup stores when it restarts."""
    await h.start_workers(2)
    load = h.start_load(h.plan(h.size.events))
    await h.wait_progress(h.size.fault_points[0], load)
    w0 = h.pool.workers["w0"]
    await h.pool.kill("w0", signal.SIGTERM)
    stores = w0.settings.data_dir / h.settings.app_id / "dedup"
    holder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _HOLD_LOCKS,
        str(stores),
        str(h.settings.topic_partitions),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        await holder.stdout.readline()  # the stores are open
        h.faults.add(f"another process (pid {holder.pid}) holds the lock of w0's dedup stores")
        w0.start()
        h.faults.add("restarted worker w0")
        await w0.wait_line(FAULT_LINE, after=0, timeout_s=180)
        h.faults.add("worker w0 stood down: a store's lock held by another process")
        await asyncio.sleep(max(0.0, LOCK_HELD_S - 30 - 5))
        mark = w0.log_mark()
    finally:
        holder.terminate()
        await holder.wait()
    since = time.monotonic()
    h.faults.add("the other process let the locks go")
    await back_to_work(h, w0, since, mark)
    await load
    await h.settle()


_HOLD_LOCKS: Final = """
import sys, pathlib, rocksdict
root, count = pathlib.Path(sys.argv[1]), int(sys.argv[2])
options = rocksdict.Options(raw_mode=True)
options.create_if_missing(True)
held = []
for partition in range(count):
    (root / str(partition)).mkdir(parents=True, exist_ok=True)
    held.append(rocksdict.Rdict(str(root / str(partition)), options))
print("held", flush=True)
sys.stdin.read()
"""


async def store_corrupted(h: Harness) -> None:
    """w0 is killed, garbage is written over its stores' files, and it restarts: it rebuilds
    the corrupt stores from their changelogs. At the end w0 holds every partition alone, and
    its consent table must equal a replay of `consent.changes`."""
    await h.start_workers(2)
    load = h.start_load(h.plan(h.size.events))
    await h.wait_progress(h.size.fault_points[0], load)
    w0 = h.pool.workers["w0"]
    await h.pool.kill("w0", signal.SIGKILL)
    damaged = _corrupt(w0.settings.data_dir / h.settings.app_id)
    h.faults.add(f"wrote garbage over {damaged} files of w0's stores (MANIFEST, SST, CURRENT)")
    mark = w0.log_mark()
    w0.start()
    since = time.monotonic()
    h.faults.add("restarted worker w0")
    await back_to_work(h, w0, since, mark)
    rebuilt = sum("rebuilding it from its changelog" in line for line in w0.lines_since(0))
    h.notes.append(f"w0 found {rebuilt} corrupt stores and rebuilt them from their changelogs")
    await load
    await h.settle("with_two_workers")
    mark = w0.log_mark()
    await h.pool.kill("w1", signal.SIGTERM)
    await w0.wait_line(RECOVERED, after=mark, timeout_s=180)  # w1's partitions, restored
    await h.settle("w0_alone")
    await h.pool.kill("w0", signal.SIGTERM)
    replay = await replay_consent(h.settings)
    h.invariants.append(compare("state.rebuilt_equals_replay", rocksdb_table(w0.settings), replay))
    h.invariants.append(
        Invariant(
            "state.corruption_found",
            rebuilt > 0,
            {"stores_rebuilt": rebuilt, "files_damaged": damaged},
            [] if rebuilt else ["no corrupt store was found: the fault did not bite"],
        )
    )
    await h.pool.start("w0")


def _corrupt(root: Path) -> int:
    damaged = 0
    for store in sorted(p for p in root.glob("*/*") if p.is_dir()):
        for path in store.iterdir():
            if path.name.startswith(("MANIFEST-", "CURRENT")) or path.suffix == ".sst":
                path.write_bytes(b"\x00garbage\xff" * 64)
                damaged += 1
    return damaged


async def disk_full(h: Harness) -> None:
    """w0's state folder is a small file system (tmpfs, as root); it fills up under load and
    is freed again."""
    w0 = h.pool.slot("w0")
    folder = w0.settings.data_dir
    folder.mkdir(parents=True, exist_ok=True)
    if await _run("mount", "-t", "tmpfs", "-o", f"size={TMPFS_MB}m", "tmpfs", str(folder)) != 0:
        h.notes.append("cannot mount a tmpfs here (not root?): the scenario runs no fault")
        await h.start_workers(2)
        await h.start_load(h.plan(h.size.events))
        await h.settle()
        return
    h.faults.add(f"w0's state folder is a {TMPFS_MB} MiB tmpfs")
    filler = folder / "filler"
    try:
        await h.start_workers(2)
        load = h.start_load(h.plan(h.size.events))
        await h.wait_progress(h.size.fault_points[0], load)
        await _run("dd", "if=/dev/zero", f"of={filler}", "bs=1M")
        h.faults.add("filled w0's file system (dd until no space is left)")
        await stood_down(h, w0, 0, "no space left on its file system")
        mark = w0.log_mark()
        filler.unlink()
        since = time.monotonic()
        h.faults.add("freed the space")
        await back_to_work(h, w0, since, mark)
        await load
        await h.settle()
    finally:
        await h.pool.stop_all()
        with contextlib.suppress(OSError):
            filler.unlink()
        await _run("umount", "-l", str(folder))


async def poisoned(h: Harness) -> None:
    """Records that raise in intake, dedup, resolution and the decision, among the load."""
    await h.start_workers(2)
    load = h.start_load(h.plan(h.size.events))
    positions: dict[tuple[str, int, int], str] = {}
    async with Producer(h.settings, client_id="chaos-poison") as producer:
        for round_ in range(POISON_PER_STAGE):
            await h.wait_progress(0.1 + 0.8 * round_ / POISON_PER_STAGE, load)
            for stage in STAGES:
                event = _poison_event(h, stage, round_)
                topic = h.settings.topic(catalogue.RAW_TAG)
                meta = await (await producer.send(topic, event, f"poison-{round_}".encode()))
                positions[(catalogue.RAW_TAG.name, meta.partition, meta.offset)] = stage
                h.stats.written += 1
                h.stats.kinds["poison.processing_error"] += 1
                h.stats.kinds[f"poison.{stage}"] += 1
    h.faults.add(f"planted {len(positions)} records that raise, {POISON_PER_STAGE} per stage")
    await load
    await h.settle()
    h.extra_load["poison_records"] = len(positions)
    h.invariants.append(await _poison_kept(h, positions))


def _poison_event(h: Harness, stage: str, round_: int) -> bytes:
    return codec.dumps(
        {
            "event_id": f"poison-{h.canaries.run}-{stage}-{round_}",
            "event_name": "checkout",
            "event_time": int(time.time()) - 5,
            "action_source": "web",
            "advertiser_id": "adv-poison",
            "user_data": {"click_id": f"clk-poison-{round_}"},
            "custom_data": {"content_ids": [poison(stage)]},
        }
    )


async def _poison_kept(h: Harness, positions: dict[tuple[str, int, int], str]) -> Invariant:
    """Each planted record is in the DLQ as `processing_error`, naming its stage."""
    found: dict[tuple[str, int, int], str] = {}

    def keep(msg: Message) -> None:
        record = codec.loads(msg.value or b"{}")
        origin = record.get("origin") or {}
        topic = str(origin.get("topic", "")).removeprefix(h.settings.topic_prefix)
        found[(topic, origin.get("partition"), origin.get("offset"))] = (  # type: ignore[index]
            f"{record.get('reason')}:{str(record.get('detail', '')).split(':')[0]}"
        )

    await read_topic(h.settings, h.settings.topic(catalogue.DLQ), keep)
    missing = [p for p, stage in positions.items() if found.get(p) != f"processing_error:{stage}"]
    return Invariant(
        "poison.dead_lettered_alone",
        not missing,
        {"planted": len(positions), "dead_lettered_as_planted": len(positions) - len(missing)},
        [f"{t}/{p}@{o}: {found.get((t, p, o), 'not in the DLQ')}" for t, p, o in missing[:5]],
    )


async def _run(*command: str) -> int:
    """Run a command to its end, its output dropped; returns its exit code."""
    proc = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    return await proc.wait()
