"""The offline `decide` command: the policy's outcomes per line, DLQ reasons for bad lines."""

from __future__ import annotations

import io
from collections import defaultdict
from typing import Any

import pytest

from pipeline.core.policy import PolicyConfig
from pipeline.offline.replay import run_decide
from schemas import codec
from tests.unit.core.policy_cases import CASES, US_ADULT, Case
from tests.unit.factories import NOW, USER, tag_event

BIG_EVENT = tag_event(padding="x" * 70_000)
DECISION_FIELDS = ("event_id", "outcomes", "reasons", "policy_version")


def run(
    lines: list[bytes], config: PolicyConfig | None = None, **kwargs: Any
) -> tuple[int, list[Any], str]:
    source = io.BytesIO(b"".join(line + b"\n" for line in lines))
    sink, errors = io.BytesIO(), io.StringIO()
    kwargs.setdefault("clock", lambda: float(NOW))

    code = run_decide(source, sink, errors, config or PolicyConfig(), **kwargs)

    return code, [codec.loads(line) for line in sink.getvalue().splitlines()], errors.getvalue()


def request(source: str = "tag", event: Any = None, consent: Any = US_ADULT, **extra: Any) -> bytes:
    return codec.dumps(
        {
            "source": source,
            "event": tag_event() if event is None else event,
            "consent": consent,
            **extra,
        }
    )


def error(line: int, reason: str, detail: str) -> dict[str, Any]:
    return {"line": line, "error": {"reason": reason, "detail": detail}}


def test_decide_gives_the_spec_outcome_and_reasons_for_every_rule() -> None:
    by_config: dict[str, list[Case]] = defaultdict(list)
    for case in CASES:
        by_config[repr(sorted(case.config.items()))].append(case)

    for cases in by_config.values():
        lines = [request(case.source, case.event, case.consent, now=NOW) for case in cases]
        code, outputs, _ = run(lines, PolicyConfig(**cases[0].config))

        assert code == 0
        for case, output in zip(cases, outputs, strict=True):
            personalization, ads, measurement, sharing = case.outcomes
            decided = {name: output[name] for name in DECISION_FIELDS}
            assert decided == {
                "event_id": case.event["event_id"],
                "outcomes": {
                    "personalization": personalization,
                    "ads": ads,
                    "measurement": measurement,
                    "partner_sharing": sharing,
                },
                "reasons": list(case.reasons),
                "policy_version": "v1",
            }, case.rule


def test_consent_changes_may_come_in_any_order() -> None:
    changes = [
        {"user_id": USER, "changed_at": 3, "settings": {"personalization": True}},
        {"user_id": USER, "changed_at": 1, "profile": {"country": "US", "birth_year": 1980}},
        {"user_id": USER, "changed_at": 2, "settings": {"personalization": False}},
    ]

    _, outputs, _ = run([request(consent=changes), request(consent=changes[::-1])])

    assert outputs[0] == outputs[1]
    assert outputs[0]["outcomes"]["personalization"] == "allow"


def test_now_defaults_to_the_start_time() -> None:
    old = tag_event(event_time=NOW - 30 * 86_400)

    _, outputs, _ = run([request(event=old), request(event=old, now=NOW - 30 * 86_400)])

    assert outputs[0] == error(1, "too_old", "event.event_time: too_old")
    assert outputs[1]["event_id"] == "evt-1"


def test_raw_contact_points_are_hashed_as_the_pipeline_would() -> None:
    event = tag_event(user_data={"em": ["Alice@Example.com"]})

    _, outputs, _ = run([request(event=event)])

    assert outputs[0]["reasons"] == []


@pytest.mark.parametrize(
    ("line", "expected_error"),
    [
        (b"not json", ("invalid_json", "body: json_invalid")),
        (b"", ("invalid_json", "body: empty")),
        (
            b'{"source": "tag", "event": "caf\xe9"}',
            ("invalid_utf8", "body: invalid_utf8 at byte 31"),
        ),
        (b"[1, 2]", ("schema_violation", "line: model_type")),
        (codec.dumps({"event": tag_event()}), ("schema_violation", "source: missing")),
        (request(source="email"), ("schema_violation", "source: literal_error")),
        (codec.dumps({"source": "tag"}), ("schema_violation", "event: missing")),
        (codec.dumps({"source": "tag", "event": []}), ("schema_violation", "event: model_type")),
        (request(consent={"user_id": USER}), ("schema_violation", "consent: list_type")),
        (request(now="yesterday"), ("schema_violation", "now: float_type")),
        (request(now=True), ("schema_violation", "now: float_type")),
        (
            request(event=tag_event(event_name="purchase")),
            ("schema_violation", "event.event_name: literal_error"),
        ),
        (
            request(consent=[{"user_id": USER, "changed_at": "soon"}]),
            ("schema_violation", "consent.0.changed_at: int_type"),
        ),
        (
            request(consent=[*US_ADULT, {"user_id": "user-2", "changed_at": 5}]),
            ("schema_violation", "consent.1.user_id: user_mismatch"),
        ),
        (
            request(event=tag_event(event_time=NOW - 8 * 86_400), now=NOW),
            ("too_old", "event.event_time: too_old"),
        ),
        (
            request(event=tag_event(event_time=NOW + 7200), now=NOW),
            ("in_future", "event.event_time: in_future"),
        ),
        (
            request(event=BIG_EVENT),
            ("oversized", f"event: oversized ({len(codec.dumps(BIG_EVENT))} > 65536 bytes)"),
        ),
    ],
)
def test_an_invalid_line_is_reported_with_a_dlq_code(
    line: bytes, expected_error: tuple[str, str]
) -> None:
    code, outputs, _ = run([request(), line, request()])

    assert code == 0
    assert outputs[1] == error(2, *expected_error)
    assert outputs[0]["event_id"] == outputs[2]["event_id"] == "evt-1"


def test_consent_for_an_anonymous_event_is_ignored() -> None:
    event = tag_event(user_id=...)

    _, outputs, _ = run([request(event=event, consent=[{"user_id": "someone", "changed_at": 1}])])

    assert outputs[0]["reasons"] == ["subject.anonymous"]


def test_a_line_over_the_limit_is_oversized_and_the_next_line_still_decided() -> None:
    code, outputs, _ = run([request(), b"x" * 5_000, request()], max_line_bytes=1_000)

    assert code == 0
    assert outputs[1] == error(2, "oversized", "line: oversized")
    assert outputs[2]["event_id"] == "evt-1"


def test_windows_line_endings_are_accepted() -> None:
    _, outputs, _ = run([request() + b"\r"])

    assert outputs[0]["event_id"] == "evt-1"


def test_summary_goes_to_stderr() -> None:
    _, _, summary = run([request(), b"nope", request(source="x")])

    assert summary == (
        "decide: 3 lines, 1 decided, 2 rejected (invalid_json: 1, schema_violation: 1)\n"
    )


def test_details_never_contain_the_values() -> None:
    secret = "S3CR3T-alice@example.com"
    lines = [
        request(event=tag_event(event_id=[secret], user_id={secret: secret})),
        request(consent=[{"user_id": USER, "changed_at": 1, "profile": {"country": secret}}]),
        request(source=secret),
        request(now=secret),
    ]

    _, outputs, summary = run(lines)

    dumped = codec.dumps(outputs).decode() + summary
    assert "S3CR3T" not in dumped
    assert "alice" not in dumped


class BrokenInput(io.BytesIO):
    def readline(self, size: int | None = -1, /) -> bytes:
        raise OSError("device unplugged")


def test_unreadable_input_exits_non_zero() -> None:
    errors = io.StringIO()

    code = run_decide(BrokenInput(), io.BytesIO(), errors, PolicyConfig())

    assert code == 1
    assert errors.getvalue() == "decide: cannot read input after line 0 (OSError)\n"


def test_empty_input_decides_nothing() -> None:
    code, outputs, summary = run([])

    assert (code, outputs) == (0, [])
    assert summary == "decide: 0 lines, 0 decided, 0 rejected\n"


def member_line(consent: Any = US_ADULT, user_id: Any = USER, **member: Any) -> bytes:
    document = {
        "advertiser_id": "adv-1",
        "audience_id": "643",
        "operation": "add",
        "match_keys": {"em": ["a" * 64]},
        "uploaded_at": NOW * 1000,
        **member,
    }
    return codec.dumps(
        {"source": "audience", "member": document, "user_id": user_id, "consent": consent}
    )


def test_customer_list_members_are_decided_as_the_pipeline_does() -> None:
    off = [*US_ADULT, {"user_id": USER, "changed_at": 2, "settings": {"personalization": False}}]
    code, out, _ = run(
        [
            member_line(),
            member_line(consent=off),
            member_line(consent=None),
            member_line(user_id=None),
            member_line(opt_out_type="LDP"),
        ]
    )

    assert code == 0
    assert [line["membership"] for line in out] == ["allow", "deny", "deny", "deny", "deny"]
    assert out[0]["reasons"] == []
    assert out[0]["consent_version"] is not None
    assert out[1]["reasons"] == ["account.personalization_off"]
    assert out[2]["reasons"] == ["consent.missing"]
    assert out[3]["reasons"] == ["subject.anonymous"]
    assert out[4]["reasons"] == ["event.ldp"]
    assert len({line["member_id"] for line in out}) == 2, "the LDP upload is another record"


def test_bad_member_lines_are_reported_with_a_dlq_code() -> None:
    other = [{"user_id": "someone-else", "changed_at": 1, "settings": {}}]
    _, out, _ = run(
        [
            member_line(match_keys={}),
            member_line(user_id=7),
            member_line(consent=other),
            codec.dumps({"source": "audience"}),
        ]
    )

    assert out == [
        error(1, "schema_violation", "member: value_error"),
        error(2, "schema_violation", "user_id: string_type"),
        error(3, "schema_violation", "consent.0.user_id: user_mismatch"),
        error(4, "schema_violation", "member: missing"),
    ]
