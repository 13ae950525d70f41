"""The hot path's compiled decoder accepts and rejects exactly what the pydantic models do.

`decode_event` (msgspec, derived from the models) must give, for every input, what
`parse_event` (pydantic) gives: the same reject with the same DLQ reason and detail, or
an event with the same values, read the same way by the core (isinstance, properties).
Inputs are generated from the models' own fields, valid and broken in every way the
models constrain (types, bounds, patterns, lengths, literals, nesting), plus the
synthetic traffic's real events and raw JSON texts (duplicate keys, out-of-range numbers,
escapes, trailing newlines).
"""

from __future__ import annotations

import contextlib
import json
import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from pipeline import catalogue
from pipeline.core.parse import Rejected, decode_event, parse_event
from pipeline.sim.traffic import TrafficConfig, TrafficGenerator
from schemas import codec, fast
from schemas.events import EVENT_MODELS, Source
from schemas.internal import Found, Hop
from schemas.outputs import Origin
from tests.unit.factories import NOW

HEX = "0123456789abcdef"
EDGE_STRINGS = st.sampled_from(
    [
        "",
        "x",
        "a" * 64,
        "A" * 64,
        "a" * 63 + "\n",
        "a" * 64 + "\n",
        "USD",
        "usd",
        "US",
        "LDP",
        "LDP, other",
        "web",
        "tag",
        "app_ios",
        "authorized",
        "on_platform",
        "page_visit",
        "save_button",
        "192.0.2.1",
        "192.0.2.256",
        "010.0.0.1",
        "2001:db8::1",
        "2001:DB8:0:0::1",
        "::ffff:192.0.2.1",
        "1.2.3.4\n",
        "72.39",
        "1e3",
        " 1",
        "+.5",
        "nan",
        "inf",
        "1e400",
        "jane@example.com",
        "+1 555 0100",
        "é",
        "\u0000",
        "\ud7ff",
        "x" * 129,
        "x" * 257,
        "y" * 8193,
    ]
)
TEXT = st.one_of(
    st.text(max_size=12), EDGE_STRINGS, st.text(alphabet=HEX, min_size=64, max_size=64)
)
NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 1, 1_000_000, 1_000_001, 4_102_444_800, 4_102_444_801, 2**63, 2**64]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 1.5, 1e308, 72.39]),
)
ANY_SCALAR = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)


def values_for(annotation: Any, depth: int = 0) -> st.SearchStrategy[Any]:
    """Values for a field's type: mostly of the type, near and past its constraints."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return values_for(get_args(annotation)[0], depth)
    if origin in (Union, types.UnionType):
        return st.one_of(*(values_for(arg, depth) for arg in get_args(annotation)))
    if annotation is type(None):
        return st.none()
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return documents(annotation, depth + 1) if depth < 3 else st.just({})
    if origin is Literal:
        return st.one_of(st.sampled_from(get_args(annotation)), TEXT)
    if origin in (tuple, list):
        item = values_for(get_args(annotation)[0], depth)
        return st.one_of(
            st.lists(item, max_size=3),
            st.lists(st.just(HEX[:4] * 16), min_size=100, max_size=101),
            ANY_SCALAR,
        )
    if annotation is bool:
        return st.one_of(st.booleans(), st.sampled_from([0, 1, "true", None]))
    if annotation is int:
        return st.one_of(NUMBERS, st.booleans(), st.sampled_from([NOW, NOW - 10, "1"]))
    if annotation is float:
        return st.one_of(NUMBERS, TEXT, st.booleans())
    return st.one_of(TEXT, ANY_SCALAR)


def documents(model: type[BaseModel], depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    """JSON objects for `model`: each field present or not, of its type or any other."""
    required = {}
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for name, info in model.model_fields.items():
        strategy = st.one_of(values_for(info.annotation, depth), ANY_SCALAR)
        if info.is_required():
            required[name] = strategy
        else:
            optional[name] = strategy
    optional["unknown_field"] = ANY_SCALAR
    return st.fixed_dictionaries(required, optional=optional)


def realistic_events() -> list[tuple[Source, bytes]]:
    generator = TrafficGenerator(
        TrafficConfig(users=200, raw_contact_share=0.2, malformed_share=0.05),
        seed=11,
        clock=lambda: float(NOW),
    )
    out: list[tuple[Source, bytes]] = []
    for record in generator.records(400):
        source = record.topic.source
        if source in EVENT_MODELS and record.value is not None:
            out.append((source, record.value))  # type: ignore[arg-type]
    return out


REALISTIC = realistic_events()
SOURCES: tuple[Source, ...] = ("tag", "sdk", "widget")


@st.composite
def inputs(draw: st.DrawFn) -> tuple[Source, bytes]:
    kind = draw(st.integers(min_value=0, max_value=4))
    if kind == 0:
        source, data = draw(st.sampled_from(REALISTIC))
    else:
        source = draw(st.sampled_from(SOURCES))
        document = draw(documents(EVENT_MODELS[source]))
        if draw(st.booleans()):  # mostly valid times, so the rest of the event is checked
            document["event_time"] = draw(st.integers(min_value=NOW - 100, max_value=NOW))
        ascii_only = draw(st.booleans())  # the stdlib encoder: integers beyond 64 bits too
        data = json.dumps(document, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    mutation = draw(st.integers(min_value=0, max_value=9))
    if mutation == 0 and data.endswith(b"}"):  # a duplicate key: the last one counts
        name = draw(st.sampled_from([b"event_id", b"event_time", b"user_data", b"surface"]))
        value = draw(st.sampled_from([b"1", b'"x"', b"null", b"{}", b"1e400", b"[]"]))
        data = data[:-1] + b',"' + name + b'":' + value + b"}"
    elif mutation == 1:
        data = data + draw(st.sampled_from([b"\n", b" ", b"x", b"}", b"\x00"]))
    elif mutation == 2:
        data = data.replace(b'"', b'"\\u00', 1) if b'"' in data else data
    elif mutation == 3 and len(data) > 2:
        cut = draw(st.integers(min_value=1, max_value=len(data) - 1))
        data = data[:cut]
    elif mutation == 4:
        data = data.replace(b'"web"', b'"w\\u0065b"').replace(b"1.5", b"1.5e400")
    return source, data


def outcome(result: Any) -> Any:
    if isinstance(result, Rejected):
        return ("rejected", result.reason, result.detail)
    custom = result.custom_data
    return (
        "event",
        result.__class__,
        fast.plain(result),
        result.source,
        result.action_source,
        result.raw_pii_hashed,
        result.client_ip_address,
        result.client_user_agent,
        result.page_url,
        None if custom is None else custom.limited_data_processing,
    )


@given(inputs())
@settings(max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_fast_path_decides_every_input_as_pydantic_does(case: tuple[Source, bytes]) -> None:
    source, data = case
    expected = parse_event(source, data, now=NOW, key=b"k")
    got = decode_event(source, data, now=NOW, key=b"k")
    assert outcome(got) == outcome(expected)


def test_the_fast_path_takes_the_usual_event() -> None:
    fast_events = [decode_event(source, data, now=NOW, key=b"k") for source, data in REALISTIC]
    decoded = [e for e in fast_events if not isinstance(e, Rejected)]
    assert decoded
    # Without raw contact points (hashed at ingest by pydantic's path) events are compiled.
    assert sum(fast.is_fast(e) for e in decoded) > 0.7 * len(decoded)


def test_a_copy_changes_only_what_it_names() -> None:
    source, data = next(
        (s, d)
        for s, d in REALISTIC
        if s == "tag" and not isinstance(parse_event(s, d, now=NOW, key=b"k"), Rejected)
    )
    for event in (
        decode_event(source, data, now=NOW, key=b"k"),
        parse_event(source, data, now=NOW, key=b"k"),
    ):
        assert not isinstance(event, Rejected)
        copy = fast.replace(event, user_id="user-1")
        assert copy.user_id == "user-1"
        assert fast.plain(copy) == {**fast.plain(event), "user_id": "user-1"}
        assert event.user_id != "user-1"


def test_a_model_is_written_as_pydantic_writes_it() -> None:
    for _, data in REALISTIC[:50]:
        for source in SOURCES:
            event = parse_event(source, data, now=NOW, key=b"k")
            if not isinstance(event, Rejected) and not event.raw_pii_hashed:
                assert codec.loads(fast.dumps(event)) == codec.loads(event.model_dump_json())


HOP = fast.FastModel(Hop)
HOPS = st.builds(
    Hop,
    origin=st.builds(
        Origin,
        topic=st.text(max_size=30),
        partition=st.integers(min_value=0, max_value=2**31 - 1),
        offset=st.integers(min_value=-1, max_value=2**63 - 1),
    ),
    produced_ms=st.integers(min_value=0, max_value=2**62),
    source=st.sampled_from(["tag", "sdk", "widget", "audience"]),
    dedup_key=st.text(max_size=40),
    duplicate=st.booleans(),
    trusted_user_id=st.none() | st.text(max_size=20),
    anonymous_subject=st.text(max_size=40),
    keys=st.lists(st.sampled_from(["em:" + "a" * 64, "click:c-1", "session:s-1"]), max_size=3),
    found=st.lists(
        st.builds(Found, kind=st.sampled_from(["em", "click"]), user_id=st.none() | st.text()),
        max_size=3,
    ),
    match=st.none() | st.sampled_from(["provided", "em", "none"]),
    user_id=st.none() | st.text(max_size=20),
    conflict=st.booleans(),
)


@given(HOPS, st.booleans())
@settings(max_examples=500, deadline=None)
def test_a_hop_written_fast_reads_back_as_itself(hop: Hop, changed: bool) -> None:
    if changed:
        hop = fast.replace(hop, duplicate=not hop.duplicate, keys=[])
    assert Hop.model_validate_json(fast.dumps(hop)) == hop
    assert codec.loads(fast.dumps(hop)) == codec.loads(hop.model_dump_json())
    decoded = HOP.decode(fast.dumps(hop))
    assert decoded is not None
    assert fast.plain(decoded) == fast.plain(hop)
    assert codec.loads(fast.dumps(decoded)) == codec.loads(hop.model_dump_json())


@given(documents(Hop).map(lambda d: json.dumps(d).encode()))
@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
def test_a_hop_header_decodes_as_pydantic_validates_it(data: bytes) -> None:
    try:
        expected: Any = fast.plain(Hop.model_validate_json(data))
    except ValidationError:
        expected = None
    decoded = HOP.decode(data)
    assert (None if decoded is None else fast.plain(decoded)) in (expected, None)
    if decoded is None and expected is not None:
        raise AssertionError("the fast path refused a valid hop")


def as_fields(instance: BaseModel) -> dict[str, Any]:
    """A valid model's fields as keyword arguments: nested models as dicts."""
    return {name: fast.plain(value) for name, value in instance.__dict__.items()}


VALID_FIELDS: dict[type[BaseModel], st.SearchStrategy[dict[str, Any]]] = {
    Hop: HOPS.map(as_fields),
    Found: st.builds(
        Found, kind=st.sampled_from(["em", "ph", "click"]), user_id=st.none() | TEXT
    ).map(as_fields),
    Origin: HOPS.map(lambda hop: as_fields(hop.origin)),
}


@st.composite
def keyword_fields(draw: st.DrawFn, model: type[BaseModel]) -> dict[str, Any]:
    """Keyword arguments for `model`: valid ones, or any `documents` draws, with some
    fields changed to values of any type, some lists given as tuples (pydantic's strict
    mode takes lists only), and nested models given as dicts or built instances."""
    fields = dict(draw(st.one_of(VALID_FIELDS[model], VALID_FIELDS[model], documents(model))))
    names = sorted(model.model_fields)
    for name in draw(st.lists(st.sampled_from(names), max_size=2, unique=True)):
        fields[name] = draw(values_for(model.model_fields[name].annotation))
    for name, value in list(fields.items()):
        if isinstance(value, list) and draw(st.integers(0, 3)) == 0:
            fields[name] = tuple(value)
        elif name == "found" and isinstance(value, list) and draw(st.booleans()):
            fields[name] = [built(Found, item) for item in value]
    if model is Hop and draw(st.booleans()):
        fields["origin"] = built(Origin, fields.get("origin"))
    return fields


def built(model: type[BaseModel], value: Any) -> Any:
    """`value` built into a fast `model` instance, if it is a valid one's fields."""
    if isinstance(value, dict):
        with contextlib.suppress(ValidationError):
            return fast.FastModel(model).build(**value)
    return value


BUILT_MODELS: list[type[BaseModel]] = [Hop, Found, Origin]


@given(
    st.sampled_from(BUILT_MODELS).flatmap(
        lambda model: st.tuples(st.just(model), keyword_fields(model))
    )
)
@settings(max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck))
def test_a_model_built_fast_is_what_pydantic_builds(
    case: tuple[type[BaseModel], dict[str, Any]],
) -> None:
    model, fields = case
    try:
        expected: Any = fast.plain(model(**fields))
    except ValidationError as exc:
        expected = exc
    if isinstance(expected, ValidationError):
        with pytest.raises(ValidationError) as refused:
            fast.FastModel(model).build(**fields)
        assert refused.value.errors() == expected.errors()
        return
    built = fast.FastModel(model).build(**fields)
    assert fast.plain(built) == expected
    assert codec.loads(fast.dumps(built)) == codec.loads(fast.dumps(model(**fields)))


def test_a_hop_is_built_fast() -> None:
    origin = {"topic": catalogue.RAW_SDK.name, "partition": 1, "offset": 7}
    hop = fast.FastModel(Hop).build(
        origin=origin, produced_ms=NOW, source="sdk", dedup_key="a\x1fe", anonymous_subject="anon:e"
    )
    assert fast.is_fast(hop)
    assert fast.is_fast(hop.origin)
    assert isinstance(hop, Hop)
    assert fast.plain(hop) == fast.plain(
        Hop(
            origin=Origin(**origin),
            produced_ms=NOW,
            source="sdk",
            dedup_key="a\x1fe",
            anonymous_subject="anon:e",
        )
    )
