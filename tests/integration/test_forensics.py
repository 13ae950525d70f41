"""`explain` and `dlq` against a real broker and worker: answers, bounds, no personal data."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from pipeline import catalogue
from pipeline.core.parse import Rejected
from pipeline.core.route import Origin, dlq_record
from pipeline.forensics.dlq import REPLAYED_HEADER
from pipeline.settings import Settings
from schemas import codec
from tests.integration.conftest import WorkerProcess, process_env
from tests.integration.kafka_io import Read, produce_sync, read_sync, signed

pytestmark = pytest.mark.integration

ADVERTISER = "adv-forensics"
USER = "forensics-user-1"
HASHED_EMAIL = "a" * 64


def cli(
    settings: Settings, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = process_env(settings)
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def event(event_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "event_name": "checkout",
        "event_time": int(time.time()) - 5,
        "action_source": "web",
        "advertiser_id": ADVERTISER,
        "user_id": USER,
        "user_data": {"em": [HASHED_EMAIL]},
        "browser": {"ip": "203.0.113.9"},
        **extra,
    }


def audits(settings: Settings, n: int) -> list[Read]:
    audit = settings.topic(catalogue.AUDIT)
    got = read_sync(settings.kafka_bootstrap_servers, [audit], lambda g: len(g[audit]) >= n)
    return got[audit]


def no_personal_data(text: str) -> None:
    for value in (USER, HASHED_EMAIL, "203.0.113"):
        assert value not in text


@pytest.fixture
def decided(
    pipeline_settings: Settings, start_worker: Callable[[Settings], WorkerProcess]
) -> Settings:
    """A worker that decided: one event of a user who turned personalization off, a copy
    of it, and one event too old to decide."""
    settings = pipeline_settings
    worker = start_worker(settings)
    worker.wait_ready()
    change = {
        "user_id": USER,
        "changed_at": int(time.time() * 1000) - 60_000,
        "settings": {"personalization": False},
        "profile": {"country": "US", "birth_year": 1985},
    }
    produce_sync(
        settings.kafka_bootstrap_servers,
        [(settings.topic(catalogue.CONSENT_CHANGES), USER.encode(), codec.dumps(change))],
    )
    time.sleep(1.0)
    raw_tag = settings.topic(catalogue.RAW_TAG)
    value = codec.dumps(event("evt-denied"))
    stale = codec.dumps(event("evt-stale", event_time=int(time.time()) - 30 * 86400))
    produce_sync(
        settings.kafka_bootstrap_servers,
        [
            signed(raw_tag, USER.encode(), value),
            signed(raw_tag, USER.encode(), value),
            signed(raw_tag, USER.encode(), stale),
        ],
    )
    audits(settings, 2)
    return settings


def test_explain_says_why_an_event_was_not_used_for_ads(decided: Settings) -> None:
    started = time.monotonic()
    done = cli(decided, "explain", "--advertiser", ADVERTISER, "--event-id", "evt-denied")
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 30
    out = done.stdout
    assert "Not used to personalize ads because Personalization is off in your settings" in out
    assert "account.personalization_off: denies personalization, ads" in out
    assert "source: Help centre, Personalization and data" in out
    assert "Subject: named by a trusted producer's user id." in out
    assert "acknowledged by Kafka at" in out
    assert "Duplicate: no (1 later copy was audited as duplicates" in out
    assert "Records written: " in out
    written = out.split("Records written: ")[1].splitlines()[0]
    assert written == f"{decided.topic(catalogue.DEIDENTIFIED)}."
    no_personal_data(out + done.stderr)


def test_explain_json_and_the_other_ways_to_name_an_event(decided: Settings) -> None:
    done = cli(decided, "explain", "--advertiser", ADVERTISER, "--event-id", "evt-denied", "--json")
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    audit = body["audit"]
    assert audit["outcomes"]["ads"]["outcome"] == "deny"
    codes = {reason["code"]: reason for reason in audit["reasons"]}
    assert codes["account.personalization_off"]["denies"] == ["personalization", "ads"]
    assert audit["consent_acknowledged"]["topic"] == decided.topic(catalogue.CONSENT_CHANGES)
    no_personal_data(done.stdout)

    origin = audit["origin"]
    by_raw = cli(
        decided,
        "explain",
        "--topic",
        origin["topic"],
        "--partition",
        str(origin["partition"]),
        "--offset",
        str(origin["offset"]),
        "--json",
    )
    assert by_raw.returncode == 0, by_raw.stderr
    assert json.loads(by_raw.stdout)["audit"]["at"] == audit["at"]

    at = audit["at"]
    by_audit = cli(decided, "explain", "--audit", f"{at['partition']}:{at['offset']}", "--json")
    assert json.loads(by_audit.stdout)["audit"]["event_id"] == "evt-denied"

    missing = cli(decided, "explain", "--advertiser", ADVERTISER, "--event-id", "evt-nowhere")
    assert missing.returncode == 1
    assert "No audit record and no dead letter found" in missing.stdout


def test_explain_finds_a_dead_letter_and_dlq_lists_and_shows_it(decided: Settings) -> None:
    done = cli(decided, "explain", "--advertiser", ADVERTISER, "--event-id", "evt-stale")
    assert done.returncode == 0, done.stderr
    assert "Dead-lettered: too_old" in done.stdout
    no_personal_data(done.stdout)

    listed = cli(decided, "dlq", "list", "--records", "5")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if "too_old" in line)
    assert decided.topic(catalogue.RAW_TAG) in row
    assert row.split()[2] == "1"
    no_personal_data(listed.stdout)

    dlq = decided.topic(catalogue.DLQ)
    coordinates = next(
        line.split()[0] for line in listed.stdout.splitlines() if line.startswith(dlq + ":")
    )
    _, partition, offset = coordinates.rsplit(":", 2)
    origin = next(
        line.split()[2] for line in listed.stdout.splitlines() if line.startswith(dlq + ":")
    )
    raw_topic, raw_partition, raw_offset = origin.rsplit(":", 2)
    by_raw = cli(
        decided,
        "explain",
        "--topic",
        raw_topic,
        "--partition",
        raw_partition,
        "--offset",
        raw_offset,
    )
    assert by_raw.returncode == 0, by_raw.stderr
    assert by_raw.stdout.startswith("Dead-lettered: too_old")
    shown = cli(decided, "dlq", "show", "--partition", partition, "--offset", offset)
    assert "too_old" in shown.stdout
    assert "payload:  not shown" in shown.stdout
    no_personal_data(shown.stdout)
    revealed = cli(
        decided, "dlq", "show", "--partition", partition, "--offset", offset, "--show-payload"
    )
    assert "personal data" in revealed.stderr
    assert "evt-stale" in revealed.stdout


def test_a_replay_is_a_dry_run_until_yes_and_safe_to_run_twice(
    pipeline_settings: Settings, start_worker: Callable[[Settings], WorkerProcess]
) -> None:
    """A valid event in the DLQ (as one is after a bug since fixed) goes back once, with a
    header naming its dead letter; a second replay is audited as a duplicate."""
    settings = pipeline_settings
    raw_tag = settings.topic(catalogue.RAW_TAG)
    value = codec.dumps(event("evt-replayed"))
    letter = dlq_record(
        Rejected("processing_error", "decision: RuntimeError"),
        data=value,
        key=USER.encode(),
        origin=Origin(raw_tag, 0, 0),
        received_at=time.time(),
    )
    ((_, partition, offset),) = produce_sync(
        settings.kafka_bootstrap_servers,
        [(settings.topic(catalogue.DLQ), letter.key, codec.dumps(letter.record))],
    )

    dry = cli(settings, "dlq", "replay", "--reason", "processing_error")
    assert dry.returncode == 0, dry.stderr
    assert "would send 1 dead letters" in dry.stdout
    assert "a dry run: nothing written" in dry.stdout

    worker = start_worker(settings)
    worker.wait_ready()
    for _ in range(2):
        sent = cli(settings, "dlq", "replay", "--reason", "processing_error", "--yes")
        assert "acknowledged by Kafka: 1" in sent.stdout, sent.stderr
    records = audits(settings, 2)
    assert sorted(r.json()["duplicate"] for r in records) == [False, True]
    replayed = read_sync(
        settings.kafka_bootstrap_servers, [raw_tag], lambda got: len(got[raw_tag]) >= 2
    )[raw_tag]
    named = f"{settings.topic(catalogue.DLQ)}:{partition}:{offset}"
    assert [dict(r.headers)[REPLAYED_HEADER].decode() for r in replayed] == [named, named]
    assert base64.b64decode(letter.record["original"]) == replayed[0].value


def test_decide_resolves_from_the_topics_as_the_worker_would(pipeline_settings: Settings) -> None:
    settings = pipeline_settings
    key = f"em:{HASHED_EMAIL}"
    link = {"match_key": key, "user_id": USER, "linked_at": int(time.time() * 1000) - 5000}
    change = {
        "user_id": USER,
        "changed_at": int(time.time() * 1000) - 5000,
        "settings": {"partner_sharing": False},
        "profile": {"country": "US", "birth_year": 1985},
    }
    produce_sync(
        settings.kafka_bootstrap_servers,
        [
            (settings.topic(catalogue.IDENTITY_LINKS), key.encode(), codec.dumps(link)),
            (settings.topic(catalogue.CONSENT_CHANGES), USER.encode(), codec.dumps(change)),
        ],
    )
    anonymous = event("evt-offline")
    del anonymous["user_id"]
    line = json.dumps({"source": "tag", "event": anonymous})
    done = cli(settings, "decide", "--from-kafka", stdin=line + "\n")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["subject"]["match"] == "em"
    assert out["reasons"] == ["account.sharing_off"]
    assert out["said"]["partner_sharing"] == (
        "Not shared with partners because sharing with partners is off in your settings."
    )
