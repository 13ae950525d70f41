"""Workers the group drops while they still run: a process paused past its session timeout,
and a restore longer than the session timeout.

`worker-pause` SIGSTOPs a worker while it holds an open transaction whose offsets it has not
sent yet (asked of the transaction coordinator, `DescribeTransactions`), keeps it stopped
past the consumer group's session timeout so that the other worker takes its partitions,
and SIGCONTs it: the batch it resumes must be refused (by the group coordinator, or by the
worker itself once its consumer learns it was dropped), aborted, and nothing of it kept.
`slow-restore` throttles a restarted worker's changelog reads (a client quota on its
recovery consumer) so that its restore takes longer than the session timeout: it must keep
its membership while it restores. The ledger's invariants hold over both.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from tests.chaos.faults import FaultError, LogMark, Worker
from tests.chaos.kafka_admin import ClusterProbe, Transaction
from tests.chaos.ledger import Invariant

if TYPE_CHECKING:
    from tests.chaos.scenarios import Harness

SESSION_TIMEOUT_S: Final = 10.0
"""The workers' consumer group session timeout (aiokafka's default, which they keep)."""
PAUSES_S: Final = (18.0, 40.0)
"""The first pause outlives the session timeout but not the batch's deadline: the batch it
resumes reaches its offset commit. The second outlives the transaction timeout (30 s): the
coordinator aborts the transaction and fences the producer."""
CATCH_ATTEMPTS: Final = 400
"""SIGSTOP/SIGCONT tries to catch a worker between a transaction's first record and its
offset commit."""
RECOVERED: Final = "records recovered in"
RECOVERED_LINE: Final = re.compile(r"\((\d+) records recovered in ([\d.]+)s\)")
FENCED: Final = "dropped from group"
ABORTED: Final = {
    "refused_by_the_group_coordinator": "refused the offset commit",
    "refused_by_the_worker_itself": "rebalanced or dropped this worker during the batch",
    "producer_fenced_by_the_transaction_coordinator": "fenced this worker's producer",
    "aborted_past_the_batch_deadline": "batch failed (TimeoutError)",
}
"""How a zombie's batch ended, by the words of the worker's log line."""
RESTORE_BYTES_PER_S: Final = 256 * 1024
"""The restarted worker's changelog reads are throttled to this (`consumer_byte_rate`)."""


@dataclass
class Pause:
    """One SIGSTOP/SIGCONT of a worker."""

    worker: str
    caught: Transaction | None
    """The open transaction it was stopped in (None: stopped between transactions)."""
    mark: LogMark
    """Where its log stood at SIGCONT."""


async def pause_in_transaction(h: Harness, name: str, seconds: float) -> Pause:
    """SIGSTOP `name` while it holds an open transaction without offsets yet, for `seconds`,
    then SIGCONT it; waits until it processes again."""
    worker = h.pool.workers[name]
    others = [w for n, w in h.pool.workers.items() if n != name and w.running]
    transactional_id = f"{h.settings.app_id}.{name}"
    caught: Transaction | None = None
    async with ClusterProbe(h.settings) as probe:
        for _ in range(CATCH_ATTEMPTS):
            worker.signal_only(signal.SIGSTOP)
            txn = await probe.transaction(transactional_id)
            if txn is not None and txn.state == "Ongoing" and not txn.offsets_added:
                caught = txn
                break
            worker.signal_only(signal.SIGCONT)
            await asyncio.sleep(h.rng.uniform(0.001, 0.02))
        else:
            worker.signal_only(signal.SIGSTOP)
    stopped = time.monotonic()
    what = (
        f"holding an open transaction over {len(caught.partitions)} partitions, its offsets "
        "not yet sent"
        if caught is not None
        else "between transactions (no open one caught)"
    )
    h.faults.add(f"SIGSTOP worker {name} {what}, for {seconds:.0f}s")
    marks = {w.name: w.log_mark() for w in others}
    taken_over: list[float] = []

    async def take_over() -> None:
        await asyncio.gather(
            *(w.wait_line(RECOVERED, after=marks[w.name], timeout_s=seconds) for w in others)
        )
        taken_over.append(time.monotonic() - stopped)

    watch = asyncio.create_task(take_over())
    await asyncio.sleep(seconds)
    mark = worker.log_mark()
    worker.signal_only(signal.SIGCONT)
    resumed = time.monotonic()
    h.faults.add(f"SIGCONT worker {name}")
    with contextlib.suppress(FaultError):
        await watch
    if taken_over:
        h.faults.add(
            f"the other workers had taken its partitions over {taken_over[0]:.1f}s after SIGSTOP"
        )
    else:
        h.faults.add("the other workers had not taken its partitions over while it was stopped")
    await worker.wait_line(RECOVERED, after=mark, timeout_s=120)
    h.faults.add(f"worker {name} processing again {time.monotonic() - resumed:.1f}s after SIGCONT")
    return Pause(name, caught, mark)


def fenced_after(pauses: list[Pause], workers: dict[str, Worker]) -> Invariant:
    """Every worker stopped inside a transaction had that transaction ended, not committed,
    on waking: refused by a coordinator or aborted by the worker itself."""
    counts = dict.fromkeys(ABORTED, 0)
    missed: list[str] = []
    for pause in pauses:
        lines = workers[pause.worker].lines_since(pause.mark)
        ended = [kind for kind, words in ABORTED.items() if any(words in x for x in lines)]
        for kind in ended:
            counts[kind] += 1
        if pause.caught is not None and not ended:
            missed.append(f"worker {pause.worker}: its open transaction was not seen to end")
    caught = sum(1 for p in pauses if p.caught is not None)
    return Invariant(
        "zombie.commit_refused",
        not missed and caught > 0,
        {"pauses": len(pauses), "paused_inside_a_transaction": caught, **counts},
        missed or ([] if caught else ["no pause caught a worker inside a transaction"]),
    )


async def worker_pause(h: Harness) -> None:
    await h.start_workers(2)
    load = h.start_load(h.plan(h.size.events))
    pauses = []
    for at, name, seconds in zip(h.size.fault_points, ("w0", "w1"), PAUSES_S, strict=False):
        await h.wait_progress(at, load)
        pauses.append(await pause_in_transaction(h, name, seconds))
    await load
    await h.settle()
    h.invariants.append(fenced_after(pauses, h.pool.workers))


async def slow_restore(h: Harness) -> None:
    await h.start_workers(2)
    load = h.start_load(h.plan(h.size.events))
    await h.wait_progress(h.size.fault_points[0], load)
    worker = h.pool.workers["w0"]
    recovery_client = f"{h.settings.app_id}-w0-recovery"
    async with ClusterProbe(h.settings) as probe:
        await probe.set_client_quota(recovery_client, "consumer_byte_rate", RESTORE_BYTES_PER_S)
        h.faults.add(f"throttled w0's changelog reads to {RESTORE_BYTES_PER_S // 1024} KiB/s")
        try:
            await h.pool.kill("w0")
            h.pool.wipe_state("w0")
            worker.start()
            h.faults.add("started worker w0 on an empty state folder")
            line = await worker.wait_line(RECOVERED, after=0, timeout_s=600)
        finally:
            await probe.set_client_quota(recovery_client, "consumer_byte_rate", None)
    found = RECOVERED_LINE.search(line)
    records, seconds = (int(found.group(1)), float(found.group(2))) if found else (0, 0.0)
    h.faults.add(f"w0 restored {records:,} changelog records in {seconds:.1f}s; quota removed")
    dropped = [text for text in worker.lines_since(0) if FENCED in text]
    await load
    await h.settle()
    short = seconds <= SESSION_TIMEOUT_S
    h.invariants.append(
        Invariant(
            "restore.kept_membership",
            not short and not dropped,
            {
                "restore_seconds": round(seconds),
                "session_timeout_seconds": round(SESSION_TIMEOUT_S),
                "records_restored": records,
                "dropped_from_group": len(dropped),
            },
            (["the restore was not longer than the session timeout"] if short else [])
            + dropped[:3],
        )
    )
