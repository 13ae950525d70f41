"""Faust done with batches: `stream.take`, `send_soon`, exactly-once, RocksDB tables.

The app of `benchmarks.contenders.faust_agent` (the same tables, agents and decision),
with the event agent taking up to 2,000 events at a time (`stream.take_events`, within
50 ms), handing every output to the producer without awaiting it (`send_soon`) and Faust's
`processing_guarantee="exactly_once"` (a transactional producer per partition).

    python -m benchmarks.contenders.faust_batched --bootstrap ... --prefix p. --group g
"""

from __future__ import annotations

from benchmarks.contenders import faust_agent


def main(argv: list[str] | None = None) -> None:
    faust_agent.main(argv, batched=True)


if __name__ == "__main__":
    main()
