"""Faults of a replicated cluster: three KRaft brokers (`LocalCluster`), every topic with three
replicas and `min.insync.replicas=2`, the pipeline's own `PIPELINE_TOPIC_REPLICATION=3`.

Each scenario reports, for every fault, the longest time without a new committed decision
after it (`DecisionTimeline`), and holds the ledger's invariants like the single-broker
scenarios, plus `dlq.only_bad_records`: the DLQ holds exactly the malformed records the load
planted, by reason, and nothing a broker fault caused.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import NewPartitions
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from pipeline import catalogue
from pipeline.kafka.admin import admin_client
from pipeline.kafka.config import client_options
from tests.chaos.faults import LocalCluster
from tests.chaos.kafka_admin import ClusterProbe
from tests.chaos.ledger import Invariant
from tests.chaos.progress import DecisionTimeline
from tests.chaos.zombies import RECOVERED, RESTORE_BYTES_PER_S

if TYPE_CHECKING:
    from tests.chaos.scenarios import Harness

BROKER_DOWN_S: Final = 6.0
ISR_DOWN_S: Final = 30.0
LAYOUT_REFUSAL: Final = "partitions were added to"
TOPIC_CONFIG_SOURCE: Final = 1
"""DescribeConfigs' source of a setting made for the topic itself."""


def cluster_of(h: Harness) -> LocalCluster:
    if h.cluster is None:
        raise RuntimeError("a cluster scenario needs the three brokers the suite started")
    return h.cluster


async def stall_after(h: Harness, timeline: DecisionTimeline, fault: str, since: float) -> None:
    """Note the longest stall of decisions after the fault that began at `since`."""
    await asyncio.sleep(20)
    h.stalls.append((fault, timeline.longest_stall(since)))


def dlq_only_bad_records(h: Harness) -> Invariant:
    """The DLQ holds exactly the malformed records the load planted, by reason (and records
    planted to raise, as `processing_error`)."""
    planted = Counter(
        {
            kind.removeprefix("malformed.").removeprefix("poison."): n
            for kind, n in h.stats.kinds.items()
            if kind.startswith("malformed.") or kind == "poison.processing_error"
        }
    )
    ledger = next((i for i in h.invariants if i.name == "ledger.exactly_once"), None)
    found = Counter(
        {
            name.removeprefix("dlq."): int(n)
            for name, n in (ledger.counts.items() if ledger is not None else ())
            if name.startswith("dlq.")
        }
    )
    wrong = {
        reason: (found[reason], planted[reason])
        for reason in found | planted
        if found[reason] != planted[reason]
    }
    return Invariant(
        "dlq.only_bad_records",
        ledger is not None and not wrong,
        {"planted_malformed": sum(planted.values()), "dead_lettered": sum(found.values())},
        [f"{reason}: {got} in the DLQ, {want} planted" for reason, (got, want) in wrong.items()],
    )


async def broker_kill9(h: Harness) -> None:
    """A worker restarted with a slow restore; during it, kill -9 of the broker coordinating
    the other worker's transactions, mid-transaction; later, kill -9 of the broker leading
    the most input partitions."""
    cluster = cluster_of(h)
    timeline = DecisionTimeline(h.settings)
    await timeline.start()
    await h.start_workers(2)
    load = h.start_load(h.plan(h.size.events))
    await h.wait_progress(h.size.fault_points[0], load)
    async with ClusterProbe(h.settings) as probe:
        recovery_client = f"{h.settings.app_id}-w0-recovery"
        await probe.set_client_quota(recovery_client, "consumer_byte_rate", RESTORE_BYTES_PER_S)
        w0 = h.pool.workers["w0"]
        await h.pool.kill("w0")
        h.pool.wipe_state("w0")
        w0.start()
        h.faults.add("restarted worker w0 on an empty state folder, its restore throttled")
        await w0.wait_line("recovering them", after=0, timeout_s=120)
        coordinator = await probe.transaction_coordinator(f"{h.settings.app_id}.w1")
        for _ in range(200):  # mid-transaction: w1 holds one open
            txn = await probe.transaction(f"{h.settings.app_id}.w1")
            if txn is not None and txn.state == "Ongoing":
                break
            await asyncio.sleep(0.005)
        since = asyncio.get_running_loop().time()
        await cluster.kill9(coordinator, " (coordinating w1's transactions, during w0's restore)")
        fault = "kill -9 of w1's transaction coordinator"
        stall = asyncio.create_task(stall_after(h, timeline, fault, _monotonic()))
        await asyncio.sleep(BROKER_DOWN_S)
        await cluster.start(coordinator)
        await w0.wait_line(RECOVERED, after=0, timeout_s=600)
        await probe.set_client_quota(recovery_client, "consumer_byte_rate", None)
        h.faults.add(
            f"w0 restored its tables ({asyncio.get_running_loop().time() - since:.0f}s "
            "after the broker was killed); quota removed"
        )
        await stall
        await h.wait_progress(h.size.fault_points[1], load)
        inputs = [
            h.settings.topic(t)
            for t in (*catalogue.RAW.values(), catalogue.CONSENT_CHANGES, catalogue.IDENTITY_LINKS)
        ]
        leaders = Counter((await probe.leaders(inputs)).values())
        busiest = leaders.most_common(1)[0][0]
        mark = _monotonic()
        await cluster.kill9(busiest, f" (leading {leaders[busiest]} input partitions, mid-load)")
        await asyncio.sleep(BROKER_DOWN_S)
        await cluster.start(busiest)
        await stall_after(
            h, timeline, "kill -9 of the broker leading the most input partitions", mark
        )
    await load
    await h.settle()
    await timeline.stop()


async def rolling_restart(h: Harness) -> None:
    cluster = cluster_of(h)
    timeline = DecisionTimeline(h.settings)
    await timeline.start()
    await h.start_workers(2)
    load = h.start_load(h.plan(h.size.events))
    for at, node in zip(h.size.fault_points, cluster.NODES, strict=False):
        await h.wait_progress(at, load)
        mark = _monotonic()
        await cluster.stop(node, " (rolling restart)")
        await cluster.start(node)
        await stall_after(h, timeline, f"rolling restart of broker {node}", mark)
    await load
    await h.settle()
    await timeline.stop()


async def isr_below_min(h: Harness) -> None:
    """The pipeline's topics require three in-sync replicas for a while (as when two replicas
    fall behind), and one broker is killed: every write to them fails until it is back. The
    pipeline stalls and resumes; nothing is dead-lettered or lost."""
    cluster = cluster_of(h)
    timeline = DecisionTimeline(h.settings)
    await timeline.start()
    await h.start_workers(2)
    load = h.start_load(h.plan(h.size.events))
    await h.wait_progress(h.size.fault_points[0], load)
    names = await _pipeline_topics(h)
    await _set_topic_config(h, names, "min.insync.replicas", "3")
    h.faults.add(f"min.insync.replicas=3 on the pipeline's {len(names)} topics")
    mark = _monotonic()
    await cluster.kill9(3, f" for {ISR_DOWN_S:.0f}s: two in-sync replicas of three needed")
    await asyncio.sleep(ISR_DOWN_S)
    await cluster.start(3)
    await _set_topic_config(h, names, "min.insync.replicas", "2")
    h.faults.add("min.insync.replicas=2 again")
    await stall_after(h, timeline, "in-sync replicas below min.insync.replicas", mark)
    await load
    await h.settle()
    await timeline.stop()


async def coordinator_moves(h: Harness) -> None:
    cluster = cluster_of(h)
    timeline = DecisionTimeline(h.settings)
    await timeline.start()
    await h.start_workers(2)
    load = h.start_load(h.plan(h.size.events))
    for at in h.size.fault_points:
        await h.wait_progress(at, load)
        async with ClusterProbe(h.settings) as probe:
            node = await probe.group_coordinator(h.settings.app_id)
        mark = _monotonic()
        await cluster.kill9(node, " (the workers' group coordinator)")
        await asyncio.sleep(BROKER_DOWN_S)
        await cluster.start(node)
        await stall_after(h, timeline, f"group coordinator (broker {node}) killed", mark)
    await load
    await h.settle()
    await timeline.stop()


async def partitions_added(h: Harness) -> None:
    """Partitions added to a raw topic under load are taken in; partitions added to
    `consent.changes` stop every worker with a message saying why."""
    await h.start_workers(2)
    load = h.start_load(h.plan(h.size.events))
    await h.wait_progress(h.size.fault_points[0], load)
    raw = h.settings.topic(catalogue.RAW_TAG)
    grown = h.settings.topic_partitions + 3
    admin = admin_client(h.settings)
    await admin.start()
    try:
        await admin.create_partitions({raw: NewPartitions(grown)})
        h.metrics.partitions = grown
        h.faults.add(f"{catalogue.RAW_TAG.name} grown to {grown} partitions under load")
        await h.sink.forget_partitions()
        await load
        await h.settle()
        h.invariants.append(await _new_partitions_written(h, raw, h.settings.topic_partitions))
        for worker in h.pool.workers.values():
            worker.expected_exit = True  # what comes next stops them, as it must
        marks = {name: w.log_mark() for name, w in h.pool.workers.items()}
        consent = h.settings.topic(catalogue.CONSENT_CHANGES)
        await admin.create_partitions({consent: NewPartitions(grown)})
        h.faults.add(f"{catalogue.CONSENT_CHANGES.name} grown to {grown} partitions")
    finally:
        await admin.close()
    refused: list[str] = []
    for name, worker in h.pool.workers.items():
        try:
            await worker.wait_line(LAYOUT_REFUSAL, after=marks[name], timeout_s=120)
            code = await worker.wait_exit(60)
            refused.append(f"{name} exited ({code})")
        except Exception as exc:
            refused.append(f"{name}: {exc}")
    h.faults.add("; ".join(refused))
    h.invariants.append(
        Invariant(
            "layout.consent_partitions_refused",
            all("exited" in r for r in refused),
            {"workers": len(refused), "refused_and_exited": sum("exited" in r for r in refused)},
            [r for r in refused if "exited" not in r],
        )
    )


async def _new_partitions_written(h: Harness, topic: str, first: int) -> Invariant:
    """Records reached the partitions added under load (the ledger holds each decided)."""
    reader = AIOKafkaConsumer(**client_options(h.settings), client_id="chaos-grown")
    await reader.start()
    try:
        await reader._client.force_metadata_update()
        partitions = sorted(reader.partitions_for_topic(topic) or ())
        added = [TopicPartition(topic, p) for p in partitions if p >= first]
        ends = await reader.end_offsets(added) if added else {}
    finally:
        await reader.stop()
    written = sum(ends.values())
    return Invariant(
        "raw.added_partitions_taken_in",
        bool(added) and written > 0,
        {"partitions_added": len(added), "records_on_them": written},
        [] if written else ["no record reached the added partitions"],
    )


async def scale_four(h: Harness) -> None:
    timeline = DecisionTimeline(h.settings)
    await timeline.start()
    await h.start_workers(2)
    load = h.start_load(h.plan(h.size.events))

    async def add_two() -> None:
        await asyncio.gather(h.pool.start("w2"), h.pool.start("w3"))

    async def remove_one() -> None:
        await h.pool.kill("w1", signal.SIGTERM)

    async def restart_one() -> None:
        await h.pool.restart("w2", signal.SIGKILL, pause_s=1.0)

    async def add_back() -> None:
        await h.pool.start("w1")

    steps: tuple[tuple[str, Callable[[], Awaitable[None]]], ...] = (
        ("added w2 and w3", add_two),
        ("removed w1 (SIGTERM)", remove_one),
        ("kill -9 and restart of w2", restart_one),
        ("added w1 back", add_back),
    )
    for at, (what, step) in zip(h.size.fault_points, steps, strict=False):
        await h.wait_progress(at, load)
        mark = _monotonic()
        await step()
        await stall_after(h, timeline, what, mark)
    await load
    await h.settle()
    await timeline.stop()


async def _pipeline_topics(h: Harness) -> list[str]:
    admin = admin_client(h.settings)
    await admin.start()
    try:
        prefix = (h.settings.topic_prefix, f"{h.settings.app_id}.")
        return [n for n in await admin.list_topics() if n.startswith(prefix)]
    finally:
        await admin.close()


async def _set_topic_config(h: Harness, names: list[str], key: str, value: str) -> None:
    """Set one setting of each topic, keeping the others it sets (AlterConfigs replaces a
    topic's whole set: read it first)."""
    admin = admin_client(h.settings)
    await admin.start()
    try:
        described = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
        )
        resources = []
        for response in described:
            for topic in response.to_object()["resources"]:
                own = {
                    entry["config_names"]: entry["config_value"]
                    for entry in topic["config_entries"]
                    if entry["config_source"] == TOPIC_CONFIG_SOURCE
                }
                own[key] = value
                resources.append(
                    ConfigResource(ConfigResourceType.TOPIC, topic["resource_name"], own)
                )
        await admin.alter_configs(resources)
    finally:
        await admin.close()


def _monotonic() -> float:
    return time.monotonic()
