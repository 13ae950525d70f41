"""What the pipeline needs of the cluster's brokers, read from the cluster and checked.

Exactly-once rests on broker settings as much as on the workers: the transaction state log
and the consumer offsets topic must be replicated as much as the pipeline's own topics, a
write must reach `min.insync.replicas` replicas before it is acknowledged, and the brokers
must allow the workers' transaction timeout (`transaction.max.timeout.ms`). `cluster_facts`
reads them (broker count, and each broker's settings as the first broker reports them);
`cluster_problems` says what stands in the way, each problem naming the setting to change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from pipeline.settings import Settings

BROKER_SETTINGS = (
    "transaction.max.timeout.ms",
    "min.insync.replicas",
    "transaction.state.log.replication.factor",
    "transaction.state.log.min.isr",
    "offsets.topic.replication.factor",
)


@dataclass(frozen=True)
class ClusterFacts:
    """The broker count, and the broker settings exactly-once depends on."""

    brokers: int
    settings: dict[str, str]

    def number(self, name: str) -> int | None:
        value = self.settings.get(name)
        try:
            return None if value is None else int(value)
        except ValueError:
            return None


async def cluster_facts(admin: AIOKafkaAdminClient) -> ClusterFacts:
    """Read the broker count and `BROKER_SETTINGS` from a started admin client."""
    cluster: dict[str, Any] = await admin.describe_cluster()
    brokers = cluster["brokers"]
    settings: dict[str, str] = {}
    if brokers:
        wanted = dict.fromkeys(BROKER_SETTINGS)
        resource = ConfigResource(ConfigResourceType.BROKER, str(brokers[0]["node_id"]), wanted)
        for response in await admin.describe_configs([resource]):
            for described in response.to_object()["resources"]:
                for entry in described["config_entries"]:
                    settings[entry["config_names"]] = entry["config_value"]
    return ClusterFacts(len(brokers), settings)


def replication_problem(settings: Settings, facts: ClusterFacts) -> str | None:
    """Why the pipeline's topics cannot be created with their replication factor, if so."""
    if settings.topic_replication > facts.brokers:
        return (
            f"PIPELINE_TOPIC_REPLICATION={settings.topic_replication} needs at least that many "
            f"brokers; the cluster at {settings.kafka_bootstrap_servers} has {facts.brokers}"
        )
    return None


def transaction_timeout_problem(settings: Settings, facts: ClusterFacts) -> str | None:
    """Why the brokers would refuse the workers' transaction timeout, if they would."""
    max_timeout = facts.number("transaction.max.timeout.ms")
    if max_timeout is not None and max_timeout < settings.transaction_timeout_seconds * 1000:
        return (
            f"PIPELINE_TRANSACTION_TIMEOUT_SECONDS={settings.transaction_timeout_seconds:g} "
            f"exceeds the brokers' transaction.max.timeout.ms={max_timeout}"
        )
    return None


def cluster_problems(settings: Settings, facts: ClusterFacts) -> list[str]:
    """What in the cluster stands against exactly-once with `settings`, each naming a setting."""
    problems = []
    replication = replication_problem(settings, facts)
    if replication is not None:
        problems.append(replication)
    timeout = transaction_timeout_problem(settings, facts)
    if timeout is not None:
        problems.append(timeout)
    replicas = settings.topic_replication
    for name in ("transaction.state.log.replication.factor", "offsets.topic.replication.factor"):
        value = facts.number(name)
        if value is not None and value < replicas:
            problems.append(
                f"the brokers' {name}={value} is below PIPELINE_TOPIC_REPLICATION={replicas}: "
                "losing one broker could lose committed transactions or offsets"
            )
    if replicas >= 3:
        for name in ("min.insync.replicas", "transaction.state.log.min.isr"):
            value = facts.number(name)
            if value is not None and value < 2:
                problems.append(
                    f"the brokers' {name}={value}: with PIPELINE_TOPIC_REPLICATION={replicas} "
                    "an acknowledged write should be on at least 2 replicas"
                )
    return problems
