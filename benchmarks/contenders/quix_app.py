"""Quix Streams as its documentation writes a job: one StreamingDataFrame, state in RocksDB.

The consent and identity topics and the raw topics are concatenated into one
StreamingDataFrame (Quix aligns them by timestamp, so the records appended before an
event are applied first). One stateful `apply` keeps each user's consent state in the
state store under the message key and, for a raw record, resolves its user (a trusted
producer's signature, else its match keys) and decides it with the pipeline's core; its
outputs are expanded and sent with `to_topic`, each to its destination's topic. Quix
state is scoped to the message key, and an event is keyed by its event id, not by its
user or match keys: the links and the consent of the users they name are also kept in
the process (dicts), which is more than Quix's state store would allow.

    python -m benchmarks.contenders.quix_app --bootstrap ... --prefix p. --group g
"""

from __future__ import annotations

import threading
import time
from typing import Any

from quixstreams import Application, State, message_context
from quixstreams.models import SerializationContext, Serializer, Topic

from benchmarks.contenders.common import (
    DESTINATIONS,
    ContenderArgs,
    Decider,
    Progress,
    hmac_key,
    parse_args,
    trust_key,
)
from pipeline.core import identity
from pipeline.core.consent import ConsentState
from pipeline.core.route import Origin, Output
from schemas import codec

CONSENT_KEY = "consent"


class RecordSerializer(Serializer):
    """Serializes an `Output` as its record's JSON, as the pipeline writes it."""

    def __call__(self, value: Output, ctx: SerializationContext) -> bytes:
        return codec.dumps(value.record)


def build_app(args: ContenderArgs, decider: Decider, progress: Progress) -> Application:
    """The Quix application: the concatenated inputs, one stateful apply, `to_topic`."""
    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        state_dir=args.state_dir,
        loglevel="WARNING",
    )

    def input_topic(name: str) -> Topic:
        return app.topic(name, key_deserializer="bytes", value_deserializer="bytes")

    raw_sources = args.raw_topics()
    outputs = {
        destination: app.topic(
            args.output_topic(destination),
            key_serializer="bytes",
            value_serializer=RecordSerializer(),
        )
        for destination in DESTINATIONS
    }
    consent_topic = args.consent_topic
    identity_topic = args.identity_topic
    links: dict[bytes, identity.LinkRow] = {}
    users: dict[str, ConsentState] = {}

    def process(
        value: bytes, key: bytes | None, timestamp: int, headers: Any, state: State[Any, Any]
    ) -> list[Output]:
        context = message_context()
        if context.topic == consent_topic:
            stored = state.get(CONSENT_KEY)
            current = None if stored is None else ConsentState.from_dict(stored)
            updated = decider.fold(current, value, key, time.time())
            if updated is not None:
                state.set(CONSENT_KEY, updated.to_dict())
                users[updated.user_id] = updated
            progress.consent += 1
            return []
        if context.topic == identity_topic:
            if key is not None:
                row = decider.link(links.get(key), value, key, timestamp)
                if row is not None:
                    links[key] = row
            progress.links += 1
            return []
        progress.events += 1
        origin = Origin(context.topic, context.partition, context.offset)
        return decider.decide(
            raw_sources[context.topic],
            value,
            key,
            origin,
            timestamp,
            users.get,
            lambda match_key: links.get(match_key.encode()),
            list(headers or ()),
        )

    sdf = app.dataframe(input_topic(consent_topic)).concat(
        app.dataframe(input_topic(identity_topic))
    )
    for name in raw_sources:
        sdf = sdf.concat(app.dataframe(input_topic(name)))
    sdf = sdf.apply(process, stateful=True, expand=True, metadata=True)
    sdf.to_topic(
        lambda value, key, timestamp, headers: outputs[value.destination],
        key=lambda value: value.key,
    )
    return app


def _report_forever(progress: Progress) -> None:
    while True:
        progress.report()
        time.sleep(0.1)


def main(argv: list[str] | None = None) -> None:
    args = parse_args("quix", __doc__.splitlines()[0] if __doc__ else "", argv)
    progress = Progress()
    app = build_app(args, Decider(hmac_key(), trust=trust_key()), progress)
    threading.Thread(target=_report_forever, args=(progress,), daemon=True).start()
    app.run()
    progress.report()


if __name__ == "__main__":
    main()
