"""Customer-list calls at the collector, made by the platforms' own clients: Pinterest's
`CustomerList` and `CustomerListsApi` (pinterest-api-sdk), Meta's `CustomAudience.add_users`
/ `remove_users` (facebook-business); what lands in `raw.audience`, and what is refused."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import aiohttp
import pytest
from facebook_business.adobjects.customaudience import CustomAudience
from facebook_business.api import FacebookAdsApi
from facebook_business.exceptions import FacebookRequestError

from pipeline import catalogue
from pipeline.core.identity import advertising_id_key
from pipeline.core.parse import Rejected, parse_audience_member
from pipeline.core.route import list_key
from pipeline.settings import Settings
from schemas.audience import AudienceMember
from tests.integration.collector_io import (
    AD_ACCOUNT,
    AUDIENCE_ID,
    LIST_ID,
    OTHER_AD_ACCOUNT,
    OTHER_LIST_ID,
    RawRecord,
    Running,
    Tokens,
    metric,
    read_raw,
    run_pinterest_sdk,
)

pytestmark = pytest.mark.integration

SDK_SCRIPT = Path(__file__).parent / "sdk_clients" / "pinterest_lists_sdk.py"
AUDIENCE = (catalogue.RAW_AUDIENCE,)
MAID = "38400000-8cf0-11bd-b23e-10b96e40000d"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def members(records: list[RawRecord]) -> list[AudienceMember]:
    parsed = []
    for record in records:
        member = parse_audience_member(record.value)
        assert not isinstance(member, Rejected), member
        assert record.key == list_key(member.advertiser_id, member.audience_id).encode()
        parsed.append(member)
    return parsed


async def read_members(settings: Settings, expected: int) -> list[AudienceMember]:
    raw = await read_raw(settings, expected, AUDIENCE, settle_s=1.5)
    return members(raw[catalogue.RAW_AUDIENCE.name])


# -- Pinterest --------------------------------------------------------------------------


async def test_the_sdk_customer_list_adds_and_removes_members(
    collector: Running, tokens: Tokens, tmp_path: Path
) -> None:
    result = await run_pinterest_sdk(
        collector,
        tmp_path,
        SDK_SCRIPT,
        {
            "token": tokens.shop,
            "ad_account_id": AD_ACCOUNT,
            "list_id": LIST_ID,
            "calls": [
                ["add", "email2@pinterest.com,Email6@Pinterest.com,"],
                ["remove", "email2@pinterest.com"],
            ],
        },
    )

    assert result["results"] == [True, True], result
    assert result["list"] == {
        "id": LIST_ID,
        "ad_account_id": AD_ACCOUNT,
        "type": "customerlist",
        "status": "READY",
    }
    got = await read_members(collector.settings, 3)
    assert [(m.operation, m.match_keys.em) for m in got] == [
        ("add", (sha("email2@pinterest.com"),)),
        ("add", (sha("email6@pinterest.com"),)),
        ("remove", (sha("email2@pinterest.com"),)),
    ]
    assert {(m.advertiser_id, m.audience_id) for m in got} == {("shop-1", LIST_ID)}
    page = await _get(f"{collector.url}/metrics")
    ok = metric(page, "pipeline_collector_requests_total", dialect="pinterest_lists", outcome="ok")
    assert ok == 5, "three reads of the list and two updates"


async def _get(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return await response.text()


async def test_the_generated_api_reads_exceptions_for_records_that_cannot_match(
    collector: Running, tokens: Tokens, tmp_path: Path
) -> None:
    digest = sha("hashed@example.com")
    records = ",".join(
        [
            digest,
            MAID,
            hashlib.sha1(b"sha1@example.com").hexdigest(),
            hashlib.md5(b"md5@example.com").hexdigest(),
            "not-a-record",
        ]
    )
    result = await run_pinterest_sdk(
        collector,
        tmp_path,
        SDK_SCRIPT,
        {
            "token": tokens.shop,
            "ad_account_id": AD_ACCOUNT,
            "list_id": LIST_ID,
            "generated": True,
            "calls": [["add", records]],
        },
    )

    [answer] = result["results"]
    assert answer["id"] == LIST_ID
    assert answer["status"] == "PROCESSING"
    message = answer["exceptions"]["message"]
    assert message.startswith("3 of 5 records were not added")
    assert "records at 2, 3" in message
    assert "records at 4" in message
    assert "sha1@" not in message
    assert "not-a-record" not in message
    got = await read_members(collector.settings, 2)
    assert [(m.match_keys.em, m.match_keys.maid) for m in got] == [
        ((digest,), (digest,)),
        ((), (advertising_id_key(MAID),)),
    ]


async def test_refused_list_calls_answer_pinterest_errors_and_write_nothing(
    collector: Running, tokens: Tokens
) -> None:
    url = f"{collector.url}/v5/ad_accounts/{AD_ACCOUNT}/customer_lists"
    body = {"records": "a@example.com", "operation_type": "ADD"}
    cases: list[tuple[str, str, dict[str, str], object, int]] = [
        ("no token", f"{url}/{LIST_ID}", {}, body, 401),
        ("unknown token", f"{url}/{LIST_ID}", {"Authorization": "Bearer cpt_x"}, body, 401),
        ("another's list", f"{url}/{OTHER_LIST_ID}", _bearer(tokens.shop), body, 403),
        (
            "another's account",
            f"{collector.url}/v5/ad_accounts/{OTHER_AD_ACCOUNT}/customer_lists/{OTHER_LIST_ID}",
            _bearer(tokens.shop),
            body,
            403,
        ),
        (
            "unknown operation",
            f"{url}/{LIST_ID}",
            _bearer(tokens.shop),
            {**body, "operation_type": "MERGE"},
            400,
        ),
        (
            "records not a string",
            f"{url}/{LIST_ID}",
            _bearer(tokens.shop),
            {**body, "records": ["a"]},
            400,
        ),
        ("no records", f"{url}/{LIST_ID}", _bearer(tokens.shop), {**body, "records": " , "}, 400),
        ("not JSON", f"{url}/{LIST_ID}", _bearer(tokens.shop), b"{", 400),
    ]
    async with aiohttp.ClientSession() as session:
        for name, target, headers, payload, status in cases:
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            async with session.patch(
                target, data=data, headers={"Content-Type": "application/json", **headers}
            ) as response:
                answer = await response.json()
                assert response.status == status, (name, answer)
                assert set(answer) == {"code", "message"}, name
                assert "a@example.com" not in answer["message"], name
    raw = await read_raw(collector.settings, 0, AUDIENCE, settle_s=1.0)
    assert raw[catalogue.RAW_AUDIENCE.name] == []


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- Meta -------------------------------------------------------------------------------


@pytest.fixture
def graph_api(collector: Running, tokens: Tokens) -> FacebookAdsApi:
    api = FacebookAdsApi.init(
        access_token=tokens.shop, app_secret="app-secret", api_version="v19.0", crash_log=False
    )
    api._session.GRAPH = collector.url
    return api


async def test_custom_audience_add_users_and_remove_users(
    collector: Running, graph_api: FacebookAdsApi
) -> None:
    audience = CustomAudience(AUDIENCE_ID, api=graph_api)
    added = await asyncio.to_thread(
        audience.add_users, CustomAudience.Schema.email_hash, ["Joe@Example.com", " b@x.org "]
    )
    raw_maid = await asyncio.to_thread(
        audience.add_users, CustomAudience.Schema.mobile_advertiser_id, [MAID]
    )
    multi = [
        CustomAudience.Schema.MultiKeySchema.email,
        CustomAudience.Schema.MultiKeySchema.phone,
        CustomAudience.Schema.MultiKeySchema.fn,
    ]
    session = {"session_id": 9778993, "batch_seq": 1, "last_batch_flag": True}
    keyed = await asyncio.to_thread(
        audience.add_users,
        multi,
        [["Ann@Example.com", "+1 (650) 555-1212", "Ann"], ["", "", "Nobody"]],
        is_raw=True,
        session=session,
    )
    removed = await asyncio.to_thread(
        audience.remove_users, CustomAudience.Schema.email_hash, ["joe@example.com"]
    )

    assert added.json() == {
        "audience_id": AUDIENCE_ID,
        "session_id": added.json()["session_id"],
        "num_received": 2,
        "num_invalid_entries": 0,
        "invalid_entry_samples": {},
    }
    assert added.json()["session_id"].isdigit()
    assert raw_maid.json()["num_received"] == 1
    assert keyed.json()["session_id"] == "9778993"
    assert keyed.json()["num_received"] == 2
    assert keyed.json()["num_invalid_entries"] == 1
    assert list(keyed.json()["invalid_entry_samples"]) == ["1"]
    assert "Nobody" not in json.dumps(keyed.json())
    assert removed.json()["num_received"] == 1

    got = await read_members(collector.settings, 5)
    assert [(m.operation, m.match_keys.em, m.match_keys.ph, m.match_keys.maid) for m in got] == [
        ("add", (sha("joe@example.com"),), (), ()),
        ("add", (sha("b@x.org"),), (), ()),
        ("add", (), (), (advertising_id_key(MAID),)),
        ("add", (sha("ann@example.com"),), (sha("16505551212"),), ()),
        ("remove", (sha("joe@example.com"),), (), ()),
    ]
    assert {(m.advertiser_id, m.audience_id) for m in got} == {("shop-1", AUDIENCE_ID)}


async def test_limited_data_processing_rows_are_marked(collector: Running, tokens: Tokens) -> None:
    payload = {
        "schema": ["EMAIL", "DATA_PROCESSING_OPTIONS"],
        "data": [[sha("ldu@example.com"), ["LDU"]], [sha("plain@example.com"), []]],
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{collector.url}/v25.0/{AUDIENCE_ID}/users",
            data={"payload": json.dumps(payload), "access_token": tokens.shop},
        ) as response,
    ):
        assert response.status == 200, await response.text()
        assert (await response.json())["num_received"] == 2
    got = await read_members(collector.settings, 2)
    assert [m.opt_out_type for m in got] == ["LDP", None]


async def test_refused_audience_calls_raise_graph_errors_and_write_nothing(
    collector: Running, tokens: Tokens, graph_api: FacebookAdsApi
) -> None:
    other = CustomAudience(OTHER_LIST_ID, api=graph_api)
    with pytest.raises(FacebookRequestError) as forbidden:
        await asyncio.to_thread(other.add_users, CustomAudience.Schema.email_hash, ["a@b.com"])
    assert forbidden.value.http_status() == 403
    assert forbidden.value.api_error_code() == 200

    nobody = FacebookAdsApi.init(access_token="cpt_unknown", crash_log=False)
    nobody._session.GRAPH = collector.url
    with pytest.raises(FacebookRequestError) as unauthorized:
        await asyncio.to_thread(
            CustomAudience(AUDIENCE_ID, api=nobody).add_users,
            CustomAudience.Schema.email_hash,
            ["a@b.com"],
        )
    assert unauthorized.value.http_status() == 401
    assert unauthorized.value.api_error_code() == 190

    url = f"{collector.url}/v25.0/{AUDIENCE_ID}/users"
    bad = [
        {"schema": "EMAIL_MD5", "data": ["x"]},
        {"schema": ["EMAIL", "NOT_A_KEY"], "data": [["a", "b"]]},
        {"schema": ["EMAIL", "FN"], "data": [["only one"]]},
        {"schema": "EMAIL_SHA256", "data": []},
        {"schema": "EMAIL_SHA256", "data": "a@b.com"},
    ]
    async with aiohttp.ClientSession() as session:
        for payload in bad:
            async with session.post(
                url, data={"payload": json.dumps(payload), "access_token": tokens.shop}
            ) as response:
                answer = await response.json()
                assert response.status == 400, (payload, answer)
                assert answer["error"]["code"] == 100
                assert "a@b.com" not in json.dumps(answer)
        async with session.post(url, data={"access_token": tokens.shop}) as response:
            assert response.status == 400
            assert "payload is required" in (await response.json())["error"]["message"]
        too_many = {"schema": "EMAIL_SHA256", "data": [sha(str(n)) for n in range(10_001)]}
        async with session.post(
            url, json={"payload": too_many, "access_token": tokens.shop}
        ) as response:
            assert response.status == 400
    raw = await read_raw(collector.settings, 0, AUDIENCE, settle_s=1.0)
    assert raw[catalogue.RAW_AUDIENCE.name] == []
