"""The latency probe: reads a contender's output and measures end-to-end latency.

End-to-end latency of a record = the time the probe reads the output record it caused
minus the broker's append time of the input record (the raw topics use LogAppendTime;
every contender copies that timestamp into its output: `timings.received_at` in audit
records, `received_at` in the ceiling's). Only records whose input was appended inside
[--since, --until] count. The probe reads one partition of the output topic (a sample of
a sixth of the records with 6 partitions) so it does not compete with the contender for
the CPU. Output: one JSON document on stdout.

    python -m benchmarks.probe --bootstrap ... --topic p.decisions.audit --since T0 --until T1
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from aiokafka import AIOKafkaConsumer, TopicPartition

from benchmarks.stats import percentile
from schemas import codec

GRACE_S = 5.0
"""How long after --until the probe keeps reading for late outputs."""


def received_at(value: bytes) -> float | None:
    """The input's append time (unix seconds) an output record carries, if any."""
    try:
        record = codec.loads(value)
    except ValueError:  # not JSON: it carries no timestamp the probe can read
        return None
    if not isinstance(record, dict):
        return None
    timings = record.get("timings")
    stamp = (timings if isinstance(timings, dict) else record).get("received_at")
    return float(stamp) if isinstance(stamp, int | float) else None


async def probe(
    bootstrap: str, topic: str, partitions: list[int], since: float, until: float
) -> dict[str, object]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    latencies: list[float] = []
    try:
        consumer.assign([TopicPartition(topic, p) for p in partitions])
        deadline = until + GRACE_S
        while time.time() < deadline:
            batch = await consumer.getmany(timeout_ms=50, max_records=2000)
            read_at = time.time()
            for records in batch.values():
                for record in records:
                    if record.value is None:
                        continue
                    stamp = received_at(record.value)
                    if stamp is None or stamp < since or stamp > until:
                        continue
                    latencies.append(read_at - stamp)
    finally:
        await consumer.stop()
    ms = [v * 1000 for v in latencies]
    return {
        "topic": topic,
        "partitions": partitions,
        "samples": len(ms),
        "p50_ms": percentile(ms, 0.50),
        "p90_ms": percentile(ms, 0.90),
        "p99_ms": percentile(ms, 0.99),
        "max_ms": max(ms) if ms else None,
        "mean_ms": sum(ms) / len(ms) if ms else None,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="benchmarks.probe", description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--partitions", default="0", help="comma-separated partitions to read")
    parser.add_argument("--since", type=float, required=True, help="unix seconds")
    parser.add_argument("--until", type=float, required=True, help="unix seconds")
    args = parser.parse_args(argv)
    partitions = [int(p) for p in args.partitions.split(",") if p]
    result = asyncio.run(probe(args.bootstrap, args.topic, partitions, args.since, args.until))
    sys.stdout.write(codec.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
