"""The fencing messages aiokafka lacks, byte for byte as Kafka's message definitions lay
them out (flexible versions: compact strings and arrays, tagged fields)."""

from __future__ import annotations

import struct

from pipeline.kafka import protocol


def _compact(text: str | None) -> bytes:
    if text is None:
        return b"\x00"
    data = text.encode()
    return bytes([len(data) + 1]) + data


def test_a_fenced_offset_commit_names_its_member_and_generation() -> None:
    request = protocol.TxnOffsetCommitRequest(
        transactional_id="app.w0",
        group_id="app",
        producer_id=7,
        producer_epoch=2,
        generation_id=5,
        member_id="m-1",
        group_instance_id=None,
        topics=[("events", [(0, 42)])],
    )
    struct_ = request.prepare({protocol.TXN_OFFSET_COMMIT: (0, 3)})

    assert struct_.API_VERSION == 3
    assert struct_.FLEXIBLE_VERSION
    assert struct_.encode() == (
        _compact("app.w0")
        + _compact("app")
        + struct.pack(">qhi", 7, 2, 5)
        + _compact("m-1")
        + _compact(None)  # group_instance_id: null
        + b"\x02"  # one topic
        + _compact("events")
        + b"\x02"  # one partition
        + struct.pack(">iqi", 0, 42, -1)  # partition, offset, leader epoch unknown
        + _compact("")  # metadata
        + b"\x00"  # partition tags
        + b"\x00"  # topic tags
        + b"\x00"  # request tags
    )


def test_a_stable_offset_fetch_asks_the_coordinator_to_wait_for_pending_commits() -> None:
    request = protocol.StableOffsetFetchRequest("app", [("events", [0, 3])])
    struct_ = request.prepare({protocol.OFFSET_FETCH: (0, 9)})

    assert struct_.API_VERSION == 7
    assert struct_.encode() == (
        _compact("app")
        + b"\x02"
        + _compact("events")
        + b"\x03"
        + struct.pack(">ii", 0, 3)
        + b"\x00"
        + b"\x01"  # require_stable
        + b"\x00"
    )


def test_a_broker_older_than_kafka_2_5_cannot_be_asked() -> None:
    request = protocol.StableOffsetFetchRequest("app", [])

    try:
        request.prepare({protocol.OFFSET_FETCH: (0, 6)})
    except NotImplementedError:
        return
    raise AssertionError("OffsetFetch v7 prepared for a broker that lacks it")


def test_the_answers_decode_with_their_error_codes() -> None:
    commit = (
        struct.pack(">i", 0)
        + b"\x02"
        + _compact("events")
        + b"\x02"
        + struct.pack(">ih", 0, protocol.ILLEGAL_GENERATION)
        + b"\x00\x00\x00"
    )
    decoded = protocol.TxnOffsetCommitResponse_v3.decode(commit)
    assert [(t, [(p, e) for p, e, _ in ps]) for t, ps, _ in decoded.topics] == [
        ("events", [(0, protocol.ILLEGAL_GENERATION)])
    ]

    fetch = (
        struct.pack(">i", 0)
        + b"\x02"
        + _compact("events")
        + b"\x03"
        + struct.pack(">iqi", 0, 42, -1)
        + _compact("")
        + struct.pack(">h", 0)
        + b"\x00"
        + struct.pack(">iqi", 1, -1, -1)
        + _compact(None)
        + struct.pack(">h", protocol.UNSTABLE_OFFSET_COMMIT)
        + b"\x00"
        + b"\x00"
        + struct.pack(">h", 0)
        + b"\x00"
    )
    answer = protocol.OffsetFetchResponse_v7.decode(fetch)
    rows = [(p, offset, code) for _, ps, _ in answer.topics for p, offset, _, _, code, _ in ps]
    assert rows == [(0, 42, 0), (1, -1, protocol.UNSTABLE_OFFSET_COMMIT)]
    assert answer.error_code == 0
