"""What the stages do with a record they cannot process: a DLQ record, never a loss."""

from __future__ import annotations

from pipeline.core.parse import Rejected
from pipeline.core.route import Origin, Output, dlq_record
from pipeline.runtime.reporting import BatchStats
from pipeline.runtime.stage import InputRecord


def reject(
    record: InputRecord,
    rejected: Rejected,
    stats: BatchStats,
    source: str,
    *,
    origin: Origin | None = None,
    received_ms: int | None = None,
) -> Output:
    """The DLQ record of `record`, counted under `source` and the reason.

    Args:
        origin: where the raw record was read, when `record` carries it further down the
            stages; by default the record's own position.
        received_ms: when the raw record reached Kafka; by default the record's own time.
    """
    stats.dlq[source, rejected.reason] += 1
    received = record.timestamp_ms if received_ms is None else received_ms
    return dlq_record(
        rejected,
        data=record.value,
        key=record.key,
        origin=origin or record.origin,
        received_at=received / 1000,
    )
