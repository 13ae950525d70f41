"""The Pinterest tag's beacon: `GET /v3/?tid=...&event=...&ed=...&pd=...&ad=...&cb=...`.

What `pintrk` sends to `ct.pinterest.com/v3/` (Pinterest's "Pinterest tag parameters and
cookies" help page; the tag's own code; the image tag of the base code):

- `tid` the tag id (the registry says whose it is), `event` the event (`init` from the
  base code, `pagevisit`, `addtocart`, `checkout`, ... lowercase, or CamelCase from newer
  tags; user-defined names are `custom`), `cb` a cache buster;
- `ed` event data, `pd` partner data, `ad` automatic data: JSON objects, or in the image
  tag (`noscript=1`) bracket keys such as `pd[em]=...`, `ed[value]=...`;
- `ed`: `event_id` / `eventID` (the deduplication id), `value`, `currency`, `order_id`,
  `order_quantity`, `line_items[].product_id`, `user_data.em`;
- `pd`: `em` (hashed email), `ph`, `external_id`, `epik` (the click id from the `_epik`
  cookie), `pin_unauth`, and `opt_out_type` (`LDP`, limited data processing, as
  Pinterest's "Use Limited Data Processing flag" page shows for both tags);
- `ad`: `loc` (the page), `ua`;
- the request's cookies `_epik` (click id) and `_pin_unauth` (browser id), a top-level
  `epik` parameter, and the browser signals (DNT, `Sec-GPC`, the opt-out cookie).

Unparseable `ed`, `pd` or `ad` reject the beacon (a signal such as LDP may be inside).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final

from pipeline.ingest.dialects import Invalid, string_list
from pipeline.ingest.dialects.browser import (
    bracketed,
    browser_signals,
    client_user_data,
    integer,
    json_object,
)
from schemas.events import EventName

WIRE_EVENTS: Final[Mapping[str, EventName]] = MappingProxyType(
    {
        "init": "page_visit",
        "pagevisit": "page_visit",
        "page": "page_visit",
        "viewcontent": "page_visit",
        "viewcategory": "view_category",
        "search": "search",
        "addtocart": "add_to_cart",
        "addtowishlist": "add_to_wishlist",
        "checkout": "checkout",
        "watchvideo": "watch_video",
        "signup": "signup",
        "lead": "lead",
        "subscribe": "subscribe",
        "custom": "custom",
    }
)
"""Event names as the tag sends them (case, spaces and underscores ignored); `init`, the
base code's page load, is a page visit; anything else is a custom event."""

EPIK_COOKIE: Final = "_epik"
UNAUTH_COOKIE: Final = "_pin_unauth"


def tag_id(params: Mapping[str, str]) -> str | None:
    """The tag id a beacon names."""
    return params.get("tid") or None


def event_name(wire: str | None) -> EventName:
    """The raw event name of an event as the tag sends it."""
    if not wire:
        return "page_visit"
    key = wire.replace(" ", "").replace("_", "").lower()
    return WIRE_EVENTS.get(key, "custom")


def beacon_event(
    params: Mapping[str, str],
    headers: Mapping[str, str],
    cookies: Mapping[str, str],
    *,
    advertiser_id: str,
    remote: str | None,
    now: float,
    new_event_id: Callable[[], str],
    optout_cookie: str,
) -> dict[str, Any] | Invalid:
    """The tag event a beacon describes, before validation, for the tag's advertiser."""
    parts: dict[str, dict[str, Any]] = {}
    for name in ("ed", "pd", "ad"):
        decoded = json_object(params.get(name))
        if decoded is None:
            return Invalid(f"{name}: not a JSON object")
        parts[name] = {**decoded, **bracketed(params, name)}
    ed, pd, ad = parts["ed"], parts["pd"], parts["ad"]

    event_id = ed.get("event_id") or ed.get("eventID") or new_event_id()
    event: dict[str, Any] = {
        "event_id": event_id,
        "event_name": event_name(params.get("event")),
        "event_time": int(now),
        "advertiser_id": advertiser_id,
        "action_source": "web",
    }
    url = ad.get("loc") or headers.get("Referer")
    if url:
        event["event_source_url"] = url

    user_data: dict[str, Any] = {}
    nested = ed.get("user_data")
    ed_user: Mapping[str, Any] = nested if isinstance(nested, Mapping) else {}
    for name, values in (
        ("em", pd.get("em", ed_user.get("em"))),
        ("ph", pd.get("ph", ed_user.get("phone"))),
        ("external_id", pd.get("external_id")),
    ):
        if values is None:
            continue
        listed = string_list(values)
        if listed is None:
            return Invalid(f"pd.{name}: not a string or a list of strings")
        user_data[name] = listed
    click = pd.get("epik") or params.get("epik") or cookies.get(EPIK_COOKIE)
    if click:
        user_data["click_id"] = click
    user_data.update(client_user_data(headers, remote))
    if "client_user_agent" not in user_data and isinstance(ad.get("ua"), str):
        user_data["client_user_agent"] = ad["ua"][:2048]
    if user_data:
        event["user_data"] = user_data

    unauth = pd.get("pin_unauth") or cookies.get(UNAUTH_COOKIE)
    event["browser"] = browser_signals(headers, cookies, optout_cookie, unauth)

    custom: dict[str, Any] = {}
    for name, value in (
        ("value", ed.get("value")),
        ("currency", ed.get("currency")),
        ("order_id", ed.get("order_id")),
        ("opt_out_type", pd.get("opt_out_type", ed.get("opt_out_type"))),
    ):
        if value is not None and value != "":
            custom[name] = value
    quantity = ed.get("order_quantity")
    if quantity is not None:
        custom["num_items"] = integer(quantity) if isinstance(quantity, str) else quantity
    items = ed.get("line_items")
    if isinstance(items, list):
        ids = [i.get("product_id") for i in items if isinstance(i, Mapping)]
        content_ids = [str(i) for i in ids if isinstance(i, str | int) and not isinstance(i, bool)]
        if content_ids:
            custom["content_ids"] = content_ids
    if custom:
        event["custom_data"] = custom
    return event
