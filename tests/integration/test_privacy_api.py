"""The consent API against the real broker and two real workers: what the owner of a
person's partition holds, routing, bad input, a save Kafka acknowledged and the events
it governs, a change made while saving, decisions from the audit stream."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from pipeline import catalogue
from pipeline.ingest.client import Acknowledged, DeliveryFailure, EventProducer, Prepared
from pipeline.ingest.privacy import PrivacyService, WorkerClient, user_path
from pipeline.settings import Settings
from schemas.privacy import PrivacyUpdate
from tests.conftest import TRUST_KEY
from tests.integration.collector_io import Tokens, configured, make_registry, running_collector
from tests.integration.conftest import WorkerProcess
from tests.integration.privacy_io import (
    Writer,
    call,
    consent_api,
    consent_ends,
    consent_partition,
    consent_record_at,
    held_by_api,
    person,
    read_outputs,
    running_workers,
    signed_get,
    tag,
    until,
    worker_url,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def workers(
    stack: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[WorkerProcess]]:
    """Two workers of one group: each owns some partitions of the consent table."""
    with running_workers(stack, tmp_path_factory.mktemp("logs"), count=2) as running:
        yield running


def uid(stem: str) -> str:
    return f"{stem}-{uuid.uuid4().hex[:10]}"


async def test_the_owner_answers_with_region_defaults_and_what_is_offered(
    stack: Settings, workers: list[WorkerProcess], tokens: Tokens
) -> None:
    us, eea, teen = uid("us"), uid("eea"), uid("teen")
    async with Writer(stack) as writer:
        await writer.consent(person(us, "US", 35, partner_sharing=False))
        await writer.consent(person(eea, "DE", 30, personalization=True))
        await writer.consent(person(teen, "US", 14))
    async with consent_api(stack, tokens, workers) as api:
        held = {user: await held_by_api(api.url, tokens.trusted, user) for user in (us, eea, teen)}

    assert held[us]["region"] == "other"
    assert held[us]["personalization"] == {
        "value": True,
        "chosen": None,
        "default": True,
        "offered": True,
        "not_offered_because": [],
        "not_offered_said": None,
        "affected_by": None,
    }
    assert (held[us]["partner_sharing"]["value"], held[us]["partner_sharing"]["offered"]) == (
        False,
        True,
    )
    assert held[eea]["region"] == "eea_gb_ch"
    assert (held[eea]["personalization"]["value"], held[eea]["ads_from_partner_info"]["value"]) == (
        True,
        False,
    )
    assert not held[eea]["partner_sharing"]["offered"]
    assert "user.region_restricted" in held[eea]["partner_sharing"]["not_offered_because"]
    assert held[teen]["age"] == "under_16"
    assert held[teen]["partner_sharing"]["not_offered_because"] == ["user.under_16"]
    assert held[teen]["partner_sharing"]["not_offered_said"] == (
        "Not available for your account because you are under 16."
    )
    for user, answer in held.items():
        assert answer["user_id"] == user
        assert answer["served_by"]["partition"] == consent_partition(stack, user)


async def test_every_worker_routes_a_person_to_the_one_owner_of_their_partition(
    stack: Settings, workers: list[WorkerProcess]
) -> None:
    people: dict[int, str] = {}
    while len(people) < stack.topic_partitions:
        user = uid("routed")
        people.setdefault(consent_partition(stack, user), user)
    async with Writer(stack) as writer:
        for user in people.values():
            await writer.consent(person(user, "US", 40))

    owners: dict[int, set[str]] = {}
    for partition, user in people.items():
        for worker in workers:

            async def served(worker: WorkerProcess = worker, user: str = user) -> Any:
                status, body = await signed_get(worker, user_path(user, "consent"))
                return body if status == 200 else None

            body = await until(served)
            assert body["partition"] == partition
            owners.setdefault(partition, set()).add(body["privacy"]["served_by"]["worker"])

    assert all(len(names) == 1 for names in owners.values())  # one owner, whoever is asked
    assert set().union(*owners.values()) == {"worker-0", "worker-1"}


async def test_every_bad_request_is_a_clear_4xx_and_writes_nothing(
    stack: Settings, workers: list[WorkerProcess], tokens: Tokens
) -> None:
    user, eea, gone = uid("bad"), uid("bad-eea"), uid("gone")
    async with Writer(stack) as writer:
        await writer.consent(person(user, "US", 30))
        await writer.consent(person(eea, "FR", 30))
        await writer.consent(person(gone, "US", 30))
        await writer.consent(
            {"user_id": gone, "changed_at": int(time.time() * 1000) + 1, "deleted": True}
        )
    async with consent_api(stack, tokens, workers) as api:
        await held_by_api(api.url, tokens.trusted, user)
        await held_by_api(api.url, tokens.trusted, eea)
        path = f"{api.url}/v1/users/{user}/privacy"
        before = await consent_ends(stack)
        cases: list[tuple[str, str, str | None, Any, bytes | None, int, str]] = [
            ("PUT", path, None, {"personalization": False}, None, 401, "token is required"),
            ("PUT", path, "cpt_unknown", {"personalization": False}, None, 401, "token"),
            ("GET", path, None, None, None, 401, "token is required"),
            ("PUT", path, tokens.shop, {"personalization": False}, None, 403, "trusted"),
            ("GET", path, tokens.shop, None, None, 403, "trusted"),
            (
                "PUT",
                path,
                tokens.trusted,
                {"personalisation": False},
                None,
                400,
                "personalisation: extra_forbidden",
            ),
            (
                "PUT",
                path,
                tokens.trusted,
                {"personalization": "off"},
                None,
                400,
                "personalization: bool_type",
            ),
            (
                "PUT",
                path,
                tokens.trusted,
                {"personalization": 0},
                None,
                400,
                "personalization: bool_type",
            ),
            ("PUT", path, tokens.trusted, [False], None, 400, "JSON object"),
            ("PUT", path, tokens.trusted, {}, None, 400, "at least one"),
            ("PUT", path, tokens.trusted, None, b"{not json", 400, "not valid JSON"),
            ("PUT", path, tokens.trusted, None, b"\xff\xfe", 400, "not valid JSON"),
            (
                "PUT",
                f"{api.url}/v1/users/{eea}/privacy",
                tokens.trusted,
                {"partner_sharing": True},
                None,
                422,
                "partner_sharing: not offered",
            ),
            (
                "PUT",
                f"{api.url}/v1/users/{uid('nobody')}/privacy",
                tokens.trusted,
                {"personalization": False},
                None,
                404,
                "no such user",
            ),
            (
                "GET",
                f"{api.url}/v1/users/{uid('nobody')}/privacy",
                tokens.trusted,
                None,
                None,
                404,
                "no such user",
            ),
            (
                "GET",
                f"{api.url}/v1/users/{'x' * 300}/privacy",
                tokens.trusted,
                None,
                None,
                400,
                "user_id",
            ),
            ("GET", f"{path}/decisions", tokens.trusted, None, None, 400, "since is required"),
            (
                "GET",
                f"{path}/decisions?since=-1",
                tokens.trusted,
                None,
                None,
                400,
                "since must be",
            ),
        ]
        for method, url, token, body, raw, status, message in cases:
            got, headers, answer = await call(method, url, token, body, raw=raw)
            assert (got, method, url[-40:]) == (status, method, url[-40:])
            assert message in answer["error"], (message, answer)
            if status == 401:
                assert headers["WWW-Authenticate"].startswith("Bearer")

        async def deleted() -> bool:
            status, _, _ = await call(
                "PUT",
                f"{api.url}/v1/users/{gone}/privacy",
                tokens.trusted,
                {"personalization": False},
            )
            return status == 410

        await until(deleted)
        after = await consent_ends(stack)

    assert after == before


async def test_without_workers_configured_the_api_answers_503_and_writes_nothing(
    stack: Settings, tokens: Tokens
) -> None:
    user = uid("lonely")
    async with running_collector(stack, make_registry(tokens)) as api:
        status, headers, body = await call(
            "PUT", f"{api.url}/v1/users/{user}/privacy", tokens.trusted, {"personalization": False}
        )

        async with aiohttp.ClientSession() as http, http.get(f"{api.url}/account/privacy") as page:
            page_status = page.status

    assert status == 503
    assert headers["Retry-After"] == str(stack.collector_retry_after_seconds)
    assert "PIPELINE_COLLECTOR_WORKER_URLS" in body["error"]
    assert page_status == 404  # the page is off unless PIPELINE_COLLECTOR_PRIVACY_PAGE is on


async def test_the_page_is_self_contained_and_its_scripts_run_only_with_the_nonce(
    stack: Settings, tokens: Tokens
) -> None:
    on = configured(stack, collector_privacy_page=True)
    async with (
        running_collector(on, make_registry(tokens)) as api,
        aiohttp.ClientSession() as http,
    ):
        pages = []
        for _ in range(2):
            async with http.get(f"{api.url}/account/privacy") as response:
                pages.append((response.status, dict(response.headers), await response.text()))

    (status, headers, html), (_, second, _) = pages
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    policy = headers["Content-Security-Policy"]
    nonce = policy.split("'nonce-", 1)[1].split("'", 1)[0]
    assert f'<script nonce="{nonce}">' in html
    assert f'<style nonce="{nonce}">' in html
    assert "default-src 'none'" in policy
    assert "connect-src 'self'" in policy
    assert second["Content-Security-Policy"] != policy  # a fresh nonce each time
    assert "http://" not in html
    assert "https://" not in html
    assert '<html lang="en">' in html
    assert headers["Cache-Control"] == "no-store"


async def decided(url: str, token: str, user_id: str, event_ids: set[str]) -> None:
    """Wait until the audit stream holds a decision of each of `event_ids`."""

    async def all_there() -> bool:
        status, _, feed = await call(
            "GET", f"{url}/v1/users/{user_id}/privacy/decisions?since=0", token
        )
        return status == 200 and event_ids <= {d["event_id"] for d in feed["decisions"]}

    await until(all_there)


async def test_a_saved_revocation_is_acknowledged_and_governs_every_later_event(
    stack: Settings, workers: list[WorkerProcess], tokens: Tokens
) -> None:
    user, advertiser = uid("revoker"), uid("adv")
    device = {"device_id": "dev-1", "platform": "ios", "att_status": "authorized"}
    async with Writer(stack) as writer, consent_api(stack, tokens, workers) as api:
        await writer.consent(
            person(user, "US", 40, device=device, personalization=True, ads_from_partner_info=True)
        )
        await held_by_api(api.url, tokens.trusted, user)
        before = [await writer.event(tag(user, advertiser)) for _ in range(3)]
        # Decided before the save (a later decision would apply the revocation to them too).
        await decided(api.url, tokens.trusted, user, {sent.event_id for sent in before})

        status, _, saved = await call(
            "PUT", f"{api.url}/v1/users/{user}/privacy", tokens.trusted, {"personalization": False}
        )
        after = [await writer.event(tag(user, advertiser)) for _ in range(5)]  # at once
        assert status == 200, saved

        async def folded() -> dict[str, Any] | None:
            got = await held_by_api(api.url, tokens.trusted, user)
            return got if got["consent_version"] >= saved["changed_at"] else None

        held = await until(folded)

    assert saved["partition"] == consent_partition(stack, user)
    assert saved["topic"] == catalogue.CONSENT_CHANGES.name
    assert saved["settings"] == {
        "personalization": False,
        "ads_from_partner_info": True,
        "partner_sharing": None,
    }
    assert saved["rewrites"] == 0
    written = await consent_record_at(stack, saved["partition"], saved["offset"])
    assert written["changed_at"] == saved["changed_at"]
    assert written["settings"] == saved["settings"]
    assert written["profile"] == {"country": "US", "birth_year": time.gmtime().tm_year - 41}
    assert written["device"] == device
    assert all(sent.appended_ms < saved["acknowledged_at"] for sent in before)
    later = {sent.event_id for sent in after if sent.appended_ms > saved["acknowledged_at"]}
    assert len(later) >= 4  # at most one can share the acknowledgement's millisecond
    got = await read_outputs(stack, later | {sent.event_id for sent in before})
    identified = {
        read.json()["event_id"]
        for name in (catalogue.PERSONALIZATION.name, catalogue.ADS.name)
        for read in got[name]
    }
    assert {sent.event_id for sent in before} <= identified
    assert not later & identified
    audits = {read.json()["event_id"]: read.json() for read in got[catalogue.AUDIT.name]}
    for event_id in later:
        audit = audits[event_id]
        assert "account.personalization_off" in audit["reasons"]
        assert audit["consent_version"] == saved["changed_at"]
        assert audit["destinations"] == ["deidentified"]
    deidentified = [
        r for r in got[catalogue.DEIDENTIFIED.name] if r.json()["advertiser_id"] == advertiser
    ]
    assert len(deidentified) == len(before) + len(after)
    assert (held["personalization"]["value"], held["personalization"]["chosen"]) == (False, False)
    assert held["acknowledged_at"] == saved["acknowledged_at"]


class Interleaving(EventProducer):
    """A producer that lets another writer's change land just before the save's record."""

    def __init__(self, settings: Settings, writer: Writer, change: dict[str, Any]) -> None:
        super().__init__(settings)
        self.writer = writer
        self.pending: dict[str, Any] | None = change

    async def acknowledged(
        self, prepared: Prepared, within_s: float
    ) -> Acknowledged | DeliveryFailure:
        if self.pending is not None:
            await self.writer.consent(self.pending)
            self.pending = None
        return await super().acknowledged(prepared, within_s)


async def test_a_change_landing_while_saving_is_kept_the_record_written_again(
    stack: Settings, workers: list[WorkerProcess]
) -> None:
    user = uid("racer")
    device = {"device_id": "dev-9", "platform": "ios", "att_status": "authorized"}
    async with Writer(stack) as writer:
        await writer.consent(person(user, "US", 40, device=device, personalization=True))
        denied = {
            "user_id": user,
            "changed_at": int(time.time() * 1000),
            "device": {**device, "att_status": "denied"},
        }
        producer = Interleaving(stack, writer, denied)
        await producer.start()
        workers_client = WorkerClient(
            [worker_url(worker) for worker in workers], TRUST_KEY, timeout_s=5, retry_after=1
        )
        service = PrivacyService(stack, producer, workers=workers_client)
        try:
            await until(lambda: _held(workers[0], user))
            saved = await service.save(user, PrivacyUpdate(personalization=False))
        finally:
            await service.close()
            await producer.stop()

    assert saved.rewrites == 1
    written = await consent_record_at(stack, saved.partition, saved.offset)
    assert written["device"]["att_status"] == "denied"
    assert written["settings"]["personalization"] is False
    held = await until(lambda: _held(workers[0], user, at_least=saved.changed_at))
    assert held["state"]["devices"]["dev-9"]["att_status"][0] == "denied"
    assert held["privacy"]["personalization"]["value"] is False


async def _held(worker: WorkerProcess, user: str, at_least: int = 0) -> Any:
    status, body = await signed_get(worker, user_path(user, "consent"))
    return body if status == 200 and body["state"]["version"] >= at_least else None


async def test_a_persons_decisions_come_from_the_audit_stream_once_each(
    stack: Settings, workers: list[WorkerProcess], tokens: Tokens
) -> None:
    user, advertiser = uid("watched"), uid("adv")
    since = int(time.time() * 1000) - 1000
    async with Writer(stack) as writer, consent_api(stack, tokens, workers) as api:
        await writer.consent(person(user, "DE", 30, personalization=True))
        await held_by_api(api.url, tokens.trusted, user)
        sent = [await writer.event(tag(user, advertiser)) for _ in range(4)]
        url = f"{api.url}/v1/users/{user}/privacy/decisions"
        seen: list[dict[str, Any]] = []
        cursor: int | None = None

        async def everything() -> bool:
            nonlocal cursor
            query = f"?since={since}" + ("" if cursor is None else f"&cursor={cursor}")
            status, _, feed = await call("GET", url + query, tokens.trusted)
            assert status == 200, feed
            seen.extend(feed["decisions"])
            cursor = feed["cursor"]
            return len(seen) >= len(sent)

        await until(everything)
        await asyncio.sleep(0.5)
        await everything()

    # One audit partition holds the person's decisions, in the order they were decided.
    assert sorted(d["event_id"] for d in seen) == sorted(s.event_id for s in sent)
    assert sorted(d["decided_at"] for d in seen) == [d["decided_at"] for d in seen]
    for decision in seen:
        assert decision["outcomes"]["personalization"] == "allow"
        assert decision["outcomes"]["ads"] == "deny"  # ads from partners: opt-in in the EEA
        assert "account.partner_ads_off" in decision["reasons"]
        assert "user.region_restricted" in decision["reasons"]


async def test_a_workers_consent_pages_need_the_collectors_signature(
    workers: list[WorkerProcess],
) -> None:
    path = user_path("someone", "consent")
    async with aiohttp.ClientSession() as http:
        for headers in ({}, {"X-Pipeline-Signature": "v1:0:" + "0" * 64}):
            async with http.get(worker_url(workers[0]) + path, headers=headers) as response:
                assert response.status == 401
                assert (await response.json(content_type=None)) == {
                    "error": "a valid request signature is required"
                }
    status, _ = await signed_get(workers[0], path)
    assert status == 404
