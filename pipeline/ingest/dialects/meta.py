"""Meta Conversions API: `POST /{api_version}/{pixel_id}/events`.

Follows Meta's "Using the API", "Server Event Parameters" (main body, server event,
customer information, app data, fbp and fbc) and the Ads Pixel Events reference:

- parameters come from the query string, a form body (`application/x-www-form-urlencoded`
  or `multipart/form-data`, as the documented curl `-F` example sends) or a JSON body;
  `data` is a JSON array, or a JSON string of one (form bodies), whose elements may
  themselves be JSON strings (the Python Business SDK double-encodes them) or come as
  repeated `data` fields; `access_token` is in the query, the form or the JSON body;
- up to 1,000 events; "If any event you send in a batch is invalid, we reject the
  entire batch": one invalid event is a 400 Graph error and nothing is written;
- `test_event_code` validates and answers without writing anything;
- the answer is `{"events_received", "messages", "fbtrace_id"}`; errors are Graph error
  objects `{"error": {"message", "type", "code", "error_subcode"?, "error_user_title",
  "error_user_msg", "is_transient", "fbtrace_id"}}` with the reference's codes: 100
  invalid parameter, 190 invalid access token, 200 permissions error; 4 (too many calls,
  429) and 2 (temporarily unavailable, 503) are transient;
- standard event names map to raw event names (`STANDARD_EVENTS`), others to `custom`;
  `action_source` to raw sources (`website` to web on `raw.tag`; `app` to `app_ios` or
  `app_android` by `app_data.extinfo[0]` `i2`/`a2`; the rest to `offline` on `raw.sdk`);
  a missing `action_source` is `website`, as in Meta's own example requests;
- `em`, `ph`, `external_id` may be single strings; `data_processing_options` with `LDU`
  is limited data processing (`opt_out_type: LDP`); `app_data.advertiser_tracking_enabled`
  false is ATT denied on iOS (the Android ads opt-out on Android);
  `application_tracking_enabled` false is the person's app-level opt-out (`opt_out`);
- `fbc` (`fb.<subdomain index>.<creation time>.<fbclid>`) carries the click id, the
  fbclid; `fbp` is the browser id (`browser.cookie_id`); `madid` the advertising id;
  `anon_id` the install id (`device.device_id`);
- a missing `event_id` gets a deterministic one, the SHA-256 of the pixel id, event name,
  time and user data (contact points hashed first), so a retried request deduplicates.

A value Meta documents as "Do not hash" that does not parse (an `fbc` that is not in the
documented form, a `client_ip_address` that is not an address, as in the docs' own
`256.256.256.256` example) is dropped and said so in `messages`, not a batch failure.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from pipeline.ingest.dialects import Invalid, Mapped, string_list
from schemas import codec, normalize
from schemas.events import ActionSource, EventName

STANDARD_EVENTS: Final[Mapping[str, EventName]] = MappingProxyType(
    {
        "PageView": "page_visit",
        "ViewContent": "page_visit",
        "Search": "search",
        "AddToCart": "add_to_cart",
        "AddToWishlist": "add_to_wishlist",
        "Purchase": "checkout",
        "Lead": "lead",
        "CompleteRegistration": "signup",
        "Subscribe": "subscribe",
        "AddPaymentInfo": "custom",
        "Contact": "custom",
        "CustomizeProduct": "custom",
        "Donate": "custom",
        "FindLocation": "custom",
        "InitiateCheckout": "custom",
        "Schedule": "custom",
        "StartTrial": "custom",
        "SubmitApplication": "custom",
    }
)
"""Meta's standard events (Meta Pixel reference) and their raw event names; names are
case-sensitive, as Meta's are, and any other name is a custom event."""

OFFLINE_SOURCES: Final = frozenset(
    {
        "email",
        "phone_call",
        "chat",
        "physical_store",
        "system_generated",
        "business_messaging",
        "other",
    }
)
EXTINFO_PLATFORMS: Final[Mapping[str, ActionSource]] = MappingProxyType(
    {"i2": "app_ios", "a2": "app_android"}
)
MAX_EVENTS: Final = 1000

INVALID_PARAMETER: Final = 100
INVALID_TOKEN: Final = 190
PERMISSIONS_ERROR: Final = 200
TOO_MANY_CALLS: Final = 4
TEMPORARILY_UNAVAILABLE: Final = 2

_FBC: Final = re.compile(r"fb\.[0-9]{1,2}\.[0-9]{1,16}\.([^.\s]{1,256})(?:\.[A-Za-z0-9_-]{1,32})?")
_MAX_TEXT: Final = 4096
_TRUE_WORDS: Final = frozenset({"1", "true"})
_FALSE_WORDS: Final = frozenset({"0", "false"})


@dataclass(frozen=True, slots=True)
class GraphError:
    """A Graph API error: HTTP status, code and the messages Meta's clients read."""

    status: int
    code: int
    message: str
    user_title: str
    user_msg: str
    type: str = "OAuthException"
    subcode: int | None = None
    transient: bool = False

    def body(self, fbtrace_id: str) -> dict[str, Any]:
        """The `{"error": {...}}` object."""
        error: dict[str, Any] = {"message": self.message, "type": self.type, "code": self.code}
        if self.subcode is not None:
            error["error_subcode"] = self.subcode
        error.update(
            {
                "is_transient": self.transient,
                "error_user_title": self.user_title,
                "error_user_msg": self.user_msg,
                "fbtrace_id": fbtrace_id,
            }
        )
        return {"error": error}


def invalid_parameter(detail: str) -> GraphError:
    """The 400 for a request or event that does not follow the parameter reference."""
    return GraphError(400, INVALID_PARAMETER, f"(#100) {detail}", "Invalid parameter", detail)


@dataclass(frozen=True, slots=True)
class EventsRequest:
    """The parameters of an events call that matter here."""

    events: tuple[object, ...]
    test_event_code: str | None


def access_token(
    query: Mapping[str, Sequence[str]],
    form: Mapping[str, Sequence[str]],
    body: object,
    authorization: str | None,
) -> str | None:
    """The access token from the query, the form, a JSON body or an `Authorization`
    header (`Bearer` or `OAuth`), in that order."""
    for source in (query, form):
        values = source.get("access_token")
        if values and values[0]:
            return values[0]
    if isinstance(body, Mapping):
        token = body.get("access_token")
        if isinstance(token, str) and token:
            return token
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() in ("bearer", "oauth") and credentials.strip():
            return credentials.strip()
    return None


def read_request(
    query: Mapping[str, Sequence[str]], form: Mapping[str, Sequence[str]], body: object
) -> EventsRequest | GraphError:
    """The events and test code of a call, from whichever part of the request has them."""
    raw: list[object] = []
    if isinstance(body, Mapping) and "data" in body:
        raw = [body["data"]]
    elif body is not None and not isinstance(body, Mapping):
        return invalid_parameter("the JSON body must be an object")
    else:
        raw = list(form.get("data") or query.get("data") or ())
    if not raw:
        return invalid_parameter("The parameter data is required")
    events = _events(raw)
    if isinstance(events, Invalid):
        return invalid_parameter(events.detail)
    if not events:
        return invalid_parameter("data must hold at least one event")
    if len(events) > MAX_EVENTS:
        return invalid_parameter(f"data holds more than {MAX_EVENTS} events")
    test = None
    if isinstance(body, Mapping) and "test_event_code" in body:
        value = body["test_event_code"]
        if not isinstance(value, str):
            return invalid_parameter("test_event_code must be a string")
        test = value
    else:
        codes = form.get("test_event_code") or query.get("test_event_code")
        test = codes[0] if codes else None
    return EventsRequest(tuple(events), test or None)


def map_event(raw: object, index: int, pixel_id: str, advertiser_id: str) -> Mapped | Invalid:
    """One server event as a raw record, or why Meta would reject the batch."""
    at = f"data[{index}]"
    if not isinstance(raw, Mapping):
        return Invalid(f"{at} must be an object")
    warnings: list[str] = []
    name = raw.get("event_name")
    if not isinstance(name, str) or not name:
        return Invalid(f"{at}.event_name is required")
    event_time = _unix_seconds(raw.get("event_time"))
    if event_time is None:
        return Invalid(f"{at}.event_time must be a unix time in seconds")
    user = raw.get("user_data")
    if not isinstance(user, Mapping):
        return Invalid(f"{at}.user_data is required and must be an object")

    source = raw.get("action_source", "website")
    app_data = raw.get("app_data")
    if source == "website":
        action_source: ActionSource = "web"
    elif source == "app":
        platform = _app_platform(app_data)
        if platform is None:
            return Invalid(
                f"{at}.app_data.extinfo is required for app events, its version (extinfo[0]) "
                "i2 for iOS or a2 for Android"
            )
        action_source = platform
    elif isinstance(source, str) and source in OFFLINE_SOURCES:
        action_source = "offline"
    else:
        return Invalid(f"{at}.action_source is not a documented action source")

    record: dict[str, Any] = {
        "event_name": STANDARD_EVENTS.get(name, "custom"),
        "event_time": event_time,
        "advertiser_id": advertiser_id,
        "action_source": action_source,
    }
    user_data = _user_data(user, at, warnings)
    if isinstance(user_data, Invalid):
        return user_data
    event_id = raw.get("event_id")
    if event_id is None:
        record["event_id"] = derived_event_id(pixel_id, name, event_time, user)
    elif isinstance(event_id, str):
        record["event_id"] = event_id
    else:
        return Invalid(f"{at}.event_id must be a string")

    opt_out = raw.get("opt_out", False)
    if not isinstance(opt_out, bool):
        return Invalid(f"{at}.opt_out must be a boolean")
    ldu = limited_data_use(raw.get("data_processing_options"))
    if ldu is None:
        return Invalid(f"{at}.data_processing_options must be an array of strings")
    if ldu:
        record["opt_out_type"] = "LDP"

    custom = raw.get("custom_data")
    if custom is not None:
        custom_data = _custom_data(custom, at)
        if isinstance(custom_data, Invalid):
            return custom_data
        record["custom_data"] = custom_data

    if action_source == "web":
        url = raw.get("event_source_url")
        if url is not None:
            if not isinstance(url, str):
                return Invalid(f"{at}.event_source_url must be a string")
            record["event_source_url"] = url
        fbp = user.get("fbp")
        if isinstance(fbp, str) and 0 < len(fbp) <= 256:
            record["browser"] = {"cookie_id": fbp}
        elif fbp is not None:
            warnings.append(f"{at}.user_data.fbp is not a browser id; it was ignored")
    else:
        madid = user.get("madid")
        if isinstance(madid, str) and madid:
            user_data["hashed_maids"] = [normalize.sha256_hex(madid.strip().lower())]
        app = _app_fields(app_data, user, action_source, at)
        if isinstance(app, Invalid):
            return app
        app_fields, app_opt_out = app
        record.update(app_fields)
        opt_out = opt_out or app_opt_out
    record["opt_out"] = opt_out
    if user_data:
        record["user_data"] = user_data
    return Mapped("tag" if action_source == "web" else "sdk", record, tuple(warnings))


def click_id(fbc: str) -> str | None:
    """The fbclid inside an `fbc` value (`fb.1.1554763741205.AbCdEf...`, optionally with
    the Parameter Builder's fifth segment); None when it is not in that form."""
    match = _FBC.fullmatch(fbc)
    return None if match is None else match[1]


def derived_event_id(pixel_id: str, event_name: str, event_time: int, user_data: object) -> str:
    """A deterministic event id for an event sent without one: the same event, sent
    again, gets the same id, so deduplication still works."""
    hashed: object = user_data
    if isinstance(user_data, Mapping):
        copied = dict(user_data)
        for name in ("em", "ph"):
            values = string_list(copied.get(name))
            if values is not None:
                copied[name] = values
        normalize.hash_raw_contact_points(copied)
        hashed = copied
    canonical = codec.dumps(_sorted([pixel_id, event_name, event_time, hashed]))
    return "meta:" + hashlib.sha256(canonical).hexdigest()


def response(events_received: int, messages: Sequence[str], fbtrace_id: str) -> dict[str, Any]:
    """The events edge's answer."""
    return {
        "events_received": events_received,
        "messages": list(messages),
        "fbtrace_id": fbtrace_id,
    }


def _events(raw: list[object]) -> list[object] | Invalid:
    events: list[object] = []
    for value in raw:
        decoded = _decoded(value)
        if isinstance(decoded, Invalid):
            return decoded
        if isinstance(decoded, list):
            events.extend(decoded)
        else:
            events.append(decoded)
    for index, event in enumerate(events):
        decoded = _decoded(event)
        if isinstance(decoded, Invalid):
            return Invalid(f"data[{index}] is not valid JSON")
        events[index] = decoded
    return events


def _decoded(value: object) -> object:
    if not isinstance(value, str):
        return value
    try:
        decoded: object = codec.loads(value)
    except codec.DecodeError:
        return Invalid("data must be a JSON array of events")
    return decoded


def _unix_seconds(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 12:
        return int(value)
    return None


def _user_data(user: Mapping[str, Any], at: str, warnings: list[str]) -> dict[str, Any] | Invalid:
    out: dict[str, Any] = {}
    for name in ("em", "ph", "external_id"):
        if name in user and user[name] is not None:
            values = string_list(user[name])
            if values is None:
                return Invalid(f"{at}.user_data.{name} must be a string or an array of strings")
            if values:
                out[name] = values
    ip = user.get("client_ip_address")
    if ip is not None:
        try:
            if not isinstance(ip, str):
                raise ValueError("not text")
            out["client_ip_address"] = normalize.canonical_ip(ip)
        except ValueError:
            warnings.append(
                f"{at}.user_data.client_ip_address is not an IP address; it was ignored"
            )
    agent = user.get("client_user_agent")
    if isinstance(agent, str) and agent:
        out["client_user_agent"] = agent[:2048]
    fbc = user.get("fbc")
    if fbc is not None:
        click = click_id(fbc) if isinstance(fbc, str) else None
        if click is None:
            warnings.append(
                f"{at}.user_data.fbc is not fb.<subdomain index>.<creation time>.<fbclid>; "
                "it was ignored"
            )
        else:
            out["click_id"] = click
    return out


def _custom_data(custom: object, at: str) -> dict[str, Any] | Invalid:
    if not isinstance(custom, Mapping):
        return Invalid(f"{at}.custom_data must be an object")
    out: dict[str, Any] = {}
    for name in ("value", "currency", "num_items", "order_id"):
        if custom.get(name) is not None:
            out[name] = custom[name]
    content_ids = custom.get("content_ids")
    if content_ids is None and isinstance(custom.get("contents"), list):
        content_ids = [
            item["id"]
            for item in custom["contents"]
            if isinstance(item, Mapping) and item.get("id") is not None
        ]
    if content_ids is not None:
        if isinstance(content_ids, str | int) and not isinstance(content_ids, bool):
            content_ids = [content_ids]
        if not isinstance(content_ids, list) or not all(
            isinstance(i, str | int) and not isinstance(i, bool) for i in content_ids
        ):
            return Invalid(f"{at}.custom_data.content_ids must be an array of strings")
        if content_ids:
            out["content_ids"] = [str(i) for i in content_ids]
    return out


def limited_data_use(options: object) -> bool | None:
    """Whether `data_processing_options` asks for LDU; None when it is malformed."""
    if options is None:
        return False
    values = string_list(options)
    if values is None:
        return None
    return any(value.strip().upper() == "LDU" for value in values)


def _app_platform(app_data: object) -> ActionSource | None:
    if not isinstance(app_data, Mapping):
        return None
    extinfo = app_data.get("extinfo")
    if not isinstance(extinfo, list) or not extinfo or not isinstance(extinfo[0], str):
        return None
    return EXTINFO_PLATFORMS.get(extinfo[0])


def _app_fields(
    app_data: object, user: Mapping[str, Any], action_source: ActionSource, at: str
) -> tuple[dict[str, Any], bool] | Invalid:
    """The `device` and `app` of an app event, and whether the person opted out of app
    tracking; offline events have neither."""
    if action_source == "offline" or not isinstance(app_data, Mapping):
        return {}, False
    flags: dict[str, bool | None] = {}
    for name in ("advertiser_tracking_enabled", "application_tracking_enabled"):
        try:
            flags[name] = _flag(app_data.get(name))
        except ValueError:
            return Invalid(f"{at}.app_data.{name} must be a boolean (0 or 1)")
    tracking = flags["advertiser_tracking_enabled"]
    app_tracking = flags["application_tracking_enabled"]
    extinfo: list[Any] = app_data.get("extinfo") or []

    def text(position: int) -> str | None:
        value = extinfo[position] if position < len(extinfo) else None
        return value if isinstance(value, str) and value and len(value) <= 256 else None

    device: dict[str, Any] = {}
    for name, value in (
        ("device_id", user.get("anon_id")),
        ("advertising_id", user.get("madid")),
        ("os_version", text(4)),
    ):
        if isinstance(value, str) and value:
            device[name] = value
    if tracking is not None:
        if action_source == "app_ios":
            device["att_status"] = "authorized" if tracking else "denied"
        elif not tracking:
            device["ads_opt_out"] = True
    app = {
        name: value
        for name, value in (("app_id", text(1)), ("app_version", text(3) or text(2)))
        if value is not None
    }
    fields: dict[str, Any] = {}
    if device:
        fields["device"] = device
    if app:
        fields["app"] = app
    return fields, app_tracking is False


def _flag(value: object) -> bool | None:
    """A documented 0/1 flag (the SDK sends true/false), None when absent.

    Raises:
        ValueError: it is neither.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return value == 1
    if isinstance(value, str) and value.strip().lower() in _TRUE_WORDS | _FALSE_WORDS:
        return value.strip().lower() in _TRUE_WORDS
    raise ValueError("not a flag")


def _sorted(value: object) -> object:
    if isinstance(value, Mapping):
        return {str(k): _sorted(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, list | tuple):
        return [_sorted(item) for item in value]
    return value
