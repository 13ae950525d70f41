"""The core phase: what the decision every contender makes costs by itself, without Kafka.

Every contender decides through the pipeline's pure core (`benchmarks.contenders.common.
Decider`: decode, match keys, policy, route, audit). This phase runs that decision alone,
in this process, over the producer's realistic mix: the users' consent and links folded
first into Python dicts (as the Quix Streams contender holds them), then each raw event
decided and its output records encoded as every contender writes them. Its CPU time per
event is a floor under every contender's: a worker that makes this decision with this
core can spend no less, whatever it does around it. Customer-list records are left out
(the contenders' core does not keep memberships); the consent churn and link changes that
come with the traffic are folded before the events, untimed.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from benchmarks.contenders.common import Decider
from pipeline import catalogue
from pipeline.core import identity
from pipeline.core.consent import ConsentState
from pipeline.core.route import Origin
from pipeline.sim.traffic import Record, TrafficConfig, TrafficGenerator
from schemas import codec


def core_phase(
    users: int, events: int, seed: int, hmac_key: bytes, trust_key: bytes
) -> dict[str, Any]:
    """CPU µs per raw event of the contenders' decision alone, over `events` records of the
    mix of `users` users (generated with `seed`, not timed)."""
    generator = TrafficGenerator(TrafficConfig(users=users), seed=seed, trust_key=trust_key)
    decider = Decider(hmac_key, trust=trust_key)
    consent: dict[str, ConsentState] = {}
    links: dict[bytes, identity.LinkRow] = {}
    now_ms = int(time.time() * 1000)
    linked_ms = now_ms - 60_000  # every link acknowledged before the events were produced

    def fold(record: Record) -> None:
        if record.topic is catalogue.CONSENT_CHANGES:
            current = None if record.key is None else consent.get(record.key.decode())
            state = decider.fold(current, record.value, record.key, time.time())
            if state is not None:
                consent[state.user_id] = state
        elif record.key is not None:
            row = decider.link(links.get(record.key), record.value, record.key, linked_ms)
            if row is not None:
                links[record.key] = row

    for record in generator.bootstrap():
        fold(record)
    traffic = generator.records(events)
    raw = [r for r in traffic if r.topic.source is not None and r.topic.source != "audience"]
    for record in traffic:
        if record.topic.source is None:
            fold(record)

    def link_of(match_key: str) -> identity.LinkRow | None:
        return links.get(match_key.encode())

    origin = Origin("core", 0, 0)
    outputs = 0
    gc.collect()
    started = time.process_time()
    for record in raw:
        assert record.topic.source is not None
        for output in decider.decide(
            record.topic.source,
            record.value,
            record.key,
            origin,
            now_ms,
            consent.get,
            link_of,
            record.headers,
        ):
            codec.dumps(output.record)
            outputs += 1
    cpu_s = time.process_time() - started
    return {
        "users": users,
        "events": len(raw),
        "outputs_per_event": round(outputs / len(raw), 3) if raw else None,
        "cpu_s": round(cpu_s, 3),
        "cpu_us_per_event": round(cpu_s / len(raw) * 1e6, 1) if raw else None,
    }
