"""A compiled decoder for the hot path, derived from the pydantic models (msgspec).

`FastModel(Model)` reads the model's fields (names, types, defaults, constraints and
validators) and builds a msgspec Struct class that decodes the same JSON in C; the
fields' own validators then run on the decoded values. The Struct class carries the
model's properties and class variables, and its `__class__` names the model (as a mock
made from a spec does), so the pure core reads it as it reads the model
(`isinstance(event, SdkEvent)`, `event.user_data.em`, `event.raw_pii_hashed`); `type()`
still tells them apart. The pydantic models stay the one
definition of every schema: nothing here names a field.

The fast path only ever accepts: `decode` returns None whenever msgspec, a validator or
a check here refuses the input, and the caller then validates with pydantic, which gives
the reject and its detail. A test proves on generated inputs that whatever the fast path
accepts, pydantic accepts with the same values. A type or constraint the mapping does not
know raises `TypeError` when the decoder is built (at import), never at run time. Fast
instances do not record which fields the input set (`model_fields_set`): models whose
meaning depends on it (consent changes) are validated by pydantic.

`FastModel(Model).build(**fields)` makes an instance from Python values as `Model(**fields)`
does, validated by msgspec's `convert` (strict, as the models are) and the same
validators; a tuple where the model wants a list, which msgspec would take and pydantic's
strict mode does not, is refused first. A test proves on generated fields that it builds
what pydantic builds and refuses what pydantic refuses, with pydantic's errors.

`replace(instance, **changes)` copies a model or fast instance with some fields changed
(what `model_copy(update=...)` does, without its overhead); `dumps(instance)` encodes a
plain model as `model_dump_json` does, in C.
"""

from __future__ import annotations

import math
import re
import types
from collections.abc import Callable, Sequence
from typing import (
    Annotated,
    Any,
    Generic,
    Literal,
    TypeVar,
    Union,
    cast,
    get_args,
    get_origin,
)

import annotated_types
import msgspec
from pydantic import AfterValidator, BaseModel, BeforeValidator, StringConstraints, WithJsonSchema
from pydantic.fields import FieldInfo

ModelT = TypeVar("ModelT", bound=BaseModel)

_setattr = object.__setattr__


class _Refused(Exception):
    """A validator refused a value: the caller falls back to pydantic."""


def _anchored(pattern: str) -> str:
    # pydantic matches patterns with Rust's regex, where `$` is the very end; in Python's
    # re `$` also matches before a final newline, so the pattern is pinned to \A...\Z.
    return rf"\A(?:{pattern})\Z"


class _Field:
    """A field whose decoded value a validator finishes (or a nested model's)."""

    __slots__ = ("convert", "name")

    def __init__(self, name: str, convert: Callable[[Any], Any]) -> None:
        self.name = name
        self.convert = convert


class _Plan:
    """A model's Struct class, and what finishes a decoded instance of it."""

    def __init__(self, model: type[BaseModel]) -> None:
        self.model = model
        config = model.model_config
        self.str_max_length: int | None = config.get("str_max_length")
        if config.get("strict") is not True:
            raise TypeError(f"{model.__name__}: only strict models have a fast decoder")
        decorators = model.__pydantic_decorators__
        if decorators.model_validators or decorators.field_validators or decorators.validators:
            raise TypeError(f"{model.__name__}: model and field validators are not mapped")
        fields: list[tuple[str, Any, Any]] = []
        self.fields: list[_Field] = []
        self.shapes: list[tuple[str, type, type[BaseModel] | None]] = []
        """Fields whose Python values `build` checks beyond what msgspec does: (name, the
        exact container type or the nested model, the model of the container's items)."""
        for name, info in model.model_fields.items():
            where = f"{model.__name__}.{name}"
            if info.alias not in (None, name) or info.validation_alias not in (None, name):
                raise TypeError(f"{where}: aliases are not mapped")
            tp, convert = self._type(info.annotation, list(info.metadata), where)
            fields.append((name, tp, _default_of(info, where)))
            if convert is not None:
                self.fields.append(_Field(name, convert))
            shape = _shape_of(info.annotation)
            if shape is not None:
                self.shapes.append((name, *shape))
        base = msgspec.defstruct(
            f"_Fast{model.__name__}",
            fields,
            kw_only=True,
            forbid_unknown_fields=config.get("extra") == "forbid",
        )
        self.struct: type[msgspec.Struct] = type(
            f"Fast{model.__name__}", (base,), _class_namespace(model)
        )
        self.finish: Callable[[Any], Any] = self._compile()
        """Runs the fields' validators on a decoded Struct, in place, and returns it
        (raises `_Refused` when a validator refuses a value)."""

    # -- types ----------------------------------------------------------------------

    def _type(
        self, tp: Any, metadata: list[Any], where: str
    ) -> tuple[Any, Callable[[Any], Any] | None]:
        """The msgspec type of `tp` (with pydantic `metadata`), and what finishes a value."""
        if get_origin(tp) is Annotated:
            base, *extra = get_args(tp)
            return self._type(base, [*extra, *metadata], where)
        origin = get_origin(tp)
        if origin in (Union, types.UnionType):
            members = get_args(tp)
            if type(None) not in members or len(members) != 2:
                raise TypeError(f"{where}: only `X | None` unions are mapped")
            # Constraints on an optional field apply to its value, as in pydantic.
            inner = next(m for m in members if m is not type(None))
            inner_tp, convert = self._type(inner, metadata, where)
            if convert is None:
                return inner_tp | None, None
            inner_convert = convert
            return inner_tp | None, lambda v: None if v is None else inner_convert(v)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if metadata:
                raise TypeError(f"{where}: constraints on a model are not mapped")
            plan = plan_of(tp)
            return plan.struct, plan.finish if plan.fields else None
        if origin is Literal:
            if metadata or not all(type(v) is str for v in get_args(tp)):
                raise TypeError(f"{where}: only plain string literals are mapped")
            return tp, None
        if origin in (tuple, list):
            args = get_args(tp)
            if origin is tuple and (len(args) != 2 or args[1] is not Ellipsis):
                raise TypeError(f"{where}: only variadic tuples are mapped")
            item_tp, item_convert = self._type(args[0], [], where)
            meta = self._meta(metadata, where, sized=True)
            container = tuple[item_tp, ...] if origin is tuple else list[item_tp]  # type: ignore[valid-type]
            decoded = Annotated[container, meta] if meta is not None else container
            build = tuple if origin is tuple else list
            if item_convert is None:
                return decoded, None
            convert_item = item_convert
            return decoded, lambda v: build(convert_item(item) for item in v)
        if tp is str:
            return self._scalar(str, metadata, where, string=True)
        if tp is bool:
            return self._scalar(bool, metadata, where)
        if tp is int:
            return self._scalar(int, metadata, where)
        if tp is float:
            return self._scalar(float, metadata, where, number=True)
        raise TypeError(f"{where}: type {tp!r} is not mapped")

    def _scalar(
        self,
        tp: type,
        metadata: list[Any],
        where: str,
        *,
        string: bool = False,
        number: bool = False,
    ) -> tuple[Any, Callable[[Any], Any] | None]:
        before: list[Callable[[Any], Any]] = []
        after: list[Callable[[Any], Any]] = []
        constraints: list[Any] = []
        for item in metadata:
            if isinstance(item, AfterValidator):
                after.append(item.func)  # type: ignore[arg-type]
            elif isinstance(item, BeforeValidator):
                before.append(item.func)  # type: ignore[arg-type]
            elif isinstance(item, WithJsonSchema):
                continue
            else:
                constraints.append(item)
        meta = self._meta(constraints, where, string=string)
        decoded: Any = Annotated[tp, meta] if meta is not None else tp
        if before:
            if not number or len(before) != 1 or constraints:
                raise TypeError(f"{where}: a before-validator is mapped on a bare float only")
            # The validator sees the raw JSON value: a number or a string.
            return float | str, _before_float(before[0], after)
        if number:
            return decoded, _finite if not after else _chain([_finite, *after])
        return decoded, _chain(after) if after else None

    def _meta(
        self, metadata: Sequence[Any], where: str, *, string: bool = False, sized: bool = False
    ) -> msgspec.Meta | None:
        options: dict[str, Any] = {}
        for item in metadata:
            if isinstance(item, StringConstraints):
                for name in ("strip_whitespace", "to_upper", "to_lower", "strict"):
                    if getattr(item, name):
                        raise TypeError(f"{where}: string option {name} is not mapped")
                if item.min_length is not None:
                    options["min_length"] = item.min_length
                if item.max_length is not None:
                    options["max_length"] = item.max_length
                if item.pattern is not None:
                    options["pattern"] = _anchored(_pattern_text(item.pattern))
            elif isinstance(item, annotated_types.MinLen):
                options["min_length"] = item.min_length
            elif isinstance(item, annotated_types.MaxLen):
                options["max_length"] = item.max_length
            elif isinstance(item, annotated_types.Ge):
                options["ge"] = item.ge
            elif isinstance(item, annotated_types.Le):
                options["le"] = item.le
            elif isinstance(item, annotated_types.Gt):
                options["gt"] = item.gt
            elif isinstance(item, annotated_types.Lt):
                options["lt"] = item.lt
            elif type(item).__name__ == "_PydanticGeneralMetadata":
                known = {"pattern"}
                values = {k: v for k, v in vars(item).items() if v is not None}
                if set(values) - known:
                    raise TypeError(f"{where}: constraints {sorted(values)} are not mapped")
                if "pattern" in values:
                    options["pattern"] = _anchored(_pattern_text(values["pattern"]))
            else:
                raise TypeError(f"{where}: constraint {item!r} is not mapped")
        if string and "max_length" not in options and self.str_max_length is not None:
            options["max_length"] = self.str_max_length
        if (sized or not string) and "pattern" in options:
            raise TypeError(f"{where}: a pattern on a non-string is not mapped")
        return msgspec.Meta(**options) if options else None

    def _compile(self) -> Callable[[Any], Any]:
        """`finish`, generated for this model's validated fields (one straight function)."""
        env: dict[str, Any] = {}
        lines = ["def finish(d):"]
        for i, field in enumerate(self.fields):
            env[f"convert{i}"] = field.convert
            lines.append(f"    d.{field.name} = convert{i}(d.{field.name})")
        lines.append("    return d")
        exec("\n".join(lines), env)  # source built above from the model's field names
        finish: Callable[[Any], Any] = env["finish"]
        return finish


def _class_namespace(model: type[BaseModel]) -> dict[str, Any]:
    """The model's properties, class variables and private defaults, for its Struct class."""
    # isinstance() falls back on `__class__` when the type itself does not match.
    namespace: dict[str, Any] = {"__class__": property(lambda self: model)}
    for klass in reversed(model.__mro__):
        if isinstance(klass, type) and issubclass(klass, BaseModel) and klass is not BaseModel:
            for name, value in vars(klass).items():
                if isinstance(value, property):
                    namespace[name] = value
    for name in model.__class_vars__:
        namespace[name] = getattr(model, name)
    for name, attr in model.__private_attributes__.items():
        namespace[name] = attr.get_default()
    return namespace


def _shape_of(tp: Any) -> tuple[type, type[BaseModel] | None] | None:
    """What `build` checks of a field of type `tp` (see `_Plan.shapes`), if anything."""
    origin = get_origin(tp)
    if origin is Annotated:
        return _shape_of(get_args(tp)[0])
    if origin in (Union, types.UnionType):
        inner = [member for member in get_args(tp) if member is not type(None)]
        return _shape_of(inner[0]) if len(inner) == 1 else None
    if origin in (list, tuple):
        item = _shape_of(get_args(tp)[0])
        return origin, item[0] if item is not None and issubclass(item[0], BaseModel) else None
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp, None
    return None


def _check_shapes(plan: _Plan, values: dict[str, Any]) -> None:
    """Refuse what msgspec converts and pydantic's strict mode does not take: a tuple for
    a list or a list for a tuple, here or in a nested model given as a dict."""
    for name, shape, items in plan.shapes:
        value: Any = values.get(name)
        if value is None:
            continue
        if issubclass(shape, BaseModel):
            if type(value) is dict:
                _check_shapes(plan_of(shape), value)
            continue
        if type(value) is not shape:
            raise _Refused(f"{name}: not a {shape.__name__}")
        if items is not None:
            for item in cast(Sequence[Any], value):
                if type(item) is dict:
                    _check_shapes(plan_of(items), item)


def _pattern_text(pattern: Any) -> str:
    return pattern.pattern if isinstance(pattern, re.Pattern) else str(pattern)


def _default_of(info: FieldInfo, where: str) -> Any:
    """The field's default as msgspec takes it (NODEFAULT: required)."""
    if info.is_required():
        return msgspec.NODEFAULT
    if info.default_factory is not None:
        raise TypeError(f"{where}: default factories are not mapped")
    default = info.default
    if isinstance(default, list | dict | set):
        if default:
            raise TypeError(f"{where}: a non-empty mutable default is not mapped")
        return msgspec.field(default_factory=type(default))
    return default


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise _Refused("not a finite number")
    return value


def _chain(steps: Sequence[Callable[[Any], Any]]) -> Callable[[Any], Any]:
    def run(value: Any) -> Any:
        for step in steps:
            try:
                value = step(value)
            except (ValueError, AssertionError) as exc:
                raise _Refused("a validator refused a value") from exc
        return value

    return run


def _before_float(
    before: Callable[[Any], Any], after: Sequence[Callable[[Any], Any]]
) -> Callable[[Any], Any]:
    def run(value: Any) -> Any:
        try:
            value = before(value)
        except (ValueError, AssertionError) as exc:
            raise _Refused("a validator refused a value") from exc
        if type(value) is int:
            value = float(value)
        if type(value) is not float:
            raise _Refused("not a number")
        value = _finite(value)
        return _chain(after)(value) if after else value

    return run


_PLANS: dict[type[BaseModel], _Plan] = {}


def plan_of(model: type[BaseModel]) -> _Plan:
    """The (cached) decoding plan of `model`."""
    plan = _PLANS.get(model)
    if plan is None:
        plan = _PLANS[model] = _Plan(model)
    return plan


class FastModel(Generic[ModelT]):
    """Decodes JSON into `model`'s Struct class in C, None when pydantic must decide; and
    builds instances from Python values, validated in C as pydantic would."""

    __slots__ = ("_decoder", "_finish", "_plan", "model", "struct")

    def __init__(self, model: type[ModelT]) -> None:
        plan = self._plan = plan_of(model)
        self.model = model
        self.struct = plan.struct
        self._decoder = msgspec.json.Decoder(plan.struct)
        self._finish = plan.finish

    def decode(self, data: bytes) -> ModelT | None:
        """What pydantic would validate from `data` (a Struct instance that reads as the
        model), or None: pydantic decides."""
        try:
            decoded = self._finish(self._decoder.decode(data))
        except (msgspec.DecodeError, _Refused):
            return None
        return decoded  # type: ignore[no-any-return]

    def build(self, **fields: Any) -> ModelT:
        """What `model(**fields)` makes: the fields validated in C into a Struct instance
        that reads as the model; what msgspec or a validator refuses, pydantic validates,
        and raises its error (or accepts: then it is a model instance). A nested model is
        given as a dict or as a built instance.

        Raises:
            ValidationError: pydantic refuses the fields.
        """
        try:
            _check_shapes(self._plan, fields)
            built = self._finish(msgspec.convert(fields, self.struct))
        except (msgspec.ValidationError, _Refused):
            return self.model(**fields)
        return built  # type: ignore[no-any-return]


def is_fast(instance: object) -> bool:
    """Whether `instance` came from a fast decoder (a Struct, not a pydantic model)."""
    return isinstance(instance, msgspec.Struct)


def replace(instance: ModelT, **changes: Any) -> ModelT:
    """A copy of a model (or fast) instance with `changes`, unvalidated, as
    `model_copy(update=changes)` makes it."""
    if isinstance(instance, msgspec.Struct):
        return msgspec.structs.replace(instance, **changes)
    copy = type(instance).__new__(type(instance))
    _setattr(copy, "__dict__", {**instance.__dict__, **changes})
    _setattr(copy, "__pydantic_fields_set__", instance.__pydantic_fields_set__ | changes.keys())
    _setattr(copy, "__pydantic_extra__", instance.__pydantic_extra__)
    private = instance.__pydantic_private__
    _setattr(copy, "__pydantic_private__", None if private is None else dict(private))
    return copy


def plain(instance: Any) -> Any:
    """A model or fast instance as plain data (dicts, lists), for comparing the two."""
    if isinstance(instance, msgspec.Struct):
        return {field: plain(getattr(instance, field)) for field in instance.__struct_fields__}
    if isinstance(instance, BaseModel):
        return {name: plain(value) for name, value in instance.__dict__.items()}
    if isinstance(instance, list | tuple):
        return [plain(item) for item in instance]
    return instance


def _encode_model(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.__dict__
    raise TypeError(f"cannot encode {type(value).__name__}")


_ENCODER = msgspec.json.Encoder(enc_hook=_encode_model)


def dumps(instance: BaseModel) -> bytes:
    """`instance` as JSON, as `model_dump_json` writes a plain model (no serializers)."""
    if isinstance(instance, msgspec.Struct):
        return _ENCODER.encode(instance)
    return _ENCODER.encode(instance.__dict__)
