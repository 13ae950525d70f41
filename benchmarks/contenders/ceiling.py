"""The ceiling: a raw aiokafka batch loop with a trivial filter, into one output topic.

`getmany`, `orjson.loads`, keep identified records without an opt-out flag,
`orjson.dumps`, append to a per-partition batch and hand it over with `send_batch`;
deliveries are awaited once per cycle, never per record. No consent, no policy, no
transactions: what Python and aiokafka can move on this machine, as a yardstick.

    python -m benchmarks.contenders.ceiling --bootstrap 127.0.0.1:9092 --prefix p. --group g
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Any, Final

import orjson  # the ceiling is defined as raw orjson, not the project's codec wrapper
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from benchmarks.contenders.common import ContenderArgs, Progress, parse_args

OUTPUT: Final = "ceiling.out"
MAX_RECORDS: Final = 5000


def output_topic(prefix: str) -> str:
    """The ceiling's one output topic under `prefix`."""
    return f"{prefix}{OUTPUT}"


async def run(args: ContenderArgs) -> None:
    """Consume, filter and produce until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    consumer = AIOKafkaConsumer(
        *args.raw_topics(),
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        auto_offset_reset="earliest",
        enable_auto_commit=True,
        auto_commit_interval_ms=1000,
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=16 * 1024 * 1024,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=args.bootstrap,
        linger_ms=5,
        max_batch_size=256 * 1024,
        max_request_size=4 * 1024 * 1024,
    )
    await producer.start()
    await consumer.start()
    progress = Progress()
    progress.report()
    out = output_topic(args.prefix)
    in_flight: list[asyncio.Future[Any]] = []
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100, max_records=MAX_RECORDS)
            open_batches: dict[int, Any] = {}
            sent: list[asyncio.Future[Any]] = []
            for tp, records in batch.items():
                progress.events += len(records)
                for record in records:
                    try:
                        event = orjson.loads(record.value)
                    except orjson.JSONDecodeError:
                        continue
                    if type(event) is not dict or "user_id" not in event or event.get("opt_out"):
                        continue
                    event["received_at"] = record.timestamp / 1000
                    value = orjson.dumps(event)
                    # Co-partitioned by the same key: partition p in, partition p out.
                    out_batch = open_batches.get(tp.partition)
                    if out_batch is None:
                        out_batch = open_batches[tp.partition] = producer.create_batch()
                    if out_batch.append(key=record.key, value=value, timestamp=None) is None:
                        sent.append(
                            await producer.send_batch(out_batch, out, partition=tp.partition)
                        )
                        out_batch = open_batches[tp.partition] = producer.create_batch()
                        out_batch.append(key=record.key, value=value, timestamp=None)
            for partition, out_batch in open_batches.items():
                sent.append(await producer.send_batch(out_batch, out, partition=partition))
            if in_flight:
                await asyncio.gather(*in_flight)  # the previous cycle's deliveries
            in_flight = sent
            progress.maybe_report()
        if in_flight:
            await asyncio.gather(*in_flight)
        progress.report()
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()
        await producer.stop()


def main(argv: list[str] | None = None) -> None:
    args = parse_args("ceiling", __doc__.splitlines()[0] if __doc__ else "", argv)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
