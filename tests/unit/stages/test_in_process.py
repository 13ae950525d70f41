"""A hop handed over within a worker is decided exactly as one read from its topic."""

from __future__ import annotations

from typing import Any

from pipeline import catalogue
from pipeline.sim.traffic import TrafficConfig, TrafficGenerator
from tests.unit.factories import NOW
from tests.unit.stages.chain import TRUST_KEY, Chain

ACKNOWLEDGED_MS = int(NOW * 1000) - 60_000
PRODUCED_MS = int(NOW * 1000) - 1_000


def replay(in_process: bool) -> list[tuple[str, bytes | None, Any]]:
    """The synthetic mix (consent, links, churn, every dialect, copies, customer lists,
    malformed records) through one chain; what leaves it, in order."""
    generator = TrafficGenerator(
        TrafficConfig(users=500), seed=5, clock=lambda: NOW, trust_key=TRUST_KEY
    )
    chain = Chain(in_process=in_process)
    for record in [
        *generator.consent_bootstrap(),
        *generator.identity_bootstrap(),
        *generator.records(1_500),
    ]:
        if record.topic is catalogue.CONSENT_CHANGES:
            assert record.key is not None
            chain._fold(chain.decision, record.topic, record.key, record.value, ACKNOWLEDGED_MS)
        elif record.topic is catalogue.IDENTITY_LINKS:
            assert record.key is not None
            chain._fold(chain.resolution, record.topic, record.key, record.value, ACKNOWLEDGED_MS)
        else:
            assert record.topic.source is not None
            assert record.value is not None
            chain.raw(
                record.topic.source,
                record.value,
                PRODUCED_MS,
                trusted=bool(record.headers),
                key=record.key,
            )
    return [(output.destination, output.key, output.record) for output in chain.outputs]


def test_in_process_hops_give_the_same_outputs_as_hops_through_their_topics() -> None:
    through_topics = replay(in_process=False)
    in_process = replay(in_process=True)

    assert len(through_topics) > 1_500
    assert {destination for destination, _, _ in through_topics} >= {
        "audit",
        "dlq",
        "personalization",
        "audiences",
    }
    assert in_process == through_topics
