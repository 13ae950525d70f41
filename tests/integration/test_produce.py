"""`consent-pipeline produce` against the real broker: every record lands as written."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest
from aiokafka.partitioner import DefaultPartitioner

from pipeline import catalogue
from pipeline.core.route import list_key
from pipeline.core.trust import TRUST_HEADER, is_trusted
from pipeline.settings import Settings
from pipeline.sim.stream import produce
from pipeline.sim.traffic import TrafficConfig, TrafficGenerator
from tests.conftest import TRUST_KEY
from tests.integration.conftest import process_env
from tests.integration.kafka_io import Read, read_topics

pytestmark = pytest.mark.integration

TOPICS = catalogue.INPUTS


async def test_produce_writes_every_generated_record_with_its_key_and_signature(
    pipeline_settings: Settings,
) -> None:
    config = TrafficConfig(users=40, malformed_share=0.0, churn_per_event=0.05, list_share=0.05)
    generator = TrafficGenerator(config, seed=5, trust_key=TRUST_KEY)

    report = await produce(pipeline_settings, generator, count=300)

    assert report.raw_records == 300
    assert not report.failures
    expected = sum(report.topics.values())
    names = [pipeline_settings.topic(t) for t in TOPICS]

    def enough(got: dict[str, list[Read]]) -> bool:
        return sum(len(v) for v in got.values()) >= expected

    got = await read_topics(pipeline_settings.kafka_bootstrap_servers, names, enough, 30)
    assert Counter({t.name: len(got[pipeline_settings.topic(t)]) for t in TOPICS}) == report.topics
    signed = 0
    for record in got[pipeline_settings.topic(catalogue.RAW_AUDIENCE)]:
        member = record.json()
        assert record.key == list_key(member["advertiser_id"], member["audience_id"]).encode()
        assert not record.headers, "a customer list names no user: nothing to sign"
    for topic in catalogue.RAW_EVENTS.values():
        for record in got[pipeline_settings.topic(topic)]:
            event = record.json()
            assert record.key == event["event_id"].encode()
            trusted = is_trusted(TRUST_KEY, record.value, dict(record.headers).get(TRUST_HEADER))
            assert trusted == ("user_id" in event)
            signed += trusted
    assert signed > 0
    unkeyed = 0
    for record in got[pipeline_settings.topic(catalogue.CONSENT_CHANGES)]:
        unkeyed += record.key == b""  # the churn's deliberately unkeyed changes
        assert record.key in (b"", record.json()["user_id"].encode())
    assert unkeyed == report.counts["malformed.missing_key"]
    for record in got[pipeline_settings.topic(catalogue.IDENTITY_LINKS)]:
        assert not record.value or record.key == record.json()["match_key"].encode()
    partitions = list(range(pipeline_settings.topic_partitions))
    for records in got.values():
        for record in records:
            expected_partition = DefaultPartitioner()(record.key, partitions, partitions)
            assert record.partition == expected_partition, "partitioned like any client"


def test_the_produce_command_stops_after_count_and_prints_a_summary(
    pipeline_settings: Settings,
) -> None:
    env = process_env(pipeline_settings)

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "produce",
            "--users=30",
            "--count=120",
            "--seed=9",
            "--rate=2000",
            "--mix=dnt_share=0.5",
            "--no-progress",
        ],
        env={**env, "COLUMNS": "120"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert "generated: 120 raw records" in result.stdout
    assert "seed 9" in result.stdout
