"""Poison pills drawn by hypothesis: arbitrary bytes, arbitrary JSON and broken events.

The pills are drawn once, deterministically for a seed, with hypothesis' generation
phase only (no database, no shrinking), and mixed into the load. Families:

- arbitrary bytes and arbitrary JSON documents;
- valid canary events with one to four mutations: a field replaced by any JSON value or
  by a canary value in the wrong shape (so a detail that quoted values would leak it),
  a required field removed, unknown fields added;
- the same, truncated, with invalid UTF-8 spliced in, nested thousands deep or made
  larger than `PIPELINE_MAX_EVENT_BYTES`;
- keys that are missing, empty, arbitrary bytes or a canary user id.

Some mutations leave an event valid; it is then decided like any other. Every pill must
end in exactly one audit or DLQ record, and no worker may crash or stall on one.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from typing import Any, Final

from pipeline import catalogue
from pipeline.catalogue import Topic
from pipeline.sim.traffic import Record
from schemas import codec
from tests.chaos.pii import CanarySet

RAW_TOPICS: Final = tuple(catalogue.RAW.values())
_PATHS: Final = (
    ("event_id",),
    ("event_name",),
    ("event_time",),
    ("action_source",),
    ("advertiser_id",),
    ("user_id",),
    ("surface",),
    ("opt_out",),
    ("opt_out_type",),
    ("user_data",),
    ("user_data", "em"),
    ("user_data", "client_ip_address"),
    ("user_data", "hashed_maids"),
    ("browser",),
    ("browser", "dnt"),
    ("browser", "cookie_id"),
    ("device",),
    ("device", "att_status"),
    ("device", "os_version"),
    ("device", "advertising_id"),
    ("custom_data",),
    ("custom_data", "value"),
    ("custom_data", "content_ids"),
    ("widget_type",),
    ("page_url",),
)
_MISPLACED: Final = (
    ("event_time",),
    ("event_name",),
    ("action_source",),
    ("opt_out",),
    ("browser", "dnt"),
    ("device", "att_status"),
    ("custom_data", "value"),
    ("user_data", "em"),
    ("user_data", "client_ip_address"),
)
"""Fields where a canary string is invalid, so the event is rejected naming the field."""


def draw_pills(n: int, seed: int, canaries: CanarySet) -> list[Record]:
    """`n` poison pills (fewer if hypothesis draws duplicates), the same for the same seed."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis import strategies as st

    # Not the load's own seed: a template must not share an event id with a canary event.
    rng = random.Random(seed ^ 0x5EED_F00D)
    templates = [codec.loads(canaries.event(rng).value or b"") for _ in range(24)]
    canary_values = canaries.all_values()
    leaf = (
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**63), max_value=2**64 - 1)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=40)
        | st.sampled_from(canary_values)
    )
    json_value = st.recursive(
        leaf,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
        max_leaves=20,
    )
    mutation = st.one_of(
        st.tuples(st.just("set"), st.sampled_from(_PATHS), json_value),
        st.tuples(st.just("delete"), st.sampled_from(_PATHS), st.none()),
        st.tuples(
            st.just("unknown"), st.text(min_size=1, max_size=16).map(lambda s: (s,)), json_value
        ),
        st.tuples(
            st.just("misplace"),
            st.sampled_from(_MISPLACED),
            st.sampled_from(canary_values).map(lambda v: f"{v} !"),
        ),
    )
    mutated = st.builds(
        _mutate, st.sampled_from(templates), st.lists(mutation, min_size=1, max_size=4)
    )
    wrapped: Callable[[Any], Any] = _encode
    value = st.one_of(
        st.binary(max_size=400),
        json_value.map(wrapped),
        mutated.map(wrapped),
        mutated.map(wrapped),
        st.tuples(mutated.map(wrapped), st.integers(min_value=1, max_value=400)).map(
            lambda pair: pair[0][: pair[1]]
        ),
        st.tuples(mutated.map(wrapped), st.integers(min_value=0, max_value=300)).map(
            lambda pair: pair[0][: pair[1]] + b"\xff\xfe\xc3" + pair[0][pair[1] :]
        ),
        st.integers(min_value=100, max_value=4000).map(lambda depth: b"[" * depth + b"]" * depth),
        st.tuples(st.sampled_from(templates), st.integers(min_value=70_000, max_value=150_000)).map(
            _oversized
        ),
    )
    key_shapes: dict[str, Any] = {
        "user": st.sampled_from([user.user_id.encode() for user in canaries.users]),
        "none": st.none(),
        "empty": st.just(b""),
        "bytes": st.binary(min_size=1, max_size=40),
    }
    # Most pills keep a proper key, so they reach validation instead of `missing_key`.
    key = st.sampled_from(["user"] * 7 + ["none", "empty", "bytes"]).flatmap(
        lambda shape: key_shapes[shape]
    )
    pills: list[Record] = []

    @hypothesis_seed(seed)
    @settings(
        database=None,
        max_examples=n,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        deadline=None,
    )
    @given(st.sampled_from(RAW_TOPICS), key, value)
    def collect(topic: Topic, key: bytes | None, value: bytes) -> None:
        pills.append(Record(topic, key, value, "pill"))

    collect()
    return pills[:n]


def _encode(document: Any) -> bytes:
    try:
        return codec.dumps(document)
    except (codec.EncodeError, TypeError):
        return repr(document).encode("utf-8", "surrogateescape")


def _mutate(template: dict[str, Any], mutations: list[tuple[str, tuple[str, ...], Any]]) -> Any:
    event = copy.deepcopy(template)
    for op, path, value in mutations:
        parent: Any = event
        for part in path[:-1]:
            if not isinstance(parent, dict):
                break
            parent = parent.setdefault(part, {})
        if not isinstance(parent, dict):
            continue
        name = path[-1]
        if op == "delete":
            parent.pop(name, None)
        elif op == "misplace" and name in ("em",):
            parent[name] = [value]
        else:
            parent[name] = value
    return event


def _oversized(pair: tuple[dict[str, Any], int]) -> bytes:
    template, size = pair
    event = copy.deepcopy(template)
    event["custom_data"] = {"content_ids": ["x" * 100] * (size // 104)}
    return codec.dumps(event)
