"""What the collector makes of a browser request: pure functions over plain values.

- `beacon_event`: a `GET /v1/tag` pixel request (query parameters, headers, cookies) as
  a SPEC §4 tag event;
- `with_browser_signals`: a widget event with the signals of the browser that sent it;
- `events_source`: which raw topic a Conversions-API event belongs to.

Browser signals: `DNT: 1` sets `browser.dnt`, `Sec-GPC: 1` sets `browser.gpc`, and the
web opt-out cookie (`optout=1` by default; `PIPELINE_COLLECTOR_OPTOUT_COOKIE` names it)
sets `browser.daa_opt_out`. A signal the request carries can only switch a flag on.

Query values arrive as text; numbers and booleans are converted when they parse, and
left as text otherwise, so validation rejects them naming the field. Parameters not
listed in `BEACON_PARAMETERS` are ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from schemas.events import Source

BEACON_PARAMETERS: Final = (
    "event_id",
    "event_name",
    "event_time",
    "advertiser_id",
    "user_id",
    "event_source_url",
    "cookie_id",
    "click_id",
    "em",
    "ph",
    "external_id",
    "value",
    "currency",
    "content_ids",
    "num_items",
    "order_id",
    "opt_out",
    "opt_out_type",
    "surface",
)
"""Query parameters the pixel reads; `em`, `ph`, `external_id`, `content_ids` are comma lists."""

MAX_USER_AGENT: Final = 2048
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})


def header_flag(value: str | None) -> bool:
    """Whether a `DNT` / `Sec-GPC` header (or the opt-out cookie) says yes."""
    return value is not None and value.strip().lower() in _TRUE


def browser_signals(
    headers: Mapping[str, str], cookies: Mapping[str, str], optout_cookie: str
) -> dict[str, bool]:
    """The DNT, GPC and web opt-out signals a browser request carries."""
    return {
        "dnt": header_flag(headers.get("DNT")),
        "gpc": header_flag(headers.get("Sec-GPC")),
        "daa_opt_out": header_flag(cookies.get(optout_cookie)),
    }


def beacon_event(
    query: Mapping[str, str],
    headers: Mapping[str, str],
    cookies: Mapping[str, str],
    *,
    remote: str | None,
    now: float,
    new_event_id: Callable[[], str],
    optout_cookie: str,
) -> dict[str, Any]:
    """The tag event a pixel request describes, before validation.

    Defaults: `event_name` page_visit, `event_id` a fresh id, `event_time` now,
    `event_source_url` the Referer. The client's address and user agent come from the
    request.
    """
    q = {name: query[name] for name in BEACON_PARAMETERS if name in query}
    event: dict[str, Any] = {
        "event_id": q.get("event_id") or new_event_id(),
        "event_name": q.get("event_name") or "page_visit",
        "event_time": _integer(q["event_time"]) if q.get("event_time") else int(now),
        "action_source": "web",
    }
    for name in ("advertiser_id", "user_id", "opt_out_type", "surface"):
        if q.get(name):
            event[name] = q[name]
    url = q.get("event_source_url") or headers.get("Referer")
    if url:
        event["event_source_url"] = url
    if "opt_out" in q:
        event["opt_out"] = _boolean(q["opt_out"])

    user_data: dict[str, Any] = {}
    for name in ("em", "ph", "external_id"):
        if q.get(name):
            user_data[name] = _comma_list(q[name])
    if q.get("click_id"):
        user_data["click_id"] = q["click_id"]
    if remote:
        user_data["client_ip_address"] = remote
    agent = headers.get("User-Agent")
    if agent:
        user_data["client_user_agent"] = agent[:MAX_USER_AGENT]
    if user_data:
        event["user_data"] = user_data

    browser: dict[str, Any] = browser_signals(headers, cookies, optout_cookie)
    if q.get("cookie_id"):
        browser = {"cookie_id": q["cookie_id"], **browser}
    event["browser"] = browser

    custom: dict[str, Any] = {}
    if q.get("value"):
        custom["value"] = _number(q["value"])
    if q.get("num_items"):
        custom["num_items"] = _integer(q["num_items"])
    for name in ("currency", "order_id"):
        if q.get(name):
            custom[name] = q[name]
    if q.get("content_ids"):
        custom["content_ids"] = _comma_list(q["content_ids"])
    if custom:
        event["custom_data"] = custom
    return event


def with_browser_signals(
    event: object,
    headers: Mapping[str, str],
    cookies: Mapping[str, str],
    *,
    remote: str | None,
    optout_cookie: str,
) -> object:
    """A widget event posted by a browser, with that browser's signals and address.

    A signal in the request switches the event's flag on, never off; the client's
    address and user agent fill in only when the event has none. Anything that is not
    a JSON object is returned as is, for validation to reject.
    """
    if not isinstance(event, Mapping):
        return event
    merged = dict(event)
    browser = merged.get("browser")
    if browser is None:
        browser = {}
    if isinstance(browser, Mapping):
        signals = browser_signals(headers, cookies, optout_cookie)
        browser = dict(browser)
        for name, on in signals.items():
            if on:
                browser[name] = True
        merged["browser"] = browser
    if remote and "client_ip_address" not in merged:
        merged["client_ip_address"] = remote
    agent = headers.get("User-Agent")
    if agent and "client_user_agent" not in merged:
        merged["client_user_agent"] = agent[:MAX_USER_AGENT]
    return merged


def events_source(event: object, requested: Source | None = None) -> Source:
    """The raw topic of a Conversions-API event: web events to tag, app and offline to sdk."""
    if requested is not None:
        return requested
    if isinstance(event, Mapping) and event.get("action_source", "web") != "web":
        return "sdk"
    return "tag"


def _comma_list(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _integer(value: str) -> int | str:
    text = value.strip()
    return int(text) if text.isascii() and text.lstrip("-").isdigit() and len(text) < 20 else value


def _number(value: str) -> float | str:
    try:
        number = float(value)
    except ValueError:
        return value
    return number if number == number and abs(number) != float("inf") else value


def _boolean(value: str) -> bool | str:
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    return value
