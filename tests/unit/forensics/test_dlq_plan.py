"""What a replay sends and refuses, and how the commands read times; no broker."""

from __future__ import annotations

import argparse
import time

import pytest

from pipeline import catalogue
from pipeline.cli.forensics import when
from pipeline.forensics.dlq import Letter, Selection, plan, render_plan, render_show
from pipeline.settings import Settings


def letter(reason: str, origin: dict[str, object] | None, offset: int = 0) -> Letter:
    record = {
        "reason": reason,
        "detail": "event_time: too old",
        "origin": origin,
        "size": 3,
        "key": None,
        "original": "e30=",
    }
    return Letter(0, offset, 1_700_000_000_000, record)


def test_a_replay_sends_input_records_and_refuses_the_rest() -> None:
    settings = Settings(topic_prefix="p.")
    raw_tag = settings.topic(catalogue.RAW_TAG)
    ads = settings.topic(catalogue.ADS)
    chosen = plan(
        [
            letter("processing_error", {"topic": raw_tag, "partition": 0, "offset": 1}),
            letter("too_old", {"topic": raw_tag, "partition": 0, "offset": 2}, 1),
            letter("processing_error", None, 2),
            letter("processing_error", {"topic": ads, "partition": 0, "offset": 1}),
        ],
        settings,
    )
    assert [item.offset for item in chosen.send] == [0, 1]
    assert chosen.refused == {
        "no origin recorded": 1,
        f"origin {ads} is not an input topic": 1,
    }
    assert chosen.futile == {"too_old": 1}
    said = render_plan(chosen, "p.dlq", dry_run=True)
    assert "would send 2 dead letters" in said
    assert "a dry run: nothing written" in said


def test_show_hides_the_payload_unless_asked() -> None:
    item = letter("too_old", {"topic": catalogue.RAW_TAG.name, "partition": 0, "offset": 2})
    assert "{}" not in render_show(item, catalogue.DLQ.name, show_payload=False)
    assert "{}" in render_show(item, catalogue.DLQ.name, show_payload=True)


def test_a_selection_filters_by_reason_source_and_time() -> None:
    selection = Selection(reasons=frozenset({"too_old"}), until_ms=10)
    assert selection.wants({"reason": "too_old", "origin": None}, 5)
    assert not selection.wants({"reason": "too_old", "origin": None}, 11)
    assert not selection.wants({"reason": "in_future", "origin": None}, 5)
    by_source = Selection(sources=frozenset({catalogue.RAW_SDK.name}))
    assert not by_source.wants({"reason": "x", "origin": {"topic": catalogue.RAW_TAG.name}}, 0)


def test_times_are_durations_iso_or_unix_ms() -> None:
    assert abs(when("2h") - (time.time() - 7200) * 1000) < 5000
    assert when("1700000000000") == 1_700_000_000_000
    assert when("2023-11-14T22:13:20Z") == 1_700_000_000_000
    with pytest.raises(argparse.ArgumentTypeError, match="not a duration"):
        when("yesterday")
