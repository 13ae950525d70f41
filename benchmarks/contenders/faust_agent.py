"""Idiomatic Faust: a table fed by one agent, and a per-event agent deciding against it.

The consent agent folds `consent.changes` into a RocksDB-backed `app.Table`; the event
agent reads the three raw topics with `async for event in stream.events()`, looks the
user up in the table, decides with the pipeline's core and `await topic.send(...)`s one
record per permitted use plus the audit record. Faust's defaults otherwise (at-least-once,
its own commit interval).

Faust interleaves the two agents, and holding the event agent back until the table is
loaded would stall its one fetcher (the event buffer fills, consent stops arriving). So
the harness first runs the app with `--consent-only` (no event agent) until the table
holds the pre-produced consent, then runs it normally in the same consumer group, with
the table in its local RocksDB store.

    python -m benchmarks.contenders.faust_agent --bootstrap ... --prefix p. --group g
"""

from __future__ import annotations

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
)
from pipeline.core.consent import ConsentState
from pipeline.core.route import Origin
from schemas import codec


def _raw_topic(app: faust.App, *names: str) -> Any:
    return app.topic(
        *names, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )


def build_app(
    args: ContenderArgs, decider: Decider, progress: Progress, *, events: bool = True
) -> faust.App:
    """The Faust app: the consent table, its agent, the event agent (unless `events` is
    False: loading the table only) and a progress timer."""
    Path(args.state_dir).mkdir(parents=True, exist_ok=True)
    app = faust.App(
        args.group,
        broker=f"kafka://{args.bootstrap}",
        store="rocksdb://",
        datadir=args.state_dir,
        topic_partitions=args.partitions,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
    )
    raw_sources = args.raw_topics()
    outputs = {
        destination: _raw_topic(app, args.output_topic(destination)) for destination in DESTINATIONS
    }
    # Keyed by the user id as the topics are; values are the states' JSON-ready dicts,
    # in Faust's default JSON serializer.
    consent = app.Table("consent", partitions=args.partitions)

    def consent_of(user_id: str) -> ConsentState | None:
        stored = consent.get(user_id.encode())
        return None if stored is None else ConsentState.from_dict(stored)

    @app.agent(_raw_topic(app, args.consent_topic))
    async def consent_changes(stream: Any) -> None:
        async for key, value in stream.items():
            now = time.time()
            if key is not None:
                stored = consent.get(key)
                state = None if stored is None else ConsentState.from_dict(stored)
                updated = decider.fold(state, value, key, now)
                if updated is not None:
                    consent[key] = updated.to_dict()
            progress.consent += 1

    async def decide_events(stream: Any) -> None:
        async for event in stream.events():
            message = event.message
            origin = Origin(message.topic, message.partition, message.offset)
            for output in decider.decide(
                raw_sources[message.topic],
                event.value,
                event.key,
                origin,
                int(message.timestamp * 1000),
                consent_of,
            ):
                await outputs[output.destination].send(
                    key=output.key, value=codec.dumps(output.record)
                )
            progress.events += 1

    if events:
        app.agent(_raw_topic(app, *raw_sources), name="decide_events")(decide_events)

    @app.timer(interval=0.1)  # type: ignore[untyped-decorator]
    async def report_progress() -> None:
        progress.report()

    return app


def main(argv: list[str] | None = None) -> None:
    args = parse_args(
        "faust", __doc__.splitlines()[0] if __doc__ else "", argv, consent_only_flag=True
    )
    progress = Progress()
    app = build_app(args, Decider(hmac_key()), progress, events=not args.consent_only)
    worker = faust.Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
