"""The `pipeline-hop` header: what a raw record's journey between the stages has learned."""

from __future__ import annotations

from pipeline import catalogue
from pipeline.catalogue import Topic
from pipeline.core.parse import Rejected, processing_error
from pipeline.core.route import Origin, Output
from pipeline.runtime.reporting import BatchStats
from pipeline.runtime.stage import Forward, InputRecord
from pipeline.stages.errors import reject
from schemas import fast
from schemas.internal import HOP_HEADER, Found, Hop

HOP = fast.FastModel(Hop)
"""Decodes `pipeline-hop` headers and builds hops (`HOP.build`), in C."""
FOUND = fast.FastModel(Found)


class MissingHop(ValueError):
    """An internal record without a readable `pipeline-hop` header."""


def hop_of(record: InputRecord) -> Hop:
    """The hop of an internal record: handed over in process, or its header decoded (in C;
    what the compiled decoder does not accept, pydantic validates, and rejects with its
    error).

    Raises:
        MissingHop: the record has none.
        ValidationError: the header is not a `Hop`.
    """
    if record.hop is not None:
        return record.hop
    header = record.header(HOP_HEADER)
    if header is None:
        raise MissingHop("no pipeline-hop header")
    return HOP.decode(header) or Hop.model_validate_json(header)


def carry_on(topic: Topic, key: bytes, record: InputRecord, hop: Hop) -> Forward:
    """The record that carries an internal `record`'s value on to `topic` with `hop`."""
    return Forward(topic, key, record.value, hop, record.parsed)


def to_decision(hop: Hop, record: InputRecord, stats: BatchStats) -> Forward:
    """The record for the decision stage, keyed by the event's subject."""
    stats.resolutions[hop.match or "none"] += 1
    if hop.user_id is None:
        stats.unresolved[hop.source] += 1
    subject = hop.user_id if hop.user_id is not None else hop.anonymous_subject
    return carry_on(catalogue.BY_SUBJECT, subject.encode(), record, hop)


def raw_origin(hop: Hop) -> Origin:
    """Where the raw record of a hop was read."""
    return Origin(hop.origin.topic, hop.origin.partition, hop.origin.offset)


def note_latency(record: InputRecord, now: float, stats: BatchStats) -> None:
    """Count how long an internal record took through its topic: from its append time to
    `now`. A record handed over in process took none, and is counted by the engine
    (`hops_in_process`) instead."""
    if record.hop is None:
        stats.hop_latencies.append(
            (catalogue.hop_name(record.topic), max(0.0, now - record.timestamp_ms / 1000))
        )


def reject_hop(record: InputRecord, hop: Hop, rejected: Rejected, stats: BatchStats) -> Output:
    """The DLQ record of a raw record that failed on its way, naming the raw origin."""
    return reject(
        record, rejected, stats, hop.source, origin=raw_origin(hop), received_ms=hop.produced_ms
    )


def raised_on_the_way(record: InputRecord, exc: Exception, stats: BatchStats, stage: str) -> Output:
    """The `processing_error` DLQ record of an internal record whose processing raised,
    naming its raw origin when its hop can be read."""
    try:
        hop = hop_of(record)
    except Exception:  # the header was the trouble: the record's own position
        return reject(record, processing_error(exc, stage), stats, "internal")
    stats.processing_errors[hop.source] += 1
    return reject_hop(record, hop, processing_error(exc, stage), stats)
