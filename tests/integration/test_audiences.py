"""Customer lists against a real broker and worker: every customer-list rule, end to end.

Members name people only by hashed match keys; consent and identity links are written
and acknowledged first (the barriers), and `activity.audiences`, `decisions.audit` and
the DLQ are read back with an independent `read_committed` consumer. Each test uses its
own advertiser id, so its records are told apart from any other test's.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import requests
from facebook_business.adobjects.customaudience import CustomAudience
from facebook_business.api import FacebookAdsApi

from pipeline import catalogue
from pipeline.core.audience import member_id
from pipeline.core.parse import Rejected, parse_audience_member
from pipeline.ingest.collector import Collector
from pipeline.ingest.registry import IdKind, Registry, new_token
from pipeline.settings import Settings
from schemas import codec
from tests.integration.conftest import WorkerProcess
from tests.integration.kafka_io import Read, produce_sync, read_sync
from tests.integration.test_identity import sha

pytestmark = pytest.mark.integration

US_ADULT = {"country": "US", "birth_year": 1985}
FR_ADULT = {"country": "FR", "birth_year": 1985}


class Lists:
    """A test's people, links, consent and list uploads on one worker's topics."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.run = uuid.uuid4().hex[:8]
        self.advertiser = f"adv-{self.run}"
        self.bootstrap = settings.kafka_bootstrap_servers
        self.dlq_before = 0

    def person(self, n: int, profile: dict[str, Any] | None = US_ADULT, **settings: bool) -> str:
        """A linked person (`em:` of their email) with a consent record; returns the user id."""
        user = f"id-{self.run}-{n}"
        self.link(f"em:{self.email(n)}", user)
        if profile is not None:
            self.consent(user, profile=profile, **settings)
        return user

    def email(self, n: int) -> str:
        return sha(f"person{n}-{self.run}@example.com")

    def link(self, key: str, user: str) -> None:
        value = codec.dumps(
            {"match_key": key, "user_id": user, "linked_at": int(time.time() * 1000)}
        )
        produce_sync(
            self.bootstrap, [(self.settings.topic(catalogue.IDENTITY_LINKS), key.encode(), value)]
        )

    def consent(
        self,
        user: str,
        *,
        profile: dict[str, Any] | None = None,
        deleted: bool = False,
        **settings: bool,
    ) -> None:
        change: dict[str, Any] = {"user_id": user, "changed_at": int(time.time() * 1000)}
        if settings:
            change["settings"] = settings
        if profile is not None:
            change["profile"] = profile
        if deleted:
            change["deleted"] = True
        topic = self.settings.topic(catalogue.CONSENT_CHANGES)
        produce_sync(self.bootstrap, [(topic, user.encode(), codec.dumps(change))])

    def member(
        self, n: int, audience: str = "1", operation: str = "add", **extra: Any
    ) -> tuple[str, bytes, bytes]:
        document = {
            "advertiser_id": self.advertiser,
            "audience_id": audience,
            "operation": operation,
            "match_keys": {"em": [self.email(n)]},
            "uploaded_at": int(time.time() * 1000),
            **extra,
        }
        key = f"{self.advertiser}\x1f{audience}".encode()
        return (self.settings.topic(catalogue.RAW_AUDIENCE), key, codec.dumps(document))

    def upload(self, *records: tuple[str, bytes | None, bytes | None]) -> None:
        produce_sync(self.bootstrap, list(records))

    def read(self, audits: int, dlq: int = 0) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """This advertiser's audit records of list members (at least `audits`, in order) and
        its `activity.audiences` records."""
        topics = [
            self.settings.topic(catalogue.AUDIT),
            self.settings.topic(catalogue.AUDIENCES),
            self.settings.topic(catalogue.DLQ),
        ]

        def enough(got: dict[str, list[Read]]) -> bool:
            seen = self._mine(got.get(topics[0], []))
            return len(seen) >= audits and len(got.get(topics[2], [])) >= dlq

        got = read_sync(self.bootstrap, topics, enough, timeout_s=90, settle_s=2.0)
        self.dlq = [r.json() for r in got.get(topics[2], [])]
        return self._mine(got.get(topics[0], [])), self._mine(got.get(topics[1], []))

    def _mine(self, reads: list[Read]) -> list[dict[str, Any]]:
        return [r.json() for r in reads if r.json().get("advertiser_id") == self.advertiser]


@pytest.fixture
def lists(pipeline_settings: Settings, start_worker: Callable[[Settings], WorkerProcess]) -> Lists:
    start_worker(pipeline_settings).wait_ready()
    return Lists(pipeline_settings)


def outcomes(audits: list[dict[str, Any]]) -> list[str]:
    return [a["membership"]["outcome"] for a in audits]


def id_of(record: tuple[str, bytes, bytes]) -> str:
    """The member id the audit names a list record by."""
    member = parse_audience_member(record[2])
    assert not isinstance(member, Rejected)
    return member_id(member)


def changes(emitted: list[dict[str, Any]]) -> list[tuple[str, str, str, str | None]]:
    return [(e["user_id"], e["audience_id"], e["operation"], e["reason"]) for e in emitted]


def test_an_allowed_member_is_emitted_and_audited(lists: Lists) -> None:
    user = lists.person(1)
    lists.upload(lists.member(1))

    audits, emitted = lists.read(1)

    [audit] = audits
    assert audit["source"] == "audience"
    assert audit["membership"] == {"audience_id": "1", "operation": "add", "outcome": "added"}
    assert audit["identity"] == {"match": "em", "conflict": False}
    assert audit["destinations"] == ["audiences"]
    assert audit["reasons"] == []
    [record] = emitted
    assert record == {
        "advertiser_id": lists.advertiser,
        "audience_id": "1",
        "user_id": user,
        "operation": "add",
        "reason": None,
        "policy_version": audit["policy_version"],
        "consent_version": audit["consent_version"],
    }
    assert record["consent_version"] is not None


def test_unmatched_and_denied_members_are_audited_never_emitted(lists: Lists) -> None:
    lists.person(1, personalization=False)
    lists.person(2, ads_from_partner_info=False)
    lists.person(3, profile=None)  # linked, no consent record
    lists.person(4, profile=FR_ADULT)  # EEA: opt-in, never given
    deleted = lists.person(5)
    lists.consent(deleted, deleted=True)
    lists.person(6)
    records = [lists.member(n) for n in (1, 2, 3, 4, 5, 7)]
    records.append(lists.member(6, opt_out_type="LDP"))
    lists.upload(*records)

    audits, emitted = lists.read(7)

    assert emitted == []
    by_id = {a["event_id"]: a for a in audits}
    assert len(by_id) == 7
    got = [by_id[id_of(record)] for record in records]
    assert outcomes(got) == ["denied"] * 5 + ["unmatched", "denied"]
    reasons = [set(a["reasons"]) for a in got]
    assert "account.personalization_off" in reasons[0]
    assert "account.partner_ads_off" in reasons[1]
    assert "consent.missing" in reasons[2]
    assert {"account.personalization_off", "account.partner_ads_off"} <= reasons[3]
    assert "account.deleted" in reasons[4]
    assert got[5]["identity"]["match"] == "none"
    assert "event.ldp" in reasons[6]
    assert all(a["destinations"] == [] for a in got)


def test_a_withdrawal_removes_every_membership_and_a_regrant_restores_them(lists: Lists) -> None:
    user = lists.person(1)
    lists.upload(lists.member(1, "1"), lists.member(1, "2"), lists.member(1, "3"))
    lists.read(3)

    lists.consent(user, personalization=False)
    lists.upload(lists.member(1, "3", "remove"))  # the advertiser's remove while suppressed
    lists.upload(lists.member(1, "4"))  # an add while consent denies it: suppressed
    audits, emitted = lists.read(5)
    assert outcomes(audits) == ["added", "added", "added", "already_withdrawn", "denied"]
    # Three lists, so three raw partitions: the adds may be decided in any order.
    assert sorted(changes(emitted)[:3]) == [
        (user, "1", "add", None),
        (user, "2", "add", None),
        (user, "3", "add", None),
    ]
    assert sorted(changes(emitted)[3:]) == [
        (user, "1", "remove", "consent.revoked"),
        (user, "2", "remove", "consent.revoked"),
        (user, "3", "remove", "consent.revoked"),
    ]

    lists.consent(user, personalization=True)
    lists.upload(lists.member(1, "5"))  # the marker that the re-grant was applied
    audits, emitted = lists.read(6)
    assert outcomes(audits)[-1] == "added"
    restored = changes(emitted)[6:]
    assert sorted(restored[:-1]) == [
        (user, "1", "add", "consent.granted"),
        (user, "2", "add", "consent.granted"),
        (user, "4", "add", "consent.granted"),
    ], "list 3 was removed by the advertiser meanwhile: never re-added"
    assert restored[-1] == (user, "5", "add", None)


def test_deletion_withdraws_memberships_and_drops_them(lists: Lists) -> None:
    user = lists.person(1)
    lists.upload(lists.member(1, "1"))
    lists.read(1)

    lists.consent(user, deleted=True)
    lists.upload(lists.member(1, "1", "remove"))
    audits, emitted = lists.read(2)

    assert changes(emitted) == [(user, "1", "add", None), (user, "1", "remove", "consent.revoked")]
    assert outcomes(audits) == ["added", "not_a_member"]


def test_the_advertisers_remove_of_an_active_member_is_emitted_once(lists: Lists) -> None:
    user = lists.person(1)
    add = lists.member(1, "1")
    remove = lists.member(1, "1", "remove")
    lists.upload(add, add, remove, remove)  # each upload sent twice: the same member ids

    audits, emitted = lists.read(4)

    assert outcomes(audits) == ["added", "duplicate", "removed", "duplicate"]
    assert [a["duplicate"] for a in audits] == [False, True, False, True]
    assert [a["destinations"] for a in audits] == [["audiences"], [], ["audiences"], []]
    assert changes(emitted) == [(user, "1", "add", None), (user, "1", "remove", None)]


def test_the_newest_upload_wins_whatever_order_the_records_arrive_in(lists: Lists) -> None:
    user = lists.person(1)
    now = int(time.time() * 1000)
    remove = lists.member(1, "1", "remove", uploaded_at=now)
    late_add = lists.member(1, "1", uploaded_at=now - 1_000)  # uploaded first, arrives last
    lists.upload(remove)
    lists.upload(late_add)
    lists.upload(lists.member(1, "1"))  # a newer add: decided after both (same list, keys)

    audits, emitted = lists.read(3)

    assert outcomes(audits) == ["not_a_member", "superseded", "added"]
    assert changes(emitted) == [(user, "1", "add", None)], "only the newer add is emitted"


def test_every_list_record_ends_in_one_audit_or_dlq_record(lists: Lists) -> None:
    lists.person(1)
    topic = lists.settings.topic(catalogue.RAW_AUDIENCE)
    bad = [
        (topic, b"k", b"{not json"),
        (topic, b"k", codec.dumps({"advertiser_id": lists.advertiser})),
        (topic, b"k", json.dumps({**codec.loads(lists.member(1)[2]), "match_keys": {}}).encode()),
    ]
    lists.upload(lists.member(1), *bad, lists.member(2))

    audits, emitted = lists.read(2, dlq=3)

    assert sorted(outcomes(audits)) == ["added", "unmatched"]
    assert len(emitted) == 1
    mine = [d for d in lists.dlq if d["origin"]["topic"] == topic]
    assert sorted(d["reason"] for d in mine) == [
        "invalid_json",
        "schema_violation",
        "schema_violation",
    ]
    assert len({(d["origin"]["partition"], d["origin"]["offset"]) for d in mine}) == 3
    assert {a["origin"]["topic"] for a in audits} == {topic}


def test_an_sdk_upload_through_the_collector_reaches_activity_audiences(
    lists: Lists, pipeline_settings: Settings, tmp_path: Any
) -> None:
    """Meta's `CustomAudience.add_users`, the collector, the worker: one path, end to end."""
    import asyncio
    import threading

    from aiohttp import web

    from tests.integration.conftest import free_port

    user = lists.person(1)
    token = new_token()
    ids: dict[IdKind, list[str]] = {"audience": ["2385"]}
    registry, _ = Registry().with_new_token(lists.advertiser, token, ids=ids, now=0)
    settings = Settings.model_validate(
        {**pipeline_settings.model_dump(), "collector_port": free_port()}
    )
    ready = threading.Event()
    stop: asyncio.Event | None = None
    loop = asyncio.new_event_loop()

    async def serve() -> None:
        nonlocal stop
        stop = asyncio.Event()
        runner = web.AppRunner(Collector(settings, registry).app())
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", settings.collector_port).start()
        ready.set()
        await stop.wait()
        await runner.cleanup()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    try:
        assert ready.wait(30)
        base = f"http://127.0.0.1:{settings.collector_port}"
        api = FacebookAdsApi.init(access_token=token, crash_log=False)
        api._session.GRAPH = base
        email = f"person1-{lists.run}@example.com"
        answer = CustomAudience("2385", api=api).add_users(
            CustomAudience.Schema.email_hash, [email.upper()]
        )
        assert answer.json()["num_received"] == 1
        assert requests.get(f"{base}/ready", timeout=5).status_code == 200
    finally:
        assert stop is not None
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)

    audits, emitted = lists.read(1)
    assert outcomes(audits) == ["added"]
    assert changes(emitted) == [(user, "2385", "add", None)]
