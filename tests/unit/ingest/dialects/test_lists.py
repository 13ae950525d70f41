"""Customer-list dialects: Pinterest's `CustomerListUpdateRequest`, Meta's `users` payload,
and the `raw.audience` records they become."""

from __future__ import annotations

import hashlib
import json

import pytest

from pipeline.core.identity import advertising_id_key
from pipeline.core.parse import Rejected, parse_audience_member
from pipeline.ingest.client import prepare_member
from pipeline.ingest.dialects import Invalid
from pipeline.ingest.dialects.members import (
    EMPTY_SHA256,
    Member,
    is_blank,
    maid_key,
    member_document,
)
from pipeline.ingest.dialects.meta import GraphError
from pipeline.ingest.dialects.meta_audiences import UsersRequest, read_users, response
from pipeline.ingest.dialects.pinterest_lists import ListUpdate, customer_list, read_update
from schemas import codec

MAID = "38400000-8cf0-11bd-b23e-10b96e40000d"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def update(records: object, operation: object = "ADD", **extra: object) -> ListUpdate | Invalid:
    body = {"records": records, "operation_type": operation, **extra}
    return read_update(codec.dumps(body), max_records=100)


# -- members ----------------------------------------------------------------------------


def test_the_empty_digest_is_blank() -> None:
    assert sha("") == EMPTY_SHA256
    assert is_blank(None)
    assert is_blank(" ")
    assert is_blank(EMPTY_SHA256.upper())
    assert not is_blank(sha("a"))


def test_advertising_ids_are_digests_or_uuids() -> None:
    assert maid_key(MAID) == advertising_id_key(MAID)
    assert maid_key(MAID.upper()) == advertising_id_key(MAID)
    assert maid_key(sha("x").upper()) == sha("x")
    assert maid_key("00000000-0000-0000-0000-000000000000") is None
    assert maid_key("not an id") is None


def test_a_member_document_is_a_valid_raw_audience_record() -> None:
    member = Member(em=(sha("a"), sha("a")), ph=(sha("1"),), limited_data_processing=True)
    document = member_document("shop-1", "643", "add", member, 1_700_000_000_000)
    prepared = prepare_member(document)
    assert not isinstance(prepared, Rejected)
    assert prepared.key == b"shop-1\x1f643"
    parsed = parse_audience_member(prepared.value)
    assert not isinstance(parsed, Rejected)
    assert parsed.match_keys.em == (sha("a"),)
    assert parsed.match_keys.ph == (sha("1"),)
    assert parsed.opt_out_type == "LDP"


def test_prepare_member_refuses_what_ingest_would() -> None:
    document = member_document("shop-1", "643", "add", Member(), 1)
    rejected = prepare_member(document)
    assert isinstance(rejected, Rejected)
    assert rejected.reason == "schema_violation"
    assert isinstance(prepare_member(["not", "a", "mapping"]), Rejected)


# -- Pinterest --------------------------------------------------------------------------


def test_records_are_split_normalized_and_hashed() -> None:
    digest = sha("hashed@example.com")
    got = update(f" Email2@Pinterest.com ,{digest.upper()},{MAID},,")
    assert isinstance(got, ListUpdate)
    assert got.operation == "add"
    assert got.members == (
        Member(em=(sha("email2@pinterest.com"),)),
        Member(em=(digest,), maid=(digest,)),
        Member(maid=(advertising_id_key(MAID) or "",)),
    )
    assert got.records == 3


def test_weak_hashes_and_unreadable_records_are_counted_by_position() -> None:
    sha1 = hashlib.sha1(b"a@b.com").hexdigest()
    md5 = hashlib.md5(b"a@b.com").hexdigest()
    got = update(f"a@b.com,{sha1},junk,{md5},x@@y", operation="REMOVE")
    assert isinstance(got, ListUpdate)
    assert got.operation == "remove"
    assert len(got.members) == 1
    assert got.weak_hashes == (1, 3)
    assert got.unreadable == (2, 4)
    answer = customer_list("643", "549755885175", status="PROCESSING", update=got)
    message = answer["exceptions"]["message"]
    assert message.startswith("4 of 5 records were not removed: 2 SHA-1 or MD5 digests")
    assert "records at 1, 3" in message
    assert "records at 2, 4" in message
    for value in (sha1, md5, "junk", "x@@y"):
        assert value not in json.dumps(answer)


def test_a_clean_update_has_no_exceptions() -> None:
    got = update("a@b.com")
    assert isinstance(got, ListUpdate)
    assert customer_list("643", "1", status="PROCESSING", updated_time=5, update=got) == {
        "id": "643",
        "ad_account_id": "1",
        "type": "customerlist",
        "status": "PROCESSING",
        "updated_time": 5,
    }


def test_many_positions_are_summarized() -> None:
    got = update(",".join(["junk"] * 15))
    assert isinstance(got, ListUpdate)
    message = customer_list("1", "1", status="PROCESSING", update=got)["exceptions"]["message"]
    assert "records at 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 and 5 more" in message


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"{", "the body is not JSON"),
        (b"[]", "body: must be an object"),
        (codec.dumps({"operation_type": "ADD"}), "records: is a required property"),
        (codec.dumps({"records": "a@b.com"}), "operation_type: is a required property"),
        (codec.dumps({"records": "a", "operation_type": "add"}), "must be one of ADD, REMOVE"),
        (codec.dumps({"records": ["a"], "operation_type": "ADD"}), "records: must be a string"),
        (codec.dumps({"records": " ,, ", "operation_type": "ADD"}), "at least one record"),
    ],
)
def test_bodies_outside_the_schema_are_invalid(body: bytes, detail: str) -> None:
    got = read_update(body, max_records=10)
    assert isinstance(got, Invalid)
    assert detail in got.detail


def test_unknown_fields_are_ignored_and_the_record_limit_holds() -> None:
    assert isinstance(update("a@b.com", exceptions={"code": 1}), ListUpdate)
    got = read_update(
        codec.dumps({"records": ",".join(["a@b.com"] * 11), "operation_type": "ADD"}),
        max_records=10,
    )
    assert isinstance(got, Invalid)
    assert "at most 10 records" in got.detail


# -- Meta -------------------------------------------------------------------------------


def users(payload: object, session: object = None, *, where: str = "form") -> object:
    params: dict[str, list[str]] = {"payload": [json.dumps(payload)]}
    if session is not None:
        params["session"] = [json.dumps(session)]
    if where == "json":
        body: dict[str, object] = {"payload": payload}
        if session is not None:
            body["session"] = session
        return read_users({}, {}, body)
    if where == "query":
        return read_users(params, {}, None)
    return read_users({}, params, None)


@pytest.mark.parametrize("where", ["form", "query", "json"])
def test_single_key_schemas_as_the_sdk_sends_them(where: str) -> None:
    got = users({"schema": "EMAIL_SHA256", "is_raw": False, "data": [sha("a@b.com")]}, where=where)
    assert isinstance(got, UsersRequest)
    assert got.members == (Member(em=(sha("a@b.com"),)),)
    assert got.received == 1
    assert not got.invalid


def test_plain_emails_phones_and_raw_advertising_ids_are_hashed() -> None:
    got = users(
        {"schema": ["EMAIL", "PHONE", "MADID"], "data": [[" A@B.com", "+1 650-555-1212", MAID]]}
    )
    assert isinstance(got, UsersRequest)
    assert got.members == (
        Member(
            em=(sha("a@b.com"),), ph=(sha("16505551212"),), maid=(advertising_id_key(MAID) or "",)
        ),
    )
    raw = users({"schema": "MOBILE_ADVERTISER_ID", "data": [MAID]})
    assert isinstance(raw, UsersRequest)
    assert raw.members == (Member(maid=(advertising_id_key(MAID) or "",)),)


def test_rows_naming_no_one_are_invalid_entries_without_values() -> None:
    got = users(
        {
            "schema": ["EMAIL", "FN", "EXTERN_ID"],
            "data": [
                [sha("a"), sha("ann"), "c-1"],
                [EMPTY_SHA256, sha("bob"), "c-2"],
                ["not-an-email", "", ""],
            ],
        }
    )
    assert isinstance(got, UsersRequest)
    assert len(got.members) == 1
    assert got.received == 3
    assert set(got.invalid) == {1, 2}
    assert "nothing to match" in got.invalid[1]
    assert got.invalid[2] == "EMAIL: not a valid value or SHA-256 digest"
    answer = response("2385", got)
    assert answer["num_invalid_entries"] == 2
    assert answer["invalid_entry_samples"] == {"1": got.invalid[1], "2": got.invalid[2]}
    assert "not-an-email" not in json.dumps(answer)
    assert "c-2" not in json.dumps(answer)


def test_uid_schemas_never_resolve() -> None:
    got = users({"schema": "UID", "data": ["1234"], "app_ids": ["1"]})
    assert isinstance(got, UsersRequest)
    assert got.members == ()
    assert list(got.invalid) == [0]


def test_data_processing_options_mark_limited_rows() -> None:
    got = users(
        {
            "schema": ["EMAIL", "DATA_PROCESSING_OPTIONS"],
            "data": [[sha("a"), ["LDU"]], [sha("b"), []]],
        }
    )
    assert isinstance(got, UsersRequest)
    assert [m.limited_data_processing for m in got.members] == [True, False]
    bad = users({"schema": ["EMAIL", "DATA_PROCESSING_OPTIONS"], "data": [[sha("a"), 7]]})
    assert isinstance(bad, UsersRequest)
    assert bad.invalid == {0: "DATA_PROCESSING_OPTIONS must be a list of strings"}


def test_the_session_id_is_echoed_or_made() -> None:
    payload = {"schema": "EMAIL_SHA256", "data": [sha("a")]}
    given = users(payload, {"session_id": 9778993, "batch_seq": 1, "last_batch_flag": True})
    assert isinstance(given, UsersRequest)
    assert given.session_id == "9778993"
    for _ in range(2000):
        made = users(payload)
        assert isinstance(made, UsersRequest)
        assert made.session_id.isdigit()
        assert len(made.session_id) == 15
    assert isinstance(users(payload, {"session_id": "abc"}), GraphError)
    assert isinstance(users(payload, {"session_id": True}), GraphError)


@pytest.mark.parametrize(
    ("payload", "detail"),
    [
        ({"schema": "EMAIL_MD5", "data": ["x"]}, "payload.schema[0] is not a supported key"),
        ({"schema": ["EMAIL", "EMAIL"], "data": [["a", "b"]]}, "names a key twice"),
        ({"schema": [], "data": [["a"]]}, "a key or a list of keys"),
        ({"schema": "EMAIL_SHA256"}, "non-empty list"),
        ({"schema": "EMAIL_SHA256", "data": "a"}, "non-empty list"),
        ({"schema": ["EMAIL", "FN"], "data": [["a"]]}, "payload.data[0] must be a row of 2"),
        ([1, 2], "payload must be an object"),
    ],
)
def test_payloads_outside_the_reference_are_invalid_parameters(
    payload: object, detail: str
) -> None:
    got = users(payload)
    assert isinstance(got, GraphError)
    assert got.status == 400
    assert got.code == 100
    assert detail in got.message


def test_a_missing_or_broken_payload_and_the_row_limit() -> None:
    missing = read_users({}, {}, None)
    assert isinstance(missing, GraphError)
    assert "payload is required" in missing.message
    broken = read_users({}, {"payload": ["{"]}, None)
    assert isinstance(broken, GraphError)
    assert "payload must be a JSON object" in broken.message
    many = read_users(
        {}, {}, {"payload": {"schema": "EMAIL_SHA256", "data": [sha("a")] * 3}}, max_rows=2
    )
    assert isinstance(many, GraphError)
    assert "at most 2 rows" in many.message
