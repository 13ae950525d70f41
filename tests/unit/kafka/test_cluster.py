"""What in the brokers' settings stands against exactly-once, each naming the setting."""

from __future__ import annotations

import pytest

from pipeline.kafka.cluster import ClusterFacts, cluster_problems, transaction_timeout_problem
from pipeline.settings import Settings

SOUND = {
    "transaction.max.timeout.ms": "900000",
    "min.insync.replicas": "2",
    "transaction.state.log.replication.factor": "3",
    "transaction.state.log.min.isr": "2",
    "offsets.topic.replication.factor": "3",
}


def test_three_replicated_brokers_with_kafkas_defaults_allow_three_replicas() -> None:
    settings = Settings(topic_replication=3)

    assert cluster_problems(settings, ClusterFacts(3, SOUND)) == []


@pytest.mark.parametrize(
    ("brokers", "changed", "named"),
    [
        (2, {}, "PIPELINE_TOPIC_REPLICATION=3"),
        (3, {"transaction.max.timeout.ms": "20000"}, "PIPELINE_TRANSACTION_TIMEOUT_SECONDS"),
        (3, {"transaction.state.log.replication.factor": "1"}, "transaction.state.log"),
        (3, {"offsets.topic.replication.factor": "1"}, "offsets.topic.replication.factor"),
        (3, {"min.insync.replicas": "1"}, "min.insync.replicas=1"),
        (3, {"transaction.state.log.min.isr": "1"}, "transaction.state.log.min.isr=1"),
    ],
)
def test_each_shortfall_is_named(brokers: int, changed: dict[str, str], named: str) -> None:
    problems = cluster_problems(
        Settings(topic_replication=3), ClusterFacts(brokers, SOUND | changed)
    )

    assert len(problems) == 1
    assert named in problems[0]


def test_one_broker_is_enough_for_one_replica() -> None:
    single = {**SOUND, "transaction.state.log.replication.factor": "1", "min.insync.replicas": "1"}
    single["offsets.topic.replication.factor"] = "1"
    single["transaction.state.log.min.isr"] = "1"

    assert cluster_problems(Settings(topic_replication=1), ClusterFacts(1, single)) == []


def test_a_worker_refuses_a_transaction_timeout_the_brokers_would_refuse() -> None:
    settings = Settings(transaction_timeout_seconds=120, barrier_timeout_seconds=15)
    facts = ClusterFacts(1, {**SOUND, "transaction.max.timeout.ms": "60000"})

    problem = transaction_timeout_problem(settings, facts)

    assert problem is not None
    assert "PIPELINE_TRANSACTION_TIMEOUT_SECONDS=120" in problem
    assert "60000" in problem
