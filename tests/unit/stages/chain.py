"""Every stage of a worker over in-memory tables, records handed from hop to hop directly.

What the engine does through Kafka (forwarding to the partition of a record's key,
folding table inputs first), done in memory, so the stages' logic can be tested end to
end without a broker.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from aiokafka.partitioner import murmur2

from pipeline import catalogue
from pipeline.catalogue import Topic
from pipeline.core.parse import ParseLimits
from pipeline.core.policy import PolicyConfig
from pipeline.core.route import Origin, Output
from pipeline.core.trust import TRUST_HEADER, trust_signature
from pipeline.errors import WorkerFault
from pipeline.runtime.reporting import BatchStats
from pipeline.runtime.stage import Forward, InputRecord, Stage
from pipeline.stages.decision import DecisionConfig, DecisionStage
from pipeline.stages.dedup import DedupConfig, DedupStage
from pipeline.stages.intake import IntakeConfig, IntakeStage
from pipeline.stages.resolution import ResolutionConfig, ResolutionStage
from pipeline.state.stores import MemoryStore
from pipeline.state.tables import Table
from schemas import codec
from tests.unit.factories import NOW, pseudonymizer

TRUST_KEY = b"trusted-producers-key-0123456789abcdef"


def partition_of(key: bytes, count: int) -> int:
    return int((murmur2(key) & 0x7FFFFFFF) % count)


@dataclass
class Chain:
    """The four stages on `partitions` partitions; `outputs` collects what leaves them.

    A forwarded record reaches the next stage with its hop encoded in its headers, as read
    from its internal topic, or with `in_process`, handed over as the engine does within a
    worker."""

    partitions: int = 3
    aggregate_k: int = 3
    in_process: bool = False
    outputs: list[Output] = field(default_factory=list)
    forwards: list[Forward] = field(default_factory=list)
    stats: BatchStats = field(default_factory=BatchStats)
    _offsets: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.intake = IntakeStage(IntakeConfig(limits=ParseLimits(), trust_key=TRUST_KEY))
        self.dedup = DedupStage(DedupConfig())
        self.resolution = ResolutionStage(ResolutionConfig())
        self.decision = DecisionStage(
            DecisionConfig(
                policy=PolicyConfig(),
                pseudonymizer=pseudonymizer(),
                limits=ParseLimits(require_key=False),
                aggregate_k=self.aggregate_k,
                aggregate_grace_s=0,
            )
        )
        self.stages: list[Stage] = [self.intake, self.dedup, self.resolution, self.decision]
        all_partitions = set(range(self.partitions))
        for stage in self.stages:
            tables = {}
            for name in stage.tables:
                table = Table(name, f"{name}.log", lambda _t, _p, _e: MemoryStore())
                for partition in all_partitions:
                    table.assign(partition)
                tables[name] = table
            stage.bind(tables)
            stage.assigned(all_partitions, self.partitions)
        self._by_input = {t.name: s for s in self.stages for t in (*s.stream_inputs,)}

    # -- table inputs -----------------------------------------------------------------

    def link(
        self, key: str, user_id: str | None, acknowledged_ms: int, *, linked_at: int = 1
    ) -> None:
        """Fold an identity link (None: a tombstone) acknowledged at `acknowledged_ms`."""
        value = (
            None
            if user_id is None
            else codec.dumps({"match_key": key, "user_id": user_id, "linked_at": linked_at})
        )
        self._fold(self.resolution, catalogue.IDENTITY_LINKS, key.encode(), value, acknowledged_ms)

    def consent(self, user_id: str, acknowledged_ms: int, **fields: Any) -> None:
        """Fold a consent change of `user_id` (settings, profile...) acknowledged then."""
        change = {"user_id": user_id, "changed_at": acknowledged_ms, **fields}
        self._fold(
            self.decision,
            catalogue.CONSENT_CHANGES,
            user_id.encode(),
            codec.dumps(change),
            acknowledged_ms,
        )

    def _fold(
        self, stage: Stage, topic: Topic, key: bytes, value: bytes | None, at_ms: int
    ) -> None:
        record = self._input(topic, key, value, at_ms, partition_of(key, self.partitions))
        self.outputs.extend(
            o for o in self._run(stage.fold, stage, record) if isinstance(o, Output)
        )

    # -- events -------------------------------------------------------------------------

    def raw(
        self,
        source: str,
        event: dict[str, Any] | bytes,
        produced_ms: int,
        *,
        trusted: bool = False,
        key: bytes | None = b"any",
        partition: int = 0,
    ) -> list[Output]:
        """Send a raw record through every hop; returns the outputs it led to."""
        value = event if isinstance(event, bytes) else codec.dumps(event)
        headers = ((TRUST_HEADER, trust_signature(TRUST_KEY, value)),) if trusted else ()
        topic = catalogue.RAW[source]  # type: ignore[index]
        record = self._input(topic, key, value, produced_ms, partition, headers)
        before = len(self.outputs)
        pending: list[Output | Forward] = self._run(self.intake.process, self.intake, record)
        while pending:
            item = pending.pop(0)
            if isinstance(item, Forward):
                self.forwards.append(item)
                stage = self._by_input[item.topic.name]
                forwarded = self._input(
                    item.topic,
                    item.key,
                    item.value,
                    NOW * 1000,
                    partition_of(item.key, self.partitions),
                    () if self.in_process else item.headers(),
                )
                if self.in_process:
                    forwarded = replace(forwarded, hop=item.hop, parsed=item.parsed)
                pending.extend(self._run(stage.process, stage, forwarded))
            else:
                self.outputs.append(item)
        return self.outputs[before:]

    def _run(
        self, step: Callable[..., Sequence[Output | Forward]], stage: Stage, record: InputRecord
    ) -> list[Output | Forward]:
        """A stage's step on a record; what raises becomes its DLQ record, as in the engine
        (which first takes back what the record staged, or retries it alone)."""
        try:
            return list(step(record, NOW, self.stats))
        except WorkerFault:
            raise
        except Exception as exc:
            return [stage.raised(record, exc, self.stats)]

    def _input(
        self,
        topic: Topic,
        key: bytes | None,
        value: bytes | None,
        at_ms: int,
        partition: int,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> InputRecord:
        offset = self._offsets.get(topic.name, 0)
        self._offsets[topic.name] = offset + 1
        return InputRecord(
            topic, Origin(topic.name, partition, offset), key, value, at_ms, tuple(headers)
        )


def audit_of(outputs: Sequence[Output]) -> dict[str, Any]:
    """The one audit record among `outputs`."""
    [audit] = [o.record for o in outputs if o.destination == "audit"]
    return audit


def destinations(outputs: Sequence[Output]) -> list[str]:
    return sorted(o.destination for o in outputs)
