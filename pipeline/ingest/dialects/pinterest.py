"""Pinterest Conversions API v5: `POST /v5/ad_accounts/{ad_account_id}/events`.

Follows Pinterest's v5 OpenAPI description (`pinterest/api-description`, `v5/openapi.yaml`,
v5.23.0: operation `events/create`, schemas `ConversionEvents`, `ConversionApiResponse`,
`Error`, `DetailedError`):

- the body is `ConversionEvents`: `{"data": [event, ...]}`, 1 to 1,000 events, each with
  `event_name`, `action_source`, `event_time`, `event_id`, `user_data`; the event,
  `custom_data` and `contents` items allow no other properties. A body that does not fit
  that schema is a 400 `Error` (`{"code", "message"}`) for the whole request, as
  Pinterest answers it ("Invalid request: Additional properties are not allowed ...");
- `custom_data.value`, `contents[].item_price` and `predicted_ltv` are decimal strings
  ("Accepted as a string in the request; it will be parsed into a double"); a plain
  number is taken too;
- `custom_data.opt_out_type` (comma list, `LDP`) is kept: it is limited data processing;
- `event_name` is one of the v5 list, `action_source` one of `app_android`, `app_ios`,
  `web`, `offline`; `user_data` needs `em`, `hashed_maids`, or `client_ip_address` with
  `client_user_agent`. An event failing these is answered `failed` in `events[]`, and a
  request with a failed event is a 422 `DetailedError` whose `details` is the
  `ConversionApiResponse` (which events were processed, which failed and why);
- app and device fields are top level (`app_id`, `app_name`, `app_version`,
  `os_version`, ..., and 5.23's `app_info` / `device_info`); `user_data.click_id` (the
  `_epik` cookie) is kept as the click id;
- `?test=true` validates and answers the same way without recording anything.

Event names map to raw event names (`V5_EVENT_NAMES`); web events go to `raw.tag`, app and
offline events to `raw.sdk`, with `advertiser_id` the registry's advertiser.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Annotated, Any, Final, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

from pipeline.ingest.dialects import Invalid, Mapped, location, safe_name
from schemas import codec, normalize
from schemas.events import EventName

V5_EVENT_NAMES: Final[Mapping[str, EventName]] = MappingProxyType(
    {
        "add_payment_info": "custom",
        "add_to_cart": "add_to_cart",
        "add_to_wishlist": "add_to_wishlist",
        "app_install": "custom",
        "checkout": "checkout",
        "custom": "custom",
        "initiate_checkout": "custom",
        "lead": "lead",
        "page_visit": "page_visit",
        "search": "search",
        "signup": "signup",
        "subscribe": "subscribe",
        "view_category": "view_category",
        "view_content": "page_visit",
        "watch_video": "watch_video",
    }
)
"""Every v5 `event_name` (OpenAPI `ConversionEvents.data.event_name`) and its raw event name.

`view_content` is a page visit (a product or article page); names the raw schema has no
counterpart for (payment info, app install, checkout started) are `custom`, never
`checkout`, which the on-platform purchase exception reads."""

ACTION_SOURCES: Final = frozenset({"app_android", "app_ios", "web", "offline"})

INVALID_REQUEST: Final = 4196
"""`code` of the OpenAPI's 400 example ("The request was invalid."); used for 422 too,
for which the description names no code."""
AUTHENTICATION_FAILED: Final = 2
NOT_PERMITTED: Final = 29
RATE_LIMITED: Final = 8
UNAVAILABLE: Final = 4197

Status: TypeAlias = Literal["processed", "failed"]

_DECIMAL: Final = re.compile(normalize.DECIMAL_PATTERN)
_STRICT: Final = ConfigDict(extra="forbid", strict=True, frozen=True)
_OPEN: Final = ConfigDict(extra="ignore", strict=True, frozen=True)

Text = StrictStr | None
Texts = list[StrictStr] | None
Decimal = StrictStr | float | None
"""A decimal string as the OpenAPI says; a plain number is taken too."""


class _UserData(BaseModel):
    """`ConversionEventsUserData`: hashed contact points, the client, the click id."""

    model_config = _OPEN  # the OpenAPI allows other properties here

    em: list[StrictStr] = []
    hashed_maids: list[StrictStr] = []
    client_ip_address: StrictStr | None = None
    client_user_agent: StrictStr | None = None
    ph: list[StrictStr] = []
    ge: list[StrictStr] = []
    db: list[StrictStr] = []
    ln: list[StrictStr] = []
    fn: list[StrictStr] = []
    ct: list[StrictStr] = []
    st: list[StrictStr] = []
    zp: list[StrictStr] = []
    country: list[StrictStr] = []
    external_id: list[StrictStr] = []
    click_id: Text = None
    partner_id: Text = None


class _Content(BaseModel):
    model_config = _STRICT

    id: StrictStr | None = None
    item_brand: StrictStr | None = None
    item_category: StrictStr | None = None
    item_name: StrictStr | None = None
    item_price: Decimal = None
    quantity: StrictInt | None = None


class _CustomData(BaseModel):
    model_config = _STRICT

    currency: Text = None
    value: Decimal = None
    content_ids: list[StrictStr] = []
    content_name: Text = None
    content_category: Text = None
    content_brand: Text = None
    contents: list[_Content] = []
    num_items: StrictInt | None = None
    order_id: Text = None
    search_string: Text = None
    opt_out_type: Text = None
    np: Text = None
    predicted_ltv: Decimal = None
    external_measurement_id: Text = None
    external_measurement_vendor_id: StrictInt | None = None


class _AppInfo(BaseModel):
    model_config = _STRICT

    app_id: Text = None
    app_name: Text = None
    app_package_name: Text = None
    app_store: Text = None
    app_version: Text = None
    install_time: StrictInt | None = None
    user_agent: Text = None
    window_height: StrictInt | None = None
    window_width: StrictInt | None = None


class _DeviceInfo(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)  # numbers may be int or float

    battery_level: float | None = None
    brand: Text = None
    carrier: Text = None
    cpu_cores: int | None = None
    external_storage_free_space: float | None = None
    external_storage_size: float | None = None
    form_factor: Text = None
    kernel_version: Text = None
    languages: Texts = None
    locale: Text = None
    model: Text = None
    network_type: Text = None
    os_family: Text = None
    os_name: Text = None
    os_release_name: Text = None
    os_version: Text = None
    screen_density: float | None = None
    screen_height: int | None = None
    screen_width: int | None = None
    storage_free_space: float | None = None
    storage_size: float | None = None
    timezone: Text = None
    timezone_abbr: Text = None
    type: Text = None


class _Event(BaseModel):
    """One item of `ConversionEvents.data`."""

    model_config = _STRICT

    event_name: StrictStr
    action_source: StrictStr
    event_time: StrictInt
    event_id: StrictStr
    user_data: _UserData
    custom_data: _CustomData | None = None
    event_source_url: Text = None
    opt_out: StrictBool = False
    partner_name: Text = None
    app_id: Text = None
    app_name: Text = None
    app_version: Text = None
    device_brand: Text = None
    device_carrier: Text = None
    device_model: Text = None
    device_type: Text = None
    os_version: Text = None
    wifi: StrictBool = False
    language: Text = None
    app_info: _AppInfo | None = None
    device_info: _DeviceInfo | None = None


class _ConversionEvents(BaseModel):
    model_config = _STRICT

    data: Annotated[list[_Event], Field(min_length=1, max_length=1000)]


@dataclass(frozen=True, slots=True)
class Batch:
    """A request body that fits `ConversionEvents`."""

    events: tuple[_Event, ...]


@dataclass(frozen=True, slots=True)
class EventResult:
    """One item of `ConversionApiResponse.events`."""

    status: Status
    error_message: str = ""
    warning_message: str = ""


def is_test(value: str | None) -> bool | Invalid:
    """The `test` query parameter (an OpenAPI boolean; the SDK sends `True`/`False`)."""
    if value is None:
        return False
    text = value.strip().lower()
    if text in ("true", "false"):
        return text == "true"
    return Invalid("test: must be true or false")


def read_batch(body: bytes) -> Batch | Invalid:
    """The events of a request body, or why the body does not fit `ConversionEvents`."""
    try:
        document = codec.loads(body)
    except codec.DecodeError:
        return Invalid("Invalid request: the body is not JSON")
    try:
        parsed = _ConversionEvents.model_validate(document)
    except ValidationError as exc:
        return Invalid("Invalid request: " + _describe(exc))
    return Batch(tuple(parsed.data))


def map_event(event: _Event, advertiser_id: str) -> Mapped | Invalid:
    """One v5 event as a raw record, or why Pinterest would not accept it."""
    name = V5_EVENT_NAMES.get(event.event_name)
    if name is None:
        return Invalid("event_name is not a v5 event name")
    if event.action_source not in ACTION_SOURCES:
        return Invalid("action_source must be one of app_android, app_ios, web, offline")
    user = event.user_data
    if not (user.em or user.hashed_maids or (user.client_ip_address and user.client_user_agent)):
        return Invalid(
            "user_data needs em, hashed_maids, or client_ip_address with client_user_agent"
        )
    custom = event.custom_data
    if custom is not None:
        for field, text in (
            ("value", custom.value),
            ("predicted_ltv", custom.predicted_ltv),
            *((f"contents.{i}.item_price", c.item_price) for i, c in enumerate(custom.contents)),
        ):
            if isinstance(text, str) and _DECIMAL.fullmatch(text) is None:
                return Invalid(f"custom_data.{field} must be a decimal number as a string")

    web = event.action_source == "web"
    record: dict[str, Any] = {
        "event_id": event.event_id,
        "event_name": name,
        "event_time": event.event_time,
        "advertiser_id": advertiser_id,
        "action_source": event.action_source,
        "opt_out": event.opt_out,
    }
    if web and event.event_source_url is not None:
        record["event_source_url"] = event.event_source_url
    record["user_data"] = _user_data(user, web=web)
    if custom is not None:
        record["custom_data"] = _custom_data(custom)
    if not web:
        record.update(_app_and_device(event))
    warnings = (
        ("user_data.hashed_maids is not kept on web events",) if web and user.hashed_maids else ()
    )
    return Mapped("tag" if web else "sdk", record, warnings)


def response(results: Sequence[EventResult]) -> tuple[int, dict[str, Any]]:
    """The status and body answering a batch: 200 when every event was processed, else
    422 with the per-event results as the `DetailedError`'s details."""
    processed = sum(1 for result in results if result.status == "processed")
    body: dict[str, Any] = {
        "num_events_received": len(results),
        "num_events_processed": processed,
        "events": [
            {
                "status": result.status,
                "error_message": result.error_message,
                "warning_message": result.warning_message,
            }
            for result in results
        ],
    }
    if processed == len(results):
        return 200, body
    return 422, {
        "code": INVALID_REQUEST,
        "message": "Not all events were successfully processed.",
        "details": body,
    }


def error(code: int, message: str) -> dict[str, Any]:
    """Pinterest's `Error` object."""
    return {"code": code, "message": message}


def _user_data(user: _UserData, *, web: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("em", "ph", "external_id"):
        values = getattr(user, name)
        if values:
            out[name] = list(values)
    if user.hashed_maids and not web:
        out["hashed_maids"] = list(user.hashed_maids)
    for name in ("client_ip_address", "client_user_agent", "click_id"):
        value = getattr(user, name)
        if value is not None:
            out[name] = value
    return out


def _custom_data(custom: _CustomData) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("currency", "value", "num_items", "order_id", "opt_out_type"):
        value = getattr(custom, name)
        if value is not None:
            out[name] = value
    content_ids = custom.content_ids or [c.id for c in custom.contents if c.id is not None]
    if content_ids:
        out["content_ids"] = list(content_ids)
    return out


def _app_and_device(event: _Event) -> dict[str, Any]:
    """App and device fields: top level in v5, or 5.23's `app_info` / `device_info`."""
    info = event.app_info or _AppInfo()
    app = {
        "app_id": event.app_id or info.app_id or info.app_package_name,
        "app_name": event.app_name or info.app_name,
        "app_version": event.app_version or info.app_version,
    }
    device_info = event.device_info or _DeviceInfo()
    device: dict[str, Any] = {"os_version": event.os_version or device_info.os_version}
    app_event = event.action_source in ("app_ios", "app_android")
    if app_event and event.opt_out:
        # "whether the user has enabled Limit Ad Tracking on their iOS device, or opted
        # out of Ads Personalization on their Android device": a per-device choice too.
        device["ads_opt_out"] = True
    out: dict[str, Any] = {}
    if any(value is not None for value in app.values()):
        out["app"] = {k: v for k, v in app.items() if v is not None}
    device = {k: v for k, v in device.items() if v is not None}
    if device and app_event:
        out["device"] = device
    return out


def _describe(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    described = []
    for item in errors[:3]:
        loc = list(item["loc"])
        if item["type"] == "extra_forbidden" and loc:
            extra = safe_name(loc.pop())
            where = location(loc)
            unexpected = f" ('{extra}' was unexpected)" if extra else ""
            described.append(f"{where}: Additional properties are not allowed{unexpected}")
        elif item["type"] == "missing":
            described.append(f"{location(loc)}: is a required property")
        else:
            described.append(f"{location(loc)}: {_TYPE_WORDS.get(item['type'], item['type'])}")
    if len(errors) > 3:
        described.append(f"(+{len(errors) - 3} more)")
    return "; ".join(described)


_TYPE_WORDS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "string_type": "must be a string",
        "int_type": "must be an integer",
        "bool_type": "must be a boolean",
        "list_type": "must be an array",
        "model_type": "must be an object",
        "model_attributes_type": "must be an object",
        "dict_type": "must be an object",
        "float_type": "must be a number",
        "too_short": "must have at least 1 item",
        "too_long": "must have at most 1000 items",
    }
)
