"""The platform's own dialect: `POST /v1/events`, `GET /v1/tag`, `POST /v1/widget`.

- `/v1/events`: a batch `{"data": [event, ...]}` of raw records; `events_source`
  says which raw topic each belongs to (web to tag, app and offline to sdk);
- `/v1/tag`: the pixel, a tag event from query parameters (`beacon_event`);
- `/v1/widget`: widget events, with the signals of the browser that sent them
  (`with_browser_signals`).

With a token (`for_advertiser`): an event without `advertiser_id` gets the token's; one
naming another advertiser is forbidden; a `user_id` needs a trusted token. The pixel
carries no token, so a beacon cannot name a user.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from pipeline.ingest.dialects import Invalid
from pipeline.ingest.dialects.browser import (
    MAX_USER_AGENT,
    boolean,
    browser_signals,
    client_user_data,
    comma_list,
    integer,
    number,
)
from schemas.events import Source

BEACON_PARAMETERS: Final = (
    "event_id",
    "event_name",
    "event_time",
    "advertiser_id",
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

UNTRUSTED_USER_ID: Final = "user_id: requires a trusted token"
BEACON_USER_ID: Final = "user_id: a pixel carries no token, so it cannot name a user"


@dataclass(frozen=True, slots=True)
class Forbidden:
    """The request names an advertiser the token does not belong to."""

    detail: str


def for_advertiser(
    event: object, advertiser_id: str, *, trusted: bool, advertiser_optional: bool = False
) -> object | Invalid | Forbidden:
    """`event` as written for the token's advertiser, or why it may not be.

    A missing `advertiser_id` becomes the token's (unless `advertiser_optional`, as on
    widget events, where it stays absent); another advertiser's is forbidden; a `user_id`
    needs a trusted token. Anything that is not a JSON object is returned as is, for
    validation to reject.
    """
    if not isinstance(event, Mapping):
        return event
    named = event.get("advertiser_id")
    if named is not None and named != advertiser_id:
        return Forbidden("advertiser_id: another advertiser's")
    if event.get("user_id") is not None and not trusted:
        return Invalid(UNTRUSTED_USER_ID)
    if named is None and not advertiser_optional:
        return {**event, "advertiser_id": advertiser_id}
    return event


def events_source(event: object, requested: Source | None = None) -> Source:
    """The raw topic of a Conversions-API event: web events to tag, app and offline to sdk."""
    if requested is not None:
        return requested
    if isinstance(event, Mapping) and event.get("action_source", "web") != "web":
        return "sdk"
    return "tag"


def beacon_event(
    query: Mapping[str, str],
    headers: Mapping[str, str],
    cookies: Mapping[str, str],
    *,
    remote: str | None,
    now: float,
    new_event_id: Callable[[], str],
    optout_cookie: str,
) -> dict[str, Any] | Invalid:
    """The tag event a `/v1/tag` request describes, before validation.

    Defaults: `event_name` page_visit, `event_id` a fresh id, `event_time` now,
    `event_source_url` the Referer. The client's address and user agent come from the
    request.
    """
    if query.get("user_id"):
        return Invalid(BEACON_USER_ID)
    q = {name: query[name] for name in BEACON_PARAMETERS if name in query}
    event: dict[str, Any] = {
        "event_id": q.get("event_id") or new_event_id(),
        "event_name": q.get("event_name") or "page_visit",
        "event_time": integer(q["event_time"]) if q.get("event_time") else int(now),
        "action_source": "web",
    }
    for name in ("advertiser_id", "opt_out_type", "surface"):
        if q.get(name):
            event[name] = q[name]
    url = q.get("event_source_url") or headers.get("Referer")
    if url:
        event["event_source_url"] = url
    if "opt_out" in q:
        event["opt_out"] = boolean(q["opt_out"])

    user_data: dict[str, Any] = {}
    for name in ("em", "ph", "external_id"):
        if q.get(name):
            user_data[name] = comma_list(q[name])
    if q.get("click_id"):
        user_data["click_id"] = q["click_id"]
    user_data.update(client_user_data(headers, remote))
    if user_data:
        event["user_data"] = user_data

    event["browser"] = browser_signals(headers, cookies, optout_cookie, q.get("cookie_id"))

    custom: dict[str, Any] = {}
    if q.get("value"):
        custom["value"] = number(q["value"])
    if q.get("num_items"):
        custom["num_items"] = integer(q["num_items"])
    for name in ("currency", "order_id"):
        if q.get(name):
            custom[name] = q[name]
    if q.get("content_ids"):
        custom["content_ids"] = comma_list(q["content_ids"])
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
