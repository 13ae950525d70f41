"""Fuzzing every collector endpoint over real HTTP: random bodies, encodings, headers and
query strings never get a 500 (or a 503 while Kafka is up), never write a record the
pipeline's parser rejects, and never put a token, an email or a body in the log."""

from __future__ import annotations

import asyncio
import http.client
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import catalogue
from pipeline.core.parse import ParseLimits, Rejected, parse_audience_member, parse_event
from pipeline.ingest.registry import save_registry
from pipeline.kafka.admin import create_topics
from pipeline.settings import Settings
from tests.integration.collector_io import (
    AD_ACCOUNT,
    AUDIENCE_ID,
    LIST_ID,
    PIXEL_ID,
    RAW_TOPICS,
    TAG_ID,
    TRUST_KEY,
    Tokens,
    make_registry,
    read_raw,
)
from tests.integration.conftest import free_port, process_env

pytestmark = pytest.mark.integration

EMAIL = "fuzz.person@example.com"
ALLOWED = frozenset({200, 400, 401, 403, 404, 405, 413, 422, 429})
FUZZ = settings(
    max_examples=120,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@dataclass
class Target:
    """The collector child process under fuzzing."""

    port: int
    settings: Settings
    tokens: Tokens
    log: Path

    def send(self, method: str, path: str, headers: dict[str, str], body: bytes) -> int:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request(method, path, body=body or None, headers=headers)
            response = connection.getresponse()
            response.read()
            return response.status
        finally:
            connection.close()


@pytest.fixture(scope="module")
def target(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    folder = tmp_path_factory.mktemp("fuzz")
    tokens = Tokens()
    registry_file = folder / "advertisers.yaml"
    save_registry(registry_file, make_registry(tokens))
    port = free_port()
    configured = Settings.model_validate(
        {
            "kafka_bootstrap_servers": kafka_bootstrap,
            "app_id": f"fuzz-{uuid.uuid4().hex[:8]}",
            "topic_prefix": f"fuzz-{uuid.uuid4().hex[:8]}.",
            "topic_partitions": 1,
            "collector_port": port,
            "advertisers_file": registry_file,
            "trust_key": TRUST_KEY,
            "collector_rate_limit_per_second": 1_000_000,
            "collector_rate_limit_burst": 1_000_000,
            "collector_max_body_bytes": 64 * 1024,
            "log_level": "debug",
        }
    )
    asyncio.run(create_topics(configured))
    env = process_env(configured)
    log = folder / "collector.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "collect"],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    made = Target(port, configured, tokens, log)
    deadline = time.monotonic() + 30
    while True:
        try:
            if made.send("GET", "/ready", {}, b"") == 200:
                break
        except OSError:
            pass
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "the collector did not become ready"
        time.sleep(0.2)
    try:
        yield made
    finally:
        proc.terminate()
        proc.wait(30)


# -- strategies ------------------------------------------------------------------------

header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(["72.39", "LDU", "LDP", "web", "app", EMAIL, "i2", "a2", "fb.1.1.x"]),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)


def mutated(template: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """`template` with some fields dropped and others replaced by random JSON values."""
    keys = sorted(template)
    return st.tuples(
        st.sets(st.sampled_from(keys), max_size=3),
        st.dictionaries(st.sampled_from([*keys, "extra", "user_id"]), json_values, max_size=3),
    ).map(lambda change: {**{k: v for k, v in template.items() if k not in change[0]}, **change[1]})


def now() -> int:
    return int(time.time())


def pinterest_event() -> dict[str, Any]:
    return {
        "event_name": "checkout",
        "action_source": "web",
        "event_time": now() - 30,
        "event_id": f"pz-{uuid.uuid4().hex[:8]}",
        "user_data": {"em": [EMAIL], "client_ip_address": "203.0.113.5"},
        "custom_data": {"value": "72.39", "opt_out_type": "LDP"},
    }


def meta_event() -> dict[str, Any]:
    return {
        "event_name": "Purchase",
        "event_time": now() - 30,
        "user_data": {
            "em": EMAIL,
            "fbc": "fb.1.1554763741205.AbC",
            "client_ip_address": "203.0.113.6",
        },
        "custom_data": {"value": 12.5, "currency": "usd"},
        "action_source": "website",
        "data_processing_options": ["LDU"],
        "app_data": {"advertiser_tracking_enabled": False, "extinfo": ["i2"]},
    }


def native_event() -> dict[str, Any]:
    return {
        "event_id": f"nz-{uuid.uuid4().hex[:8]}",
        "event_name": "checkout",
        "event_time": now() - 30,
        "action_source": "web",
        "user_data": {"em": [EMAIL]},
        "custom_data": {"value": "9.5"},
        "browser": {"cookie_id": "ck"},
    }


def widget_event() -> dict[str, Any]:
    return {
        "event_id": f"wz-{uuid.uuid4().hex[:8]}",
        "event_name": "save_click",
        "event_time": now() - 30,
        "site_domain": "blog.example.org",
        "widget_type": "save_button",
    }


def bodies(template: dict[str, Any]) -> st.SearchStrategy[tuple[str, bytes]]:
    """(content type, body): mutated documents as JSON, forms or multipart; random bytes."""
    documents = st.lists(mutated(template), min_size=1, max_size=3)
    return st.one_of(
        st.tuples(
            st.just("application/json"), documents.map(lambda d: json.dumps({"data": d}).encode())
        ),
        st.tuples(
            st.just("application/x-www-form-urlencoded"),
            documents.map(
                lambda d: urlencode({"data": json.dumps([json.dumps(e) for e in d])}).encode()
            ),
        ),
        st.tuples(
            st.just("multipart/form-data; boundary=XyZ"),
            documents.map(
                lambda d: (
                    '--XyZ\r\nContent-Disposition: form-data; name="data"\r\n\r\n'
                    + json.dumps(d)
                    + "\r\n--XyZ--\r\n"
                ).encode()
            ),
        ),
        st.tuples(
            st.sampled_from(
                [
                    "application/json",
                    "application/x-www-form-urlencoded",
                    "multipart/form-data",
                    "text/plain",
                    "",
                ]
            ),
            st.binary(max_size=300),
        ),
        st.tuples(st.just("application/json"), json_values.map(lambda v: json.dumps(v).encode())),
    )


def query_strings(extra: list[str]) -> st.SearchStrategy[str]:
    keys = st.sampled_from(
        ["test", "access_token", "data", "test_event_code", "source", *extra]
    ) | st.text(max_size=6)
    return st.lists(st.tuples(keys, st.text(max_size=30)), max_size=4).map(
        lambda pairs: ("?" + urlencode(pairs)) if pairs else ""
    )


def auth_headers(target: Target) -> st.SearchStrategy[dict[str, str]]:
    """Browser headers, and an Authorization header that is often a registered token."""
    bearer = st.sampled_from(
        [target.tokens.shop, target.tokens.trusted, target.tokens.other, "wrong"]
    ).map(lambda token: f"Bearer {token}")
    return st.fixed_dictionaries(
        {"Authorization": st.one_of(bearer, bearer, header_text)},
        optional={
            "DNT": header_text,
            "Sec-GPC": header_text,
            "Cookie": header_text,
            "User-Agent": header_text,
            "Referer": header_text,
        },
    )


def check(
    target: Target, method: str, path: str, headers: dict[str, str], body: tuple[str, bytes]
) -> None:
    content_type, payload = body
    sent = dict(headers)
    if content_type:
        sent["Content-Type"] = content_type
    status = target.send(method, path, sent, payload)
    assert status in ALLOWED, (method, path.split("?")[0], status)


def check_written_and_logged(target: Target) -> int:
    """Every record written so far parses; the log holds no secret. Returns the count."""
    topics = (*RAW_TOPICS, catalogue.RAW_AUDIENCE)
    raw = asyncio.run(read_raw(target.settings, 0, topics, settle_s=1.5))
    limits = ParseLimits(require_key=False)
    for topic, records in raw.items():
        if topic == catalogue.RAW_AUDIENCE.name:
            for record in records:
                assert not isinstance(parse_audience_member(record.value, limits=limits), Rejected)
            continue
        source = next(t.source for t in RAW_TOPICS if t.name == topic)
        assert source is not None
        assert source != "audience"
        for record in records:
            assert not isinstance(
                parse_event(source, record.value, now=time.time(), limits=limits), Rejected
            )
    text = target.log.read_text()
    for secret in (
        target.tokens.shop,
        target.tokens.trusted,
        target.tokens.other,
        "fuzz.person",
        "203.0.113",
    ):
        assert secret not in text
    assert "Traceback" not in text
    return sum(len(records) for records in raw.values())


# -- one fuzz test per endpoint ----------------------------------------------------------


def test_the_pinterest_endpoint(target: Target) -> None:
    @FUZZ
    @given(
        account=st.sampled_from([AD_ACCOUNT, "1", "abc"]),
        query=query_strings(["test"]),
        headers=auth_headers(target),
        body=bodies(pinterest_event()),
    )
    def run(account: str, query: str, headers: dict[str, str], body: tuple[str, bytes]) -> None:
        check(target, "POST", f"/v5/ad_accounts/{account}/events{query}", headers, body)

    before = check_written_and_logged(target)
    run()
    assert check_written_and_logged(target) > before, "some fuzzed requests were valid"


def test_the_meta_endpoint(target: Target) -> None:
    token = st.sampled_from([target.tokens.shop, "wrong", ""])

    @FUZZ
    @given(
        version=st.sampled_from(["v25.0", "v19.0"]),
        pixel=st.sampled_from([PIXEL_ID, "42"]),
        token=token,
        query=query_strings(["appsecret_proof"]),
        headers=auth_headers(target),
        body=bodies(meta_event()),
    )
    def run(
        version: str,
        pixel: str,
        token: str,
        query: str,
        headers: dict[str, str],
        body: tuple[str, bytes],
    ) -> None:
        separator = "&" if query else "?"
        path = f"/{version}/{pixel}/events{query}{separator}access_token={token}"
        check(target, "POST", path, headers, body)

    before = check_written_and_logged(target)
    run()
    assert check_written_and_logged(target) > before, "some fuzzed requests were valid"


def test_the_pinterest_customer_list_endpoint(target: Target) -> None:
    records = st.lists(
        st.sampled_from(
            [
                EMAIL,
                "A" * 64,
                "b" * 40,
                "c" * 32,
                "x",
                "",
                " ,",
                "38400000-8cf0-11bd-b23e-10b96e40000d",
            ]
        )
        | st.text(max_size=12),
        max_size=6,
    ).map(",".join)
    template = {"records": EMAIL, "operation_type": "ADD"}
    documents = st.one_of(
        mutated(template),
        st.fixed_dictionaries(
            {"records": records, "operation_type": st.sampled_from(["ADD", "REMOVE", "add", ""])}
        ),
    )
    body = st.one_of(
        st.tuples(st.just("application/json"), documents.map(lambda d: json.dumps(d).encode())),
        st.tuples(st.sampled_from(["application/json", "text/plain", ""]), st.binary(max_size=200)),
    )

    @FUZZ
    @given(
        method=st.sampled_from(["PATCH", "PATCH", "GET", "POST"]),
        account=st.sampled_from([AD_ACCOUNT, "1"]),
        list_id=st.sampled_from([LIST_ID, "644", "abc"]),
        headers=auth_headers(target),
        body=body,
    )
    def run(
        method: str, account: str, list_id: str, headers: dict[str, str], body: tuple[str, bytes]
    ) -> None:
        path = f"/v5/ad_accounts/{account}/customer_lists/{list_id}"
        check(target, method, path, headers, body)

    before = check_written_and_logged(target)
    run()
    assert check_written_and_logged(target) > before, "some fuzzed requests were valid"


def test_the_meta_custom_audience_endpoint(target: Target) -> None:
    template = {
        "schema": ["EMAIL", "PHONE", "DATA_PROCESSING_OPTIONS"],
        "data": [[EMAIL, "+1 650 555 1212", ["LDU"]]],
    }
    payloads = mutated(template).map(json.dumps) | st.text(max_size=30)
    sessions = st.none() | st.sampled_from(['{"session_id": 1}', '{"session_id": "x"}', "[]", "{"])

    @FUZZ
    @given(
        method=st.sampled_from(["POST", "DELETE"]),
        audience=st.sampled_from([AUDIENCE_ID, "644", "42"]),
        token=st.sampled_from([target.tokens.shop, "wrong", ""]),
        payload=payloads,
        session=sessions,
        in_query=st.booleans(),
        headers=auth_headers(target),
    )
    def run(
        method: str,
        audience: str,
        token: str,
        payload: str,
        session: str | None,
        in_query: bool,
        headers: dict[str, str],
    ) -> None:
        fields = {"payload": payload, "access_token": token}
        if session is not None:
            fields["session"] = session
        if in_query:
            path = f"/v25.0/{audience}/users?{urlencode(fields)}"
            body: tuple[str, bytes] = ("", b"")
        else:
            path = f"/v25.0/{audience}/users"
            body = ("application/x-www-form-urlencoded", urlencode(fields).encode())
        check(target, method, path, headers, body)

    before = check_written_and_logged(target)
    run()
    assert check_written_and_logged(target) > before, "some fuzzed requests were valid"


@pytest.mark.parametrize(
    ("path", "dialect_template"), [("/v1/events", "native"), ("/v1/widget", "widget")]
)
def test_the_native_endpoints(target: Target, path: str, dialect_template: str) -> None:
    template = native_event() if dialect_template == "native" else widget_event()

    @FUZZ
    @given(query=query_strings([]), headers=auth_headers(target), body=bodies(template))
    def run(query: str, headers: dict[str, str], body: tuple[str, bytes]) -> None:
        check(target, "POST", f"{path}{query}", headers, body)

    before = check_written_and_logged(target)
    run()
    assert check_written_and_logged(target) > before, "some fuzzed requests were valid"


BEACON_KEYS = {
    "/v3/": [
        "tid",
        "event",
        "ed",
        "pd",
        "ad",
        "cb",
        "epik",
        "pd[em]",
        "ed[value]",
        "pd[opt_out_type]",
    ],
    "/tr": [
        "id",
        "ev",
        "eid",
        "dl",
        "cd[value]",
        "cd[content_ids]",
        "ud[em]",
        "fbc",
        "fbp",
        "dpo",
        "vdpo",
    ],
    "/v1/tag": [
        "advertiser_id",
        "event_id",
        "event_name",
        "event_time",
        "value",
        "em",
        "user_id",
        "opt_out",
    ],
}
BEACON_IDS = {
    "/v3/": ("tid", TAG_ID),
    "/tr": ("id", PIXEL_ID),
    "/v1/tag": ("advertiser_id", "shop-1"),
}


@pytest.mark.parametrize("path", sorted(BEACON_KEYS))
def test_the_beacons(target: Target, path: str) -> None:
    key, registered = BEACON_IDS[path]
    values = st.text(max_size=40) | st.sampled_from(
        ["LDP", "LDU", EMAIL, "72.39", '{"em":"x"}', "[1,2]", "fb.1.1.AbC", "{broken"]
    )
    pairs = st.lists(st.tuples(st.sampled_from(BEACON_KEYS[path]), values), max_size=6)

    @FUZZ
    @given(
        pairs=pairs,
        known=st.booleans(),
        method=st.sampled_from(["GET", "POST"] if path != "/v1/tag" else ["GET"]),
        headers=auth_headers(target),
        body=st.binary(max_size=200),
    )
    def run(
        pairs: list[tuple[str, str]], known: bool, method: str, headers: dict[str, str], body: bytes
    ) -> None:
        if known:
            pairs = [(key, registered), *pairs]
        content = ("application/x-www-form-urlencoded", body if method == "POST" else b"")
        check(target, method, f"{path}?{urlencode(pairs)}", headers, content)

    before = check_written_and_logged(target)
    run()
    assert check_written_and_logged(target) > before, "some fuzzed beacons were valid"
