"""A hop handed over within a worker is decided exactly as one read from its topic."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline import catalogue
from pipeline.core.parse import decode_event
from pipeline.sim.traffic import TrafficConfig, TrafficGenerator
from pipeline.stages import decision
from tests.unit.factories import NOW, tag_event
from tests.unit.stages.chain import TRUST_KEY, Chain, audit_of

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


@pytest.mark.parametrize("in_process", [False, True])
def test_the_decision_decodes_the_raw_event_again_only_when_read_from_its_topic(
    in_process: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[bytes | None] = []

    def counting(source: Any, data: bytes | None, **kwargs: Any) -> Any:
        decoded.append(data)
        return decode_event(source, data, **kwargs)

    monkeypatch.setattr(decision, "decode_event", counting)
    chain = Chain(in_process=in_process)
    outputs = chain.raw("tag", tag_event(), PRODUCED_MS)

    assert audit_of(outputs)["outcomes"]
    assert len(decoded) == (0 if in_process else 1)


@pytest.mark.parametrize("in_process", [False, True])
def test_a_hop_latency_is_observed_only_for_a_hop_through_its_topic(in_process: bool) -> None:
    chain = Chain(in_process=in_process)
    chain.raw("tag", tag_event(), PRODUCED_MS)

    hops = {name for name, _ in chain.stats.hop_latencies}
    assert hops == (set() if in_process else {"by-event", "by-match-key", "by-subject"})
