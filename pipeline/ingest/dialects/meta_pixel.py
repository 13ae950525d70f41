"""The Meta pixel's beacon: `GET /tr?id=...&ev=...&cd[...]=...&ud[...]=...`.

What `fbq` and the pixel's image tag send to `www.facebook.com/tr` (Meta Pixel reference
and advanced guide, the base code's `<noscript>` image, the Data Processing Options page):

- `id` the pixel id (the registry says whose it is), `ev` the event (standard names as
  in the Conversions API, else custom), `eid` the event id (`eventID`, deduplicated with
  the server's `event_id`), `dl` the page, `rl` the referrer, `ts` the client's time;
- `cd[...]` custom data (`cd[value]`, `cd[currency]`, `cd[content_ids]` as a JSON array
  or one id, `cd[num_items]`, `cd[order_id]`), `ud[...]` advanced matching (`ud[em]`,
  `ud[ph]`, `ud[external_id]`, hashed or lowercase plain);
- `dpo=LDU` (with `dpoco`, `dpost`): limited data use; the documented geolocation example
  spells it `vdpo`, so that is read too;
- `fbp` / `fbc` parameters, or the `_fbp` / `_fbc` cookies: the browser id and the click
  id (the fbclid inside `fb.1.<time>.<fbclid>`);
- the browser signals (DNT, `Sec-GPC`, the opt-out cookie) from the request.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from pipeline.ingest.dialects import Invalid
from pipeline.ingest.dialects.browser import (
    bracketed,
    browser_signals,
    client_user_data,
    comma_list,
    integer,
)
from pipeline.ingest.dialects.meta import STANDARD_EVENTS, click_id
from schemas import codec

FBP_COOKIE: Final = "_fbp"
FBC_COOKIE: Final = "_fbc"


def pixel_id(params: Mapping[str, str]) -> str | None:
    """The pixel id a beacon names."""
    return params.get("id") or None


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
    """The tag event a pixel beacon describes, before validation, for the pixel's advertiser."""
    name = params.get("ev") or "PageView"
    event: dict[str, Any] = {
        "event_id": params.get("eid") or new_event_id(),
        "event_name": STANDARD_EVENTS.get(name, "custom"),
        "event_time": int(now),
        "advertiser_id": advertiser_id,
        "action_source": "web",
    }
    url = params.get("dl") or headers.get("Referer")
    if url:
        event["event_source_url"] = url
    if any(
        option.strip().upper() == "LDU"
        for key in ("dpo", "vdpo")
        for option in comma_list(params.get(key, ""))
    ):
        event["opt_out_type"] = "LDP"

    ud = bracketed(params, "ud")
    user_data: dict[str, Any] = {
        name: [ud[name]] for name in ("em", "ph", "external_id") if ud.get(name)
    }
    fbc = params.get("fbc") or cookies.get(FBC_COOKIE)
    if fbc:
        click = click_id(fbc)
        if click is None:
            return Invalid("fbc: not fb.<subdomain index>.<creation time>.<fbclid>")
        user_data["click_id"] = click
    user_data.update(client_user_data(headers, remote))
    if user_data:
        event["user_data"] = user_data

    fbp = params.get("fbp") or cookies.get(FBP_COOKIE)
    event["browser"] = browser_signals(headers, cookies, optout_cookie, fbp)

    cd = bracketed(params, "cd")
    custom: dict[str, Any] = {}
    for field in ("value", "currency", "order_id"):
        if cd.get(field):
            custom[field] = cd[field]
    if cd.get("num_items"):
        custom["num_items"] = integer(cd["num_items"])
    if cd.get("content_ids"):
        ids = _content_ids(cd["content_ids"])
        if ids is None:
            return Invalid("cd.content_ids: not a JSON array of ids or one id")
        custom["content_ids"] = ids
    if custom:
        event["custom_data"] = custom
    return event


def _content_ids(text: str) -> list[str] | None:
    if not text.lstrip().startswith("["):
        return comma_list(text)
    try:
        value = codec.loads(text)
    except codec.DecodeError:
        return None
    if not isinstance(value, list) or not all(
        isinstance(i, str | int) and not isinstance(i, bool) for i in value
    ):
        return None
    return [str(i) for i in value]
