"""Faust, per event and tuned as its documentation allows: tables fed by agents, an agent
deciding each event against them.

Agents fold `consent.changes` and `identity.links` into RocksDB-backed `app.Table`s (the
consent state as JSON, the links as their stored rows); the event agent reads the raw
topics with `async for event in stream.events()`, resolves the event's user (a trusted
producer's signature, else its match keys in the links table), looks the user up in the
consent table, decides with the pipeline's core and `await topic.send(...)`s one record
per permitted use plus the audit record. Tuned as Faust documents it: the log level is
applied (mode's worker sets the root logger to DEBUG whatever `loglevel` says, so it is
set again once the worker runs) and the producer lingers to fill batches
(`producer_linger`). The tables look keys up on every partition (`use_partitioner`):
events are keyed by event id, not by the user or match key.

`benchmarks.contenders.faust_batched` is the same app done with batches: `stream.take`,
`send_soon`, `processing_guarantee="exactly_once"`.

Faust interleaves the agents, and holding the event agent back until the tables are
loaded would stall its one fetcher (the event buffer fills, consent stops arriving). So
the harness first runs the app with `--consent-only` (no event agent) until the tables
hold the pre-produced consent and links, then runs it normally in the same consumer
group, with the tables in its local RocksDB store.

    python -m benchmarks.contenders.faust_agent --bootstrap ... --prefix p. --group g
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import faust

from benchmarks.contenders.common import (
    DESTINATIONS,
    ContenderArgs,
    Decider,
    Progress,
    hmac_key,
    parse_args,
    trust_key,
)
from pipeline.core import identity, stored
from pipeline.core.consent import ConsentState
from pipeline.core.route import Origin, Output
from schemas import codec

LINGER_S = 0.005
BATCH = 2000
BATCH_WITHIN_S = 0.05


def _raw_topic(app: faust.App, *names: str) -> Any:
    return app.topic(
        *names, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )


def build_app(
    args: ContenderArgs,
    decider: Decider,
    progress: Progress,
    *,
    events: bool = True,
    batched: bool = False,
) -> faust.App:
    """The Faust app: the tables, their agents, the event agent (unless `events` is False:
    loading the tables only) and a progress timer; `batched`: Faust done with batches."""
    Path(args.state_dir).mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {}
    if batched:
        options["processing_guarantee"] = "exactly_once"
    app = faust.App(
        args.group,
        broker=f"kafka://{args.bootstrap}",
        store="rocksdb://",
        datadir=args.state_dir,
        topic_partitions=args.partitions,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        producer_linger=LINGER_S,
        **options,
    )
    raw_sources = args.raw_topics()
    outputs = {
        destination: _raw_topic(app, args.output_topic(destination)) for destination in DESTINATIONS
    }
    # Keyed by the user id as the topic is; values are the states' JSON-ready dicts. The
    # keys are the topics' raw bytes (`key_type=bytes`): a table's keys are JSON otherwise,
    # and its changelog records would not decode when a rebalance recovers it from them.
    consent = app.Table("consent", partitions=args.partitions, use_partitioner=True, key_type=bytes)
    # Keyed by the match key; values are the stored link rows, as text.
    links = app.Table("links", partitions=args.partitions, use_partitioner=True, key_type=bytes)

    def consent_of(user_id: str) -> ConsentState | None:
        value = consent.get(user_id.encode())
        return None if value is None else ConsentState.from_dict(value)

    def link_of(match_key: str) -> identity.LinkRow | None:
        value = links.get(match_key.encode())
        return None if value is None else stored.decode_link_row(value.encode())

    @app.agent(_raw_topic(app, args.consent_topic))
    async def consent_changes(stream: Any) -> None:
        async for key, value in stream.items():
            if key is not None:
                state = consent_of(key.decode())
                updated = decider.fold(state, value, key, time.time())
                if updated is not None:
                    consent[key] = updated.to_dict()
            progress.consent += 1

    @app.agent(_raw_topic(app, args.identity_topic))
    async def identity_links(stream: Any) -> None:
        async for event in stream.events():
            key = event.key
            if key is not None:
                row = link_of(key.decode())
                at_ms = int(event.message.timestamp * 1000)
                updated = decider.link(row, event.value, key, at_ms)
                if updated is not None and updated != row:
                    links[key] = stored.encode_link_row(updated).decode()
            progress.links += 1

    def decide(event: Any) -> list[Output]:
        message = event.message
        return decider.decide(
            raw_sources[message.topic],
            event.value,
            event.key,
            Origin(message.topic, message.partition, message.offset),
            int(message.timestamp * 1000),
            consent_of,
            link_of,
            message.headers or (),
        )

    async def decide_events(stream: Any) -> None:
        async for event in stream.events():
            for output in decide(event):
                await outputs[output.destination].send(
                    key=output.key, value=codec.dumps(output.record)
                )
            progress.events += 1

    async def decide_batches(stream: Any) -> None:
        async for batch in stream.take_events(BATCH, within=BATCH_WITHIN_S):
            for event in batch:
                for output in decide(event):
                    outputs[output.destination].send_soon(
                        key=output.key, value=codec.dumps(output.record)
                    )
            progress.events += len(batch)

    if events:
        agent = decide_batches if batched else decide_events
        app.agent(_raw_topic(app, *raw_sources), name="decide_events")(agent)

    @app.timer(interval=0.1)  # type: ignore[untyped-decorator]
    async def report_progress() -> None:
        progress.report()

    @app.task  # type: ignore[untyped-decorator]
    async def apply_log_level() -> None:
        # mode's worker configures the root logger at DEBUG whatever `loglevel` says; every
        # record would be built and then dropped. Applied again once the worker runs.
        logging.getLogger().setLevel(logging.WARNING)

    return app


def main(argv: list[str] | None = None, *, batched: bool = False) -> None:
    name = "faust_batched" if batched else "faust"
    args = parse_args(
        name, __doc__.splitlines()[0] if __doc__ else "", argv, consent_only_flag=True
    )
    progress = Progress()
    decider = Decider(hmac_key(), trust=trust_key())
    app = build_app(args, decider, progress, events=not args.consent_only, batched=batched)
    worker = faust.Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
