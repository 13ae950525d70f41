"""Create the pipeline's topics and check that the inputs are co-partitioned."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from pipeline.errors import TopicLayoutError
from pipeline.kafka_config import client_options
from pipeline.settings import Settings
from pipeline.topics import CONSENT_TOPIC, OUTPUT_TOPICS, RAW_TOPICS

log = logging.getLogger(__name__)

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    """A topic as the pipeline wants it created."""

    name: str
    partitions: int
    replication: int
    config: dict[str, str] = field(default_factory=dict)


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every topic the pipeline reads or writes, with partitions, replication and retention."""

    def spec(name: str, config: dict[str, str]) -> TopicSpec:
        return TopicSpec(
            settings.topic(name), settings.topic_partitions, settings.topic_replication, config
        )

    retention = {
        "decisions.audit": settings.audit_retention_days,
        "dlq": settings.dlq_retention_days,
    }
    # Inputs carry the broker's append time, so "acknowledged before produced" compares
    # consent changes and events on one clock.
    append_time = {"message.timestamp.type": "LogAppendTime"}
    specs = [
        spec(name, {"retention.ms": str(settings.raw_retention_days * DAY_MS), **append_time})
        for name in RAW_TOPICS
    ]
    specs.append(
        spec(
            CONSENT_TOPIC,
            {"cleanup.policy": "compact", "min.compaction.lag.ms": "0", **append_time},
        )
    )
    specs.extend(
        spec(
            name,
            {"retention.ms": str(retention.get(name, settings.output_retention_days) * DAY_MS)},
        )
        for name in OUTPUT_TOPICS
    )
    return specs


def changelog_specs(settings: Settings, tables: Iterable[str]) -> list[TopicSpec]:
    """The compacted changelog topics of the worker's tables, co-partitioned with the inputs."""
    return [
        TopicSpec(
            settings.topic(f"{settings.app_id}.{table}-changelog"),
            settings.topic_partitions,
            settings.topic_replication,
            {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"},
        )
        for table in tables
    ]


def admin_client(settings: Settings) -> AIOKafkaAdminClient:
    """An admin client for the configured cluster (not started)."""
    return AIOKafkaAdminClient(**client_options(settings), client_id=f"{settings.app_id}-admin")


async def create_topics(settings: Settings) -> list[str]:
    """Create every missing topic and return their names; existing topics are left as they are."""
    return await ensure_topics(settings, topic_specs(settings))


async def ensure_topics(settings: Settings, specs: list[TopicSpec]) -> list[str]:
    """Create the topics of `specs` that do not exist yet; returns their names."""
    admin = admin_client(settings)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        if missing:
            await admin.create_topics(
                [
                    NewTopic(s.name, s.partitions, s.replication, topic_configs=s.config)
                    for s in missing
                ]
            )
        return [s.name for s in missing]
    finally:
        await admin.close()


async def partition_counts(settings: Settings, names: list[str]) -> dict[str, int | None]:
    """The partition count of each topic, None where the topic does not exist."""
    admin = admin_client(settings)
    await admin.start()
    try:
        described = await admin.describe_topics(names)
    except KafkaError as exc:
        raise TopicLayoutError(f"cannot describe topics: {type(exc).__name__}") from exc
    finally:
        await admin.close()
    counts: dict[str, int | None] = dict.fromkeys(names)
    for topic in described:
        if topic.get("error_code", 0) == 0:
            counts[topic["topic"]] = len(topic["partitions"])
    return counts


async def check_copartitioned(settings: Settings) -> int:
    """The common partition count of the input topics.

    Raises:
        TopicLayoutError: an input topic is missing or the counts differ; the message names them.
    """
    names = [settings.topic(n) for n in (*RAW_TOPICS, CONSENT_TOPIC)]
    counts = await partition_counts(settings, names)
    missing = [n for n, c in counts.items() if c is None]
    if missing:
        raise TopicLayoutError(
            f"input topics missing: {', '.join(missing)} (run `consent-pipeline topics create`)"
        )
    if len(set(counts.values())) != 1:
        layout = ", ".join(f"{n}={c}" for n, c in counts.items())
        raise TopicLayoutError(f"input topics are not co-partitioned: {layout}")
    count = next(iter(counts.values()))
    assert count is not None
    return count
