"""The worker end to end on the real broker: routing by rule, revocation, duplicates,
poison pills and restarts, observed by independent `read_committed` consumers."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka.admin import NewTopic
from prometheus_client.parser import text_string_to_metric_families

from pipeline import catalogue
from pipeline.kafka.admin import admin_client, create_topics
from pipeline.settings import Settings
from schemas import codec
from tests.integration.conftest import WorkerProcess, process_env
from tests.integration.kafka_io import Produced, Read, produce_sync, read_sync, signed
from tests.integration.scenario import (
    IDENTIFIERS_IN_CASES,
    consent_records,
    event_records,
    live_cases,
)

pytestmark = pytest.mark.integration

OUTPUTS = (
    catalogue.PERSONALIZATION,
    catalogue.ADS,
    catalogue.MEASUREMENT,
    catalogue.PARTNER_SHARE,
    catalogue.DEIDENTIFIED,
    catalogue.AUDIT,
    catalogue.DLQ,
)


def read_outputs(
    settings: Settings, done: Callable[[dict[str, list[Read]]], bool], settle_s: float = 2.0
) -> dict[str, list[Read]]:
    """Every output topic, by logical name, read until `done` holds and then `settle_s` more."""
    names = {settings.topic(topic): topic.name for topic in OUTPUTS}
    got = read_sync(
        settings.kafka_bootstrap_servers,
        list(names),
        lambda raw: done({names[t]: reads for t, reads in raw.items()}),
        timeout_s=90,
        settle_s=settle_s,
    )
    return {names[t]: reads for t, reads in got.items()}


def scrape(settings: Settings) -> dict[str, float]:
    """The worker's /metrics, each sample name summed over its labels."""
    url = f"http://127.0.0.1:{settings.web_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


def audited(n: int) -> Callable[[dict[str, list[Read]]], bool]:
    return lambda got: len(got[catalogue.AUDIT.name]) + len(got["dlq"]) >= n


def tag_event(event_id: str, user_id: str | None, **extra: Any) -> dict[str, Any]:
    event = {
        "event_id": event_id,
        "event_name": "add_to_cart",
        "event_time": int(time.time()) - 30,
        "action_source": "web",
        "advertiser_id": "adv-it",
        "user_id": user_id,
        "browser": {"cookie_id": f"ck-{event_id}", "dnt": False, "gpc": False},
        "custom_data": {"currency": "USD", "value": 3.5},
    }
    event.update(extra)
    return event


def consent(user_id: str, changed_at_ms: int, **settings: bool) -> dict[str, Any]:
    return {
        "user_id": user_id,
        "changed_at": changed_at_ms,
        "settings": settings,
        "profile": {"country": "US", "birth_year": 1985},
    }


@pytest.fixture
def worker(
    pipeline_settings: Settings, start_worker: Callable[[Settings], WorkerProcess]
) -> WorkerProcess:
    process = start_worker(pipeline_settings)
    process.wait_ready()
    return process


def test_every_policy_rule_routes_exactly_as_decided(
    pipeline_settings: Settings, start_worker: Callable[[Settings], WorkerProcess]
) -> None:
    canaries = [value.decode() for value in IDENTIFIERS_IN_CASES]
    settings = pipeline_settings.model_copy(update={"pii_canaries": canaries})
    start_worker(settings).wait_ready()
    cases = live_cases()
    bootstrap = settings.kafka_bootstrap_servers
    produce_sync(bootstrap, consent_records(settings.topic(catalogue.CONSENT_CHANGES), cases))
    produce_sync(bootstrap, event_records(settings.topic_prefix, cases))

    out = read_outputs(settings, audited(len(cases)))

    assert out["dlq"] == []
    audits = {r.json()["event_id"]: r.json() for r in out[catalogue.AUDIT.name]}
    assert len(out[catalogue.AUDIT.name]) == len(cases) == len(audits)
    by_topic = {
        name: Counter(r.json().get("event_id") for r in out[name])
        for name in (
            catalogue.PERSONALIZATION.name,
            catalogue.ADS.name,
            catalogue.PARTNER_SHARE.name,
        )
    }
    measured = Counter(r.json()["user_key"] for r in out[catalogue.MEASUREMENT.name])
    for live in cases:
        audit = audits[live.event_id]
        expected = live.case.outcomes
        outcomes = audit["outcomes"]
        got = (
            outcomes["personalization"],
            outcomes["ads"],
            outcomes["measurement"],
            outcomes["partner_sharing"],
        )
        assert got == expected, live.case.rule
        assert tuple(audit["reasons"]) == live.case.reasons, live.case.rule
        allowed = {
            catalogue.PERSONALIZATION.name: expected[0] == "allow",
            catalogue.ADS.name: expected[1] == "allow",
            catalogue.PARTNER_SHARE.name: expected[3] == "allow",
        }
        for topic, allow in allowed.items():
            assert by_topic[topic][live.event_id] == (1 if allow else 0), (topic, live.case.rule)
        identified = expected[2] == "identified"
        assert measured[audit["user_key"]] == (1 if identified else 0), live.case.rule
    assert len(out[catalogue.DEIDENTIFIED.name]) == len(cases)

    raw_ids = [live.user_id.encode() for live in cases if live.user_id]
    event_ids = [live.event_id.encode() for live in cases]
    for record in out[catalogue.DEIDENTIFIED.name]:
        blob = record.value + (record.key or b"")
        assert not any(ident in blob for ident in (*raw_ids, *event_ids, *IDENTIFIERS_IN_CASES))
    for record in out[catalogue.MEASUREMENT.name]:
        assert not any(user_id in record.value for user_id in raw_ids)
    for record in out[catalogue.AUDIT.name]:
        assert not any(user_id in record.value + (record.key or b"") for user_id in raw_ids)

    metrics = scrape(settings)
    for name in (
        "pipeline_events_in_total",
        "pipeline_events_out_total",
        "pipeline_decisions_total",
        "pipeline_decision_reasons_total",
        "pipeline_consent_changes_total",
        "pipeline_consent_table_entries",
        "pipeline_processing_seconds_count",
        "pipeline_event_age_seconds_count",
        "pipeline_barrier_wait_seconds_count",
    ):
        assert metrics[name] > 0, name
    assert metrics["pipeline_events_in_total"] == len(cases)
    assert metrics.get("pipeline_pii_canary_hits_total", 0.0) == 0.0
    assert "pipeline_consumer_lag_messages" in metrics


def test_a_revocation_acknowledged_before_an_event_governs_it(worker: WorkerProcess) -> None:
    """1,000 randomized interleavings of consent changes and events for a handful of users.

    Every record is acknowledged before the next is produced. An event whose user's last
    acknowledged change was a revocation must be denied; the worker decides with the newest
    consent it can see, so an event after a grant may still meet a later revocation (and be
    denied), but never the other way round. Events after each user's final grant are allowed.
    """
    settings = worker.settings
    bootstrap = settings.kafka_bootstrap_servers
    consent_topic, raw_tag = (
        settings.topic(catalogue.CONSENT_CHANGES),
        settings.topic(catalogue.RAW_TAG),
    )
    rng = random.Random(20261122)
    users = [f"rev-{uuid.uuid4().hex[:6]}-{i}" for i in range(5)]
    base_ms = int(time.time() * 1000)
    records: list[Produced] = []
    granted = dict.fromkeys(users, True)
    for n, user in enumerate(users):
        records.append(
            (
                consent_topic,
                user.encode(),
                codec.dumps(consent(user, base_ms + n, personalization=True)),
            )
        )
    revoked_before: set[str] = set()
    for i in range(1000):
        user = rng.choice(users)
        if rng.random() < 0.3:
            granted[user] = not granted[user]
            change = consent(user, base_ms + 10 + i, personalization=granted[user])
            records.append((consent_topic, user.encode(), codec.dumps(change)))
        event_id = f"{user}-e{i}"
        records.append(signed(raw_tag, user.encode(), codec.dumps(tag_event(event_id, user))))
        if not granted[user]:
            revoked_before.add(event_id)
    final_grants: list[Produced] = []
    for n, user in enumerate(users):
        final_grants.append(
            (
                consent_topic,
                user.encode(),
                codec.dumps(consent(user, base_ms + 5000 + n, personalization=True)),
            )
        )
    after_final = [
        signed(raw_tag, u.encode(), codec.dumps(tag_event(f"{u}-final", u))) for u in users
    ]
    produce_sync(bootstrap, records + final_grants)
    # A change in the same millisecond as an event may have come first: the worker then
    # applies the stricter state. Leave a tick between the final grants and the events.
    time.sleep(0.01)
    produce_sync(bootstrap, after_final)

    out = read_outputs(settings, audited(1000 + len(users)))

    decided = {
        r.json()["event_id"]: r.json()["outcomes"]["personalization"]
        for r in out[catalogue.AUDIT.name]
    }
    assert len(decided) == 1000 + len(users)
    assert len(revoked_before) > 100
    honoured = [e for e in revoked_before if decided[e] == "deny"]
    assert len(honoured) == len(revoked_before)
    assert all(decided[f"{u}-final"] == "allow" for u in users)
    emitted = {r.json()["event_id"] for r in out[catalogue.PERSONALIZATION.name]}
    assert emitted == {e for e, outcome in decided.items() if outcome == "allow"}
    assert not emitted & revoked_before
    assert scrape(settings)["pipeline_revocation_latency_seconds_count"] > 0


def test_events_behind_a_long_consent_backlog_are_decided_under_all_of_it(
    pipeline_settings: Settings, start_worker: Callable[[Settings], WorkerProcess]
) -> None:
    """A worker starting on 3,000 consent changes with events waiting behind them, with
    small batches (a barrier folds at most 500 records, so the events may wait for
    several transactions): every event is decided under its user's last change, which
    granted personalization to every other user and revoked it from the rest."""
    settings = pipeline_settings.model_copy(update={"batch_max_records": 50})
    bootstrap = settings.kafka_bootstrap_servers
    consent_topic = settings.topic(catalogue.CONSENT_CHANGES)
    users = [f"backlog-{uuid.uuid4().hex[:6]}-{i}" for i in range(30)]
    base_ms = int(time.time() * 1000)
    changes: list[Produced] = []
    for n in range(100):
        for i, user in enumerate(users):
            granted = n % 2 == 0 if n < 99 else i % 2 == 0
            change = consent(user, base_ms + n, personalization=granted)
            changes.append((consent_topic, user.encode(), codec.dumps(change)))
    produce_sync(bootstrap, changes)
    time.sleep(0.01)
    raw_tag = settings.topic(catalogue.RAW_TAG)
    events = [
        signed(raw_tag, user.encode(), codec.dumps(tag_event(f"{user}-after", user)))
        for user in users
    ]
    produce_sync(bootstrap, events)
    start_worker(settings).wait_ready()

    out = read_outputs(settings, audited(len(users)))

    decided = {
        r.json()["event_id"]: r.json()["outcomes"]["personalization"]
        for r in out[catalogue.AUDIT.name]
    }
    assert decided == {
        f"{user}-after": "allow" if i % 2 == 0 else "deny" for i, user in enumerate(users)
    }
    metrics = scrape(settings)
    assert metrics["pipeline_consent_changes_total"] == len(changes)
    assert "pipeline_barrier_deferrals_total" in metrics


def test_duplicates_are_audited_once_more_and_not_emitted_again(worker: WorkerProcess) -> None:
    settings = worker.settings
    bootstrap = settings.kafka_bootstrap_servers
    user = "dup-user-1"
    produce_sync(
        bootstrap,
        [
            (
                settings.topic(catalogue.CONSENT_CHANGES),
                user.encode(),
                codec.dumps(consent(user, 1, personalization=True)),
            )
        ],
    )
    event = tag_event("dup-1", user)
    server_copy = {
        **{
            k: event[k]
            for k in ("event_id", "event_name", "event_time", "advertiser_id", "user_id")
        },
        "action_source": "web",
    }
    produce_sync(
        bootstrap,
        [
            signed(settings.topic(catalogue.RAW_TAG), user.encode(), codec.dumps(event)),
            signed(settings.topic(catalogue.RAW_SDK), None, codec.dumps(server_copy)),
            signed(settings.topic(catalogue.RAW_TAG), b"another-key", codec.dumps(event)),
            signed(
                settings.topic(catalogue.RAW_TAG),
                user.encode(),
                codec.dumps(tag_event("dup-2", user)),
            ),
        ],
    )

    out = read_outputs(settings, audited(4))

    duplicates = Counter(
        (r.json()["event_id"], r.json()["duplicate"]) for r in out[catalogue.AUDIT.name]
    )
    assert duplicates == Counter({("dup-1", False): 1, ("dup-1", True): 2, ("dup-2", False): 1})
    emitted = Counter(r.json()["event_id"] for r in out[catalogue.PERSONALIZATION.name])
    assert emitted == Counter({"dup-1": 1, "dup-2": 1})
    assert scrape(settings)["pipeline_duplicates_total"] == 2


def test_poison_pills_go_to_the_dlq_with_reasons_while_valid_events_flow(
    worker: WorkerProcess,
) -> None:
    settings = worker.settings
    bootstrap = settings.kafka_bootstrap_servers
    raw_tag, raw_sdk = settings.topic(catalogue.RAW_TAG), settings.topic(catalogue.RAW_SDK)
    user = "pp-user-1"
    wrong_types = tag_event("pp-wrong", user)
    wrong_types["event_time"] = "yesterday"
    oversized = tag_event("pp-big", user, custom_data={"content_ids": ["x" * 100] * 1000})
    unkeyed = codec.dumps(consent(user, 2, personalization=True))
    pills: list[Produced] = [
        (raw_tag, user.encode(), b'{"event_id": "pp-json", '),
        (raw_tag, user.encode(), b'{"event_id": "pp-\xff\xfe"}'),
        (raw_sdk, user.encode(), codec.dumps(wrong_types)),
        (raw_tag, user.encode(), codec.dumps(oversized)),
        # A compacted topic refuses a record without a key; an empty key is the missing one.
        (settings.topic(catalogue.CONSENT_CHANGES), b"", unkeyed),
        (
            raw_tag,
            user.encode(),
            codec.dumps(tag_event("pp-old", user, event_time=int(time.time()) - 8 * 86400)),
        ),
        (
            raw_tag,
            user.encode(),
            codec.dumps(tag_event("pp-future", user, event_time=int(time.time()) + 7200)),
        ),
    ]
    valid: list[Produced] = [
        signed(raw_tag, None, codec.dumps(tag_event(f"pp-ok-{i}", user))) for i in range(5)
    ]
    mixed = [valid[0], *pills[:4], valid[1], valid[2], *pills[4:], valid[3], valid[4]]
    positions = produce_sync(bootstrap, mixed)

    out = read_outputs(settings, audited(len(mixed)))

    reasons = sorted(r.json()["reason"] for r in out["dlq"])
    assert reasons == sorted(
        [
            "invalid_json",
            "invalid_utf8",
            "schema_violation",
            "oversized",
            "missing_key",
            "too_old",
            "in_future",
        ]
    )
    pill_positions = {pos for pos, record in zip(positions, mixed, strict=True) if record in pills}
    dlq_positions = {
        (r.json()["origin"]["topic"], r.json()["origin"]["partition"], r.json()["origin"]["offset"])
        for r in out["dlq"]
    }
    assert dlq_positions == pill_positions
    for record in out["dlq"]:
        body = record.json()
        assert user not in body["detail"]
        assert "yesterday" not in body["detail"]
    assert scrape(settings)["pipeline_dlq_total"] == len(pills)
    assert sorted(r.json()["event_id"] for r in out[catalogue.AUDIT.name]) == [
        f"pp-ok-{i}" for i in range(5)
    ]


@pytest.mark.parametrize(
    ("stop_signal", "store"),
    [(signal.SIGTERM, "memory"), (signal.SIGKILL, "memory"), (signal.SIGKILL, "rocksdb")],
    ids=["sigterm-memory", "sigkill-memory", "sigkill-rocksdb"],
)
def test_a_restarted_worker_resumes_with_no_loss_and_no_duplicate_emission(
    pipeline_settings: Settings,
    start_worker: Callable[[Settings], WorkerProcess],
    stop_signal: int,
    store: str,
) -> None:
    settings = pipeline_settings.model_copy(update={"store": store})
    bootstrap = settings.kafka_bootstrap_servers
    users = [f"rs-user-{i}" for i in range(12)]
    produce_sync(
        bootstrap,
        [
            (
                settings.topic(catalogue.CONSENT_CHANGES),
                u.encode(),
                codec.dumps(consent(u, 1, personalization=True)),
            )
            for u in users
        ],
    )

    def events(start: int, n: int) -> list[Produced]:
        return [
            signed(
                settings.topic(catalogue.RAW_TAG),
                users[i % len(users)].encode(),
                codec.dumps(tag_event(f"rs-{i}", users[i % len(users)])),
            )
            for i in range(start, start + n)
        ]

    first = start_worker(settings)
    first.wait_ready()
    produce_sync(bootstrap, events(0, 300))
    time.sleep(1.0)  # let the worker be mid-stream when it stops
    produce_sync(bootstrap, events(300, 300))
    first.stop(stop_signal)
    produce_sync(bootstrap, events(600, 300))
    second = start_worker(settings)
    second.wait_ready()

    out = read_outputs(settings, audited(900), settle_s=3.0)

    audits = Counter(r.json()["event_id"] for r in out[catalogue.AUDIT.name])
    assert audits == Counter({f"rs-{i}": 1 for i in range(900)})
    assert all(not r.json()["duplicate"] for r in out[catalogue.AUDIT.name])
    emitted = Counter(r.json()["event_id"] for r in out[catalogue.PERSONALIZATION.name])
    assert emitted == Counter({f"rs-{i}": 1 for i in range(900)})
    assert out["dlq"] == []


def test_the_worker_refuses_tables_topics_that_are_not_co_partitioned(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory()
    asyncio.run(create_topics(settings))
    lopsided = settings.model_copy(
        update={"topic_partitions": 2, "topic_prefix": settings.topic_prefix}
    )
    links = settings.topic(catalogue.IDENTITY_LINKS)
    asyncio.run(_recreate(lopsided, links))
    env = process_env(settings)
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "not co-partitioned" in result.stderr
    assert f"{links}=2" in result.stderr
    assert f"{settings.topic(catalogue.CONSENT_CHANGES)}=3" in result.stderr


async def _recreate(settings: Settings, topic: str) -> None:
    admin = admin_client(settings)
    await admin.start()
    try:
        await admin.delete_topics([topic])
        for _ in range(50):
            if topic not in await admin.list_topics():
                break
            await asyncio.sleep(0.2)
        await admin.create_topics([NewTopic(topic, settings.topic_partitions, 1)])
    finally:
        await admin.close()
