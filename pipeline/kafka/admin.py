"""Create the catalogue's topics and check that the inputs are co-partitioned."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from pipeline import catalogue
from pipeline.catalogue import TableName, Topic
from pipeline.errors import TopicLayoutError
from pipeline.kafka.cluster import (
    ClusterFacts,
    cluster_facts,
    cluster_problems,
    replication_problem,
)
from pipeline.kafka.config import client_options, unreachable
from pipeline.settings import Settings

log = logging.getLogger(__name__)

DAY_MS = 24 * 3600 * 1000
TOPIC_ALREADY_EXISTS = 36
"""Kafka's error code for a topic another client created meanwhile."""
TOPIC_VISIBLE_TIMEOUT_S = 30.0
TOPIC_VISIBLE_POLL_S = 0.1


@dataclass(frozen=True)
class TopicSpec:
    """A topic as the pipeline wants it created."""

    name: str
    partitions: int
    replication: int
    config: dict[str, str] = field(default_factory=dict)


def topic_config(settings: Settings, topic: Topic) -> dict[str, str]:
    """The topic-level configuration of a catalogue topic: retention or compaction, clock."""
    if topic.compacted:
        config = {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"}
    elif topic.retention == "internal":
        config = {"retention.ms": str(settings.internal_retention_hours * 3600 * 1000)}
    else:
        days = {
            "raw": settings.raw_retention_days,
            "output": settings.output_retention_days,
            "audit": settings.audit_retention_days,
            "dlq": settings.dlq_retention_days,
        }[topic.retention]
        config = {"retention.ms": str(days * DAY_MS)}
    if topic.append_time:
        config["message.timestamp.type"] = "LogAppendTime"
    return config


def spec(settings: Settings, topic: Topic, partitions: int | None = None) -> TopicSpec:
    """How a catalogue topic is created on the configured cluster."""
    return TopicSpec(
        settings.topic(topic),
        partitions or settings.topic_partitions,
        settings.topic_replication,
        topic_config(settings, topic),
    )


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every input, output and internal topic, with partitions, replication and retention."""
    topics = (*catalogue.INPUTS, *catalogue.OUTPUTS, *catalogue.INTERNAL)
    return [spec(settings, topic) for topic in topics]


def changelog_specs(
    settings: Settings, tables: Iterable[TableName], partitions: int | None = None
) -> list[TopicSpec]:
    """The compacted changelog topics of the worker's tables, co-partitioned with the inputs."""
    return [spec(settings, catalogue.changelog(table), partitions) for table in tables]


def admin_client(settings: Settings) -> AIOKafkaAdminClient:
    """An admin client for the configured cluster (not started)."""
    return AIOKafkaAdminClient(**client_options(settings), client_id=f"{settings.app_id}-admin")


@contextlib.asynccontextmanager
async def connected_admin(settings: Settings) -> AsyncIterator[AIOKafkaAdminClient]:
    """A started admin client, closed on exit.

    Raises:
        KafkaUnavailable: no bootstrap server answered; the message names the setting.
    """
    admin = admin_client(settings)
    try:
        await admin.start()
    except (KafkaError, OSError) as exc:
        with contextlib.suppress(Exception):
            await admin.close()
        raise unreachable(settings, exc) from exc
    try:
        yield admin
    finally:
        await admin.close()


async def create_topics(settings: Settings) -> list[str]:
    """Create every missing topic and return their names; existing topics are left as they are."""
    return await ensure_topics(settings, topic_specs(settings))


async def ensure_topics(settings: Settings, specs: list[TopicSpec]) -> list[str]:
    """Create the topics of `specs` that do not exist yet; returns their names.

    Raises:
        TopicLayoutError: the cluster has fewer brokers than the replication factor, or
            refused a topic; the message names the setting or the topic and Kafka's reason.
    """
    async with connected_admin(settings) as admin:
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        if missing:
            problem = replication_problem(settings, await cluster_facts(admin))
            if problem is not None:
                raise TopicLayoutError(problem)
            response = await admin.create_topics(
                [
                    NewTopic(s.name, s.partitions, s.replication, topic_configs=s.config)
                    for s in missing
                ]
            )
            refused = [
                f"{error['topic']}: {error['error_message'] or error['error_code']}"
                for error in response.to_object()["topic_errors"]
                if error["error_code"] not in (0, TOPIC_ALREADY_EXISTS)
            ]
            if refused:
                raise TopicLayoutError("the cluster refused to create " + "; ".join(refused))
            await wait_visible(admin, [s.name for s in missing])
        return [s.name for s in missing]


async def wait_visible(
    admin: AIOKafkaAdminClient, names: list[str], timeout_s: float = TOPIC_VISIBLE_TIMEOUT_S
) -> None:
    """Return once the broker's metadata lists every topic of `names` with its partitions.

    A controller acknowledges a creation before the brokers have applied it, so a client
    asking at once can still be told the topic does not exist.

    Raises:
        TopicLayoutError: some topics are still unknown after `timeout_s`; names them.
    """
    deadline = time.monotonic() + timeout_s
    pending = list(names)
    while True:
        described = await admin.describe_topics(pending)
        pending = [
            t["topic"] for t in described if t.get("error_code", 0) != 0 or not t["partitions"]
        ]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TopicLayoutError(f"topics created but not visible: {', '.join(pending)}")
        await asyncio.sleep(TOPIC_VISIBLE_POLL_S)


async def partition_counts(settings: Settings, names: list[str]) -> dict[str, int | None]:
    """The partition count of each topic, None where the topic does not exist."""
    async with connected_admin(settings) as admin:
        try:
            described = await admin.describe_topics(names)
        except KafkaError as exc:
            raise TopicLayoutError(f"cannot describe topics: {type(exc).__name__}") from exc
    counts: dict[str, int | None] = dict.fromkeys(names)
    for topic in described:
        if topic.get("error_code", 0) == 0:
            counts[topic["topic"]] = len(topic["partitions"])
    return counts


async def check_copartitioned(settings: Settings) -> int:
    """The common partition count of the topics that must be co-partitioned.

    The raw topics must exist and may have any partition count; consent.changes,
    identity.links, the internal topics and the changelogs that exist already must all
    have the same one.

    Raises:
        TopicLayoutError: a topic is missing or the counts differ; the message names them.
    """
    required = (*catalogue.INPUTS, *catalogue.INTERNAL)
    changelogs = [settings.topic(topic) for topic in catalogue.CHANGELOGS]
    names = [settings.topic(topic) for topic in required]
    counts = await partition_counts(settings, names + changelogs)
    missing = [n for n in names if counts[n] is None]
    if missing:
        raise TopicLayoutError(
            f"topics missing: {', '.join(missing)} (run `consent-pipeline topics create`)"
        )
    joined = {
        name: count
        for topic in catalogue.COPARTITIONED
        if (count := counts.get(name := settings.topic(topic))) is not None
    }
    if len(set(joined.values())) != 1:
        layout = ", ".join(f"{n}={c}" for n, c in joined.items())
        tables = f"{catalogue.CONSENT_CHANGES.name}, {catalogue.IDENTITY_LINKS.name}"
        raise TopicLayoutError(
            f"{tables}, the internal and changelog topics are not co-partitioned: {layout}"
        )
    return next(iter(joined.values()))


async def read_cluster(settings: Settings) -> ClusterFacts:
    """The broker count and the broker settings exactly-once depends on.

    Raises:
        TopicLayoutError: the brokers could not be asked.
    """
    async with connected_admin(settings) as admin:
        try:
            return await cluster_facts(admin)
        except KafkaError as exc:
            raise TopicLayoutError(
                f"cannot read the brokers' settings: {type(exc).__name__}"
            ) from exc


async def check_cluster(settings: Settings) -> list[str]:
    """What in the cluster's brokers stands against exactly-once (`cluster_problems`)."""
    return cluster_problems(settings, await read_cluster(settings))
