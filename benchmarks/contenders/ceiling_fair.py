"""The fair ceiling: a raw aiokafka loop that moves through Kafka what the pipeline moves.

Per raw record it writes as many records, of as many bytes, as the pipeline writes per
raw record (measured on the pipeline in the same benchmark run, or the defaults below):
its outputs (`--outputs`, `--output-bytes`), its table writes (`--table-writes`,
`--table-write-bytes`: what its changelogs carry), and the internal records the
pipeline's stages hand each other (`--internal`: the raw value plus a header's worth of
bytes), which it reads back as the stages do. One Kafka transaction per batch holds the
batch's records and its consumed offsets (`read_committed`, produce acks awaited,
`send_offsets_to_transaction`); keys are partitioned by the pipeline's own partitioner
(compiled murmur2). No parsing, no consent, no policy: what exactly-once Kafka I/O of
that volume costs in Python.

    python -m benchmarks.contenders.ceiling_fair --bootstrap 127.0.0.1:9092 --prefix p. --group g
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from benchmarks.contenders.common import ContenderArgs, Progress
from pipeline.kafka.writer import KeyPartitioner

OUTPUT: Final = "ceiling_fair.out"
INTERNAL: Final = "ceiling_fair.internal"
CHANGELOG: Final = "ceiling_fair.changelog"
TOPICS: Final = (OUTPUT, INTERNAL, CHANGELOG)
MAX_RECORDS: Final = 2000
HEADER_BYTES: Final = 450
"""About what a `pipeline-hop` header adds to an internal record."""


def output_topic(prefix: str) -> str:
    """The topic the latency probe reads: the outputs carry the input's append time."""
    return f"{prefix}{OUTPUT}"


class Shape:
    """Records per input for one destination, spread evenly (fractions carried over)."""

    def __init__(self, per_input: float) -> None:
        self.per_input = per_input
        self._owed = 0.0

    def take(self) -> int:
        self._owed += self.per_input
        n = int(self._owed)
        self._owed -= n
        return n


def _payload(value: bytes, size: int) -> bytes:
    if not value:
        value = b"-"
    return (value * (size // len(value) + 1))[:size]


class _Batches:
    """One transaction's records: a batch per topic partition, handed over when full."""

    def __init__(self, producer: AIOKafkaProducer, partition_of: KeyPartitioner, n: int) -> None:
        self.producer = producer
        self.partition_of = partition_of
        self.partitions = n
        self.open: dict[tuple[str, int], Any] = {}
        self.sent: list[asyncio.Future[Any]] = []

    async def append(self, topic: str, key: bytes, value: bytes) -> None:
        slot = (topic, self.partition_of(key) % self.partitions)
        batch = self.open.get(slot)
        if batch is None:
            batch = self.open[slot] = self.producer.create_batch()
        if batch.append(key=key, value=value, timestamp=None) is None:
            self.sent.append(await self.producer.send_batch(batch, topic, partition=slot[1]))
            batch = self.open[slot] = self.producer.create_batch()
            batch.append(key=key, value=value, timestamp=None)

    async def flush(self) -> None:
        """Hand over every open batch and wait for every acknowledgement."""
        for (topic, partition), batch in self.open.items():
            self.sent.append(await self.producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*self.sent)


async def run(args: ContenderArgs, shape: argparse.Namespace) -> None:
    """Consume, write the pipeline's volume in one transaction per batch, until SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    internal = f"{args.prefix}{INTERNAL}"
    consumer = AIOKafkaConsumer(
        *args.raw_topics(),
        internal,
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=16 * 1024 * 1024,
        fetch_max_wait_ms=100,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=args.bootstrap,
        transactional_id=f"{args.group}-ceiling-fair",
        enable_idempotence=True,
        acks="all",
        linger_ms=0,
        max_batch_size=256 * 1024,
        max_request_size=4 * 1024 * 1024,
    )
    await producer.start()
    await consumer.start()
    progress = Progress()
    progress.report()
    partition_of = KeyPartitioner()
    partitions = args.partitions
    names = {
        "out": f"{args.prefix}{OUTPUT}",
        "internal": internal,
        "changelog": f"{args.prefix}{CHANGELOG}",
    }
    shapes = {
        "out": (Shape(shape.outputs), shape.output_bytes),
        "internal": (Shape(shape.internal), 0),
        "changelog": (Shape(shape.table_writes), shape.table_write_bytes),
    }
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=50, max_records=MAX_RECORDS)
            if not batch:
                progress.maybe_report()
                continue
            await producer.begin_transaction()
            out = _Batches(producer, partition_of, partitions)
            offsets: dict[TopicPartition, int] = {}
            for tp, records in batch.items():
                offsets[tp] = records[-1].offset + 1
                if tp.topic == internal:
                    continue  # read back, as a stage reads the previous stage's records
                progress.events += len(records)
                for record in records:
                    key = record.key or b""
                    value = record.value or b""
                    stamp = b'{"received_at":%.3f,"pad":"' % (record.timestamp / 1000)
                    for kind, (counter, size) in shapes.items():
                        for i in range(counter.take()):
                            sized = (
                                value + _payload(value, HEADER_BYTES)
                                if kind == "internal"
                                else stamp + b"x" * max(0, size - len(stamp) - 2) + b'"}'
                            )
                            await out.append(names[kind], key + b"%d" % i, sized)
            await out.flush()
            await producer.send_offsets_to_transaction(offsets, args.group)
            await producer.commit_transaction()
            progress.maybe_report()
        progress.report()
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()
        await producer.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="benchmarks.contenders.ceiling_fair", description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--state-dir", default=".local/bench/state")
    parser.add_argument("--outputs", type=float, default=2.9, help="output records per input")
    parser.add_argument("--output-bytes", type=int, default=480, help="bytes per output record")
    parser.add_argument("--internal", type=float, default=3.2, help="internal records per input")
    parser.add_argument(
        "--table-writes", type=float, default=1.05, help="changelog records per input"
    )
    parser.add_argument("--table-write-bytes", type=int, default=120)
    ns = parser.parse_args(argv)
    args = ContenderArgs(
        bootstrap=ns.bootstrap,
        prefix=ns.prefix,
        group=ns.group,
        name="ceiling_fair",
        partitions=ns.partitions,
        state_dir=ns.state_dir,
    )
    asyncio.run(run(args, ns))


if __name__ == "__main__":
    main()
