"""`decide` finds the subject as the worker does, and says what it did not read."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from pipeline.core.policy import PolicyConfig
from pipeline.core.reasons import sentence
from pipeline.offline.replay import run_decide
from pipeline.offline.snapshot import SnapshotError, load_files
from schemas import codec
from tests.unit.factories import NOW, tag_event

EMAIL_KEY = "em:" + "b" * 64
PHONE_KEY = "ph:" + "c" * 64


def decide_one(line: dict[str, Any], tmp_path: Path, **files: list[dict[str, Any]]) -> Any:
    paths = {}
    for name, records in files.items():
        paths[name] = tmp_path / f"{name}.jsonl"
        paths[name].write_bytes(b"".join(codec.dumps(r) + b"\n" for r in records))
    snapshot = load_files(paths.get("links"), paths.get("consent")) if files else None
    sink, errors = io.BytesIO(), io.StringIO()
    source = io.BytesIO(codec.dumps(line) + b"\n")
    assert (
        run_decide(
            source, sink, errors, PolicyConfig(), clock=lambda: float(NOW), snapshot=snapshot
        )
        == 0
    )
    return codec.loads(sink.getvalue())


def anonymous_event(**user_data: Any) -> dict[str, Any]:
    event = tag_event(user_data={"em": ["b" * 64], "ph": ["c" * 64], **user_data})
    event.pop("user_id", None)
    return event


PROFILE = {"country": "US", "birth_year": 1980}


def test_match_keys_resolve_through_the_links_and_take_that_users_consent(
    tmp_path: Path,
) -> None:
    out = decide_one(
        {"source": "tag", "event": anonymous_event()},
        tmp_path,
        links=[
            {"match_key": EMAIL_KEY, "user_id": "u-1", "linked_at": 5},
            {"match_key": PHONE_KEY, "user_id": "u-2", "linked_at": 5},
        ],
        consent=[
            {
                "user_id": "u-1",
                "changed_at": 1,
                "profile": PROFILE,
                "settings": {"personalization": False},
            }
        ],
    )
    assert out["subject"] == {
        "match": "em",
        "conflict": True,
        "said": "found by a hashed email address",
    }
    assert out["reasons"] == ["account.personalization_off"]
    assert out["said"]["ads"] == sentence("ads", "deny", out["reasons"])
    assert "ignored" not in out


def test_an_unlink_wins_over_an_older_link_and_the_next_key_resolves(tmp_path: Path) -> None:
    out = decide_one(
        {"source": "tag", "event": anonymous_event()},
        tmp_path,
        links=[
            {"match_key": EMAIL_KEY, "user_id": "u-1", "linked_at": 5},
            {"match_key": EMAIL_KEY, "deleted": True, "linked_at": 6},
            {"match_key": PHONE_KEY, "user_id": "u-2", "linked_at": 5},
        ],
        consent=[{"user_id": "u-2", "changed_at": 1, "profile": PROFILE}],
    )
    assert out["subject"]["match"] == "ph"
    assert out["outcomes"]["ads"] == "allow"


def test_without_a_snapshot_the_event_is_anonymous_and_the_output_says_why(
    tmp_path: Path,
) -> None:
    out = decide_one({"source": "tag", "event": anonymous_event(), "user_id": "u-1"}, tmp_path)
    assert out["reasons"] == ["subject.anonymous"]
    assert out["subject"]["match"] == "none"
    assert out["ignored"][0].startswith("user_id: not read on an event line")
    assert "no identity snapshot given" in out["ignored"][1]


def test_a_bad_snapshot_line_names_its_file_and_line_not_its_content(tmp_path: Path) -> None:
    links = tmp_path / "links.jsonl"
    links.write_text(
        '{"match_key": "em:' + "b" * 64 + '", "user_id": "u-1", "linked_at": 5}\n'
        '{"match_key": "secret@example.org"}\n'
    )
    with pytest.raises(SnapshotError, match=r"links.jsonl: line 2: not an identity link") as info:
        load_files(links, None)
    assert "secret" not in str(info.value)
