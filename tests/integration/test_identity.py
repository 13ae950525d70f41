"""Identity resolution against a real broker: every identity rule, end to end.

Events name people only by match keys; the links live in `identity.links`, written and
acknowledged before the events (the identity barrier), and the outputs are read back with
an independent `read_committed` consumer.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

from pipeline import catalogue
from pipeline.settings import Settings
from schemas import codec
from tests.integration.conftest import WorkerProcess
from tests.integration.kafka_io import Produced, Read, produce_sync, read_sync, signed
from tests.integration.test_pipeline import scrape

pytestmark = pytest.mark.integration

US_ADULT = {"country": "US", "birth_year": 1985}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def crc32_partitioner(key: bytes | None, all_partitions: Sequence[int], available: Any) -> int:
    """librdkafka's default partitioner: CRC32 of the key (random without one)."""
    if key is None:
        return random.choice(list(all_partitions))
    return all_partitions[zlib.crc32(key) % len(all_partitions)]


class World:
    """A test's users, links and events on one worker's topics."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.run = uuid.uuid4().hex[:8]
        self.bootstrap = settings.kafka_bootstrap_servers

    def user(self, n: int) -> str:
        return f"id-{self.run}-{n}"

    def consent(self, *users: str, **settings: bool) -> None:
        now = int(time.time() * 1000)
        topic = self.settings.topic(catalogue.CONSENT_CHANGES)
        produce_sync(
            self.bootstrap,
            [
                (
                    topic,
                    u.encode(),
                    codec.dumps(
                        {"user_id": u, "changed_at": now, "settings": settings, "profile": US_ADULT}
                    ),
                )
                for u in users
            ],
        )

    def link(self, key: str, user: str | None, linked_at: int | None = None) -> None:
        """Link (or, with None, unlink by tombstone) a key; returns once acknowledged."""
        at = linked_at or int(time.time() * 1000)
        value = (
            None
            if user is None
            else codec.dumps({"match_key": key, "user_id": user, "linked_at": at})
        )
        topic = self.settings.topic(catalogue.IDENTITY_LINKS)
        produce_sync(self.bootstrap, [(topic, key.encode(), value)])

    def tag(self, event_id: str, **user_data: Any) -> dict[str, Any]:
        return {
            "event_id": f"{self.run}-{event_id}",
            "event_name": "add_to_cart",
            "event_time": int(time.time()) - 5,
            "action_source": "web",
            "advertiser_id": "adv-identity",
            "user_data": user_data,
            "browser": {"cookie_id": f"ck-{self.run}-{event_id}"},
            "custom_data": {"currency": "USD", "value": 9.99},
        }

    def send(self, *records: Produced, partitioner: Any = None) -> None:
        produce_sync(self.bootstrap, list(records), partitioner=partitioner)

    def raw(self, source: str, event: dict[str, Any], key: bytes | None = None) -> Produced:
        topic = self.settings.topic(catalogue.RAW[source])  # type: ignore[index]
        return (topic, key, codec.dumps(event))

    def outputs(self, audits: int) -> dict[str, list[Read]]:
        names = {self.settings.topic(t): t.name for t in catalogue.OUTPUTS}
        mine = f"{self.run}-"

        def enough(got: dict[str, list[Read]]) -> bool:
            seen = got.get(self.settings.topic(catalogue.AUDIT), [])
            return sum(1 for r in seen if r.json()["event_id"].startswith(mine)) >= audits

        got = read_sync(self.bootstrap, list(names), enough, timeout_s=90, settle_s=1.5)
        return {names[t]: reads for t, reads in got.items()}


@pytest.fixture
def world(pipeline_settings: Settings, start_worker: Callable[[Settings], WorkerProcess]) -> World:
    start_worker(pipeline_settings).wait_ready()
    return World(pipeline_settings)


def audits_by_event(out: dict[str, list[Read]]) -> dict[str, dict[str, Any]]:
    return {r.json()["event_id"]: r.json() for r in out[catalogue.AUDIT.name]}


def users_of(out: dict[str, list[Read]], topic: catalogue.Topic) -> dict[str, str]:
    return {r.json()["event_id"]: r.json()["user_id"] for r in out[topic.name]}


def test_every_kind_of_match_key_resolves_a_consenting_user(world: World) -> None:
    users = [world.user(n) for n in range(5)]
    world.consent(*users)
    maid = str(uuid.uuid4())
    keys = {
        "em": f"em:{sha(f'{world.run}@example.com')}",
        "ph": f"ph:{sha('15550000001')}",
        "click": f"click:clk-{world.run}",
        "session": f"session:sess-{world.run}",
        "maid": f"maid:{sha(maid)}",
    }
    for user, key in zip(users, keys.values(), strict=True):
        world.link(key, user)
    app = {
        "event_id": f"{world.run}-maid",
        "event_name": "add_to_cart",
        "event_time": int(time.time()) - 5,
        "action_source": "app_android",
        "advertiser_id": "adv-identity",
        "device": {"device_id": f"dev-{world.run}", "os_version": "14", "advertising_id": maid},
    }
    widget = {
        "event_id": f"{world.run}-session",
        "event_name": "save_click",
        "event_time": int(time.time()) - 5,
        "session_id": f"sess-{world.run}",
        "site_domain": "blog.example.org",
        "widget_type": "save_button",
    }
    world.send(
        world.raw("tag", world.tag("em", em=[keys["em"][3:]])),
        world.raw("sdk", world.tag("ph", ph=[keys["ph"][3:]]) | {"action_source": "web"}),
        world.raw("tag", world.tag("click", click_id=f"clk-{world.run}")),
        world.raw("widget", widget),
        world.raw("sdk", app),
    )

    out = world.outputs(5)

    audits = audits_by_event(out)
    identified = users_of(out, catalogue.ADS)
    for kind, user in zip(keys, users, strict=True):
        event_id = f"{world.run}-{kind}"
        assert audits[event_id]["identity"] == {"match": kind, "conflict": False}
        assert identified[event_id] == user, kind
    for record in out[catalogue.AUDIT.name]:
        assert not any(key.split(":", 1)[1].encode() in record.value for key in keys.values())
    metrics = scrape(world.settings)
    assert metrics["pipeline_identity_resolutions_total"] >= 5
    # One worker owns every partition: each event's hops (by-event, by-match-key,
    # by-subject) are taken in the batch that read it, none through an internal topic,
    # so none has a latency to observe.
    assert metrics["pipeline_hops_in_process_total"] >= 3 * 5
    assert metrics.get("pipeline_hop_records_total", 0.0) == 0.0
    assert metrics.get("pipeline_hop_latency_seconds_count", 0.0) == 0.0


def test_a_trusted_user_id_is_kept_an_untrusted_one_names_nobody(world: World) -> None:
    user = world.user(0)
    world.consent(user)
    named = world.tag("named") | {"user_id": user}
    unsigned = world.tag("unsigned") | {"user_id": user}
    topic = world.settings.topic(catalogue.RAW_TAG)

    world.send(signed(topic, None, codec.dumps(named)), (topic, None, codec.dumps(unsigned)))

    out = world.outputs(2)
    audits = audits_by_event(out)
    assert audits[f"{world.run}-named"]["identity"]["match"] == "provided"
    assert audits[f"{world.run}-unsigned"]["identity"]["match"] == "none"
    assert "subject.anonymous" in audits[f"{world.run}-unsigned"]["reasons"]
    assert set(users_of(out, catalogue.PERSONALIZATION)) == {f"{world.run}-named"}
    assert scrape(world.settings)["pipeline_untrusted_user_ids_total"] >= 1


def test_the_first_key_in_spec_order_wins_and_a_disagreeing_key_is_counted(
    world: World,
) -> None:
    first, second = world.user(1), world.user(2)
    world.consent(first, second)
    email = sha(f"shared-{world.run}@example.com")
    world.link(f"click:clk-{world.run}", first)
    world.link(f"em:{email}", second)

    world.send(world.raw("tag", world.tag("both", em=[email], click_id=f"clk-{world.run}")))

    out = world.outputs(1)
    audit = audits_by_event(out)[f"{world.run}-both"]
    assert audit["identity"] == {"match": "click", "conflict": True}
    assert users_of(out, catalogue.ADS)[f"{world.run}-both"] == first
    assert scrape(world.settings)["pipeline_identity_conflicts_total"] == 1


def test_an_email_moved_to_another_account_never_names_its_former_owner(world: World) -> None:
    former, new = world.user(3), world.user(4)
    world.consent(former, new)
    key = f"em:{sha(f'moving-{world.run}@example.com')}"
    world.link(key, former, linked_at=1)
    world.send(world.raw("tag", world.tag("before", em=[key[3:]])))
    world.link(key, new, linked_at=2)  # acknowledged: every later event is governed by it
    world.send(*(world.raw("tag", world.tag(f"after-{n}", em=[key[3:]])) for n in range(20)))

    out = world.outputs(21)

    named = {
        r.json()["event_id"]: r.json()["user_id"]
        for topic in (catalogue.PERSONALIZATION, catalogue.ADS, catalogue.PARTNER_SHARE)
        for r in out[topic.name]
    }
    assert named[f"{world.run}-before"] == former
    after = {e: u for e, u in named.items() if "-after-" in e}
    assert len(after) == 20
    assert set(after.values()) == {new}


@pytest.mark.parametrize("unlink", ["tombstone", "deleted"])
def test_an_unlinked_key_names_nobody_again(world: World, unlink: str) -> None:
    user = world.user(5)
    world.consent(user)
    key = f"em:{sha(f'unlinked-{world.run}@example.com')}"
    world.link(key, user, linked_at=1)
    if unlink == "tombstone":
        world.link(key, None)
    else:
        topic = world.settings.topic(catalogue.IDENTITY_LINKS)
        deleted = {"match_key": key, "deleted": True, "linked_at": 2}
        world.send((topic, key.encode(), codec.dumps(deleted)))

    world.send(world.raw("tag", world.tag("gone", em=[key[3:]])))

    out = world.outputs(1)
    assert audits_by_event(out)[f"{world.run}-gone"]["identity"]["match"] == "none"
    assert not out[catalogue.PERSONALIZATION.name]


def test_resolution_never_widens_use_att_denied_and_opted_out_devices_stay_deidentified(
    world: World,
) -> None:
    user = world.user(6)
    world.consent(user)
    key = f"em:{sha(f'devices-{world.run}@example.com')}"
    world.link(key, user)
    ios = world.tag("att-denied", em=[key[3:]]) | {
        "action_source": "app_ios",
        "device": {"device_id": f"d-{world.run}", "os_version": "17.5", "att_status": "denied"},
    }
    android = world.tag("opted-out", em=[key[3:]]) | {
        "action_source": "app_android",
        "device": {"device_id": f"a-{world.run}", "os_version": "14", "ads_opt_out": True},
    }
    for event in (ios, android):
        event.pop("browser")
    world.send(world.raw("sdk", ios), world.raw("sdk", android))

    out = world.outputs(2)
    audits = audits_by_event(out)
    assert audits[f"{world.run}-att-denied"]["identity"]["match"] == "em"
    assert "device.att_not_authorized" in audits[f"{world.run}-att-denied"]["reasons"]
    assert audits[f"{world.run}-att-denied"]["outcomes"]["measurement"] == "deidentified"
    assert "device.ads_opt_out" in audits[f"{world.run}-opted-out"]["reasons"]
    assert f"{world.run}-att-denied" not in users_of(out, catalogue.ADS)
    assert f"{world.run}-opted-out" not in users_of(out, catalogue.ADS)


def test_any_partitioner_is_decided_alike_and_resent_copies_are_deduplicated(
    world: World,
) -> None:
    users = [world.user(10 + n) for n in range(20)]
    world.consent(*users)
    emails = {u: sha(f"{u}@example.com") for u in users}
    for user, email in emails.items():
        world.link(f"em:{email}", user)
    events = [world.tag(f"p{n}", em=[emails[users[n % 20]]]) for n in range(200)]

    # librdkafka's CRC32 partitioner, keyed by event id, and copies re-sent by another
    # producer with murmur2 and other keys: each copy lands wherever its producer chose.
    world.send(
        *(world.raw("tag", e, e["event_id"].encode()) for e in events),
        partitioner=crc32_partitioner,
    )
    world.send(*(world.raw("sdk", e, f"k{n}".encode()) for n, e in enumerate(events[:50])))

    out = world.outputs(250)
    audits = [
        r.json() for r in out[catalogue.AUDIT.name] if r.json()["event_id"].startswith(world.run)
    ]
    first = [a for a in audits if not a["duplicate"]]
    assert len(audits) == 250
    assert len(first) == 200
    assert all(a["identity"]["match"] == "em" for a in audits)
    assert not [a for a in first if "consent.missing" in a["reasons"]]
    emitted = Counter(r.json()["event_id"] for r in out[catalogue.PERSONALIZATION.name])
    mine = {e: n for e, n in emitted.items() if e.startswith(world.run)}
    assert len(mine) == 200
    assert set(mine.values()) == {1}


def test_links_and_consent_on_the_wrong_partition_go_to_the_dlq(world: World) -> None:
    user = world.user(30)
    key = f"em:{sha(f'misplaced-{world.run}@example.com')}"
    settings = world.settings
    partitions = settings.topic_partitions

    def wrong(key: bytes) -> int:
        return int(((murmur2(key) & 0x7FFFFFFF) % partitions + 1) % partitions)

    link = codec.dumps({"match_key": key, "user_id": user, "linked_at": 1})
    change = codec.dumps({"user_id": user, "changed_at": 1, "profile": US_ADULT})

    async def misplace() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=world.bootstrap, acks="all")
        await producer.start()
        try:
            for topic, k, v in (
                (catalogue.IDENTITY_LINKS, key.encode(), link),
                (catalogue.CONSENT_CHANGES, user.encode(), change),
            ):
                await (await producer.send(settings.topic(topic), v, key=k, partition=wrong(k)))
        finally:
            await producer.stop()

    asyncio.run(misplace())
    world.send(world.raw("tag", world.tag("misplaced", em=[key[3:]])))

    out = world.outputs(1)
    wrong_partition = [
        r.json() for r in out[catalogue.DLQ.name] if r.json()["reason"] == "wrong_partition"
    ]
    assert {r["origin"]["topic"] for r in wrong_partition} == {
        settings.topic(catalogue.IDENTITY_LINKS),
        settings.topic(catalogue.CONSENT_CHANGES),
    }
    assert all(r["detail"] == "key: wrong_partition" for r in wrong_partition)
    assert audits_by_event(out)[f"{world.run}-misplaced"]["identity"]["match"] == "none"
    assert scrape(settings)["pipeline_wrong_partition_total"] == 2
