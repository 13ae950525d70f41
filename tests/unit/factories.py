"""Builders for raw events and consent changes, raw-record-shaped, with no real personal data."""

from __future__ import annotations

import copy
from typing import Any, Final

from pipeline.core.consent import ConsentState, fold
from pipeline.core.deidentify import Pseudonymizer
from pipeline.core.parse import ParseLimits, Rejected, parse_consent_change, parse_event
from schemas import codec
from schemas.consent import ConsentChange
from schemas.events import Event, Source

NOW: Final = 1_700_000_000  # 2023-11-14T22:13:20Z
EVENT_YEAR: Final = 2023
USER: Final = "user-1"
DEVICE: Final = "device-1"
HASH_A: Final = "a" * 64
NO_KEY: Final = ParseLimits(require_key=False)


def pseudonymizer() -> Pseudonymizer:
    """A pseudonymizer with a fixed test key."""
    return Pseudonymizer(b"test-key-0123456789abcdef", "test-1")


def tag_event(**overrides: Any) -> dict[str, Any]:
    """A web tag event for `USER` with every field a raw record may carry; `overrides`
    merge deeply."""
    return merged(
        {
            "event_id": "evt-1",
            "event_name": "page_visit",
            "event_time": NOW - 60,
            "action_source": "web",
            "advertiser_id": "adv-1",
            "user_id": USER,
            "event_source_url": "https://shop.example.com/p/42?ref=mail",
            "user_data": {
                "em": [HASH_A],
                "ph": [],
                "external_id": ["ext-1"],
                "client_ip_address": "198.51.100.23",
                "client_user_agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
                "click_id": "click-1",
            },
            "browser": {"cookie_id": "cookie-1", "dnt": False, "gpc": False, "daa_opt_out": False},
            "custom_data": {
                "currency": "USD",
                "value": 12.5,
                "content_ids": ["sku-1"],
                "num_items": 1,
                "order_id": "order-1",
            },
        },
        overrides,
    )


def sdk_event(**overrides: Any) -> dict[str, Any]:
    """An Android app event for `USER` on `DEVICE`; `overrides` merge deeply."""
    return merged(
        {
            "event_id": "evt-2",
            "event_name": "add_to_cart",
            "event_time": NOW - 60,
            "action_source": "app_android",
            "advertiser_id": "adv-1",
            "user_id": USER,
            "user_data": {
                "em": [HASH_A],
                "ph": [],
                "hashed_maids": [],
                "client_ip_address": "2001:db8:1234:5678::1",
                "client_user_agent": "ShopApp/3.1 (Linux; Android 14; Pixel 8)",
            },
            "device": {
                "device_id": DEVICE,
                "os_version": "14",
                "att_status": None,
                "ads_opt_out": False,
                "advertising_id": "38400000-8cf0-11bd-b23e-10b96e40000d",
            },
            "app": {"app_id": "com.example.shop", "app_name": "Shop", "app_version": "3.1"},
            "custom_data": {"currency": "EUR", "value": 3.0, "content_ids": ["sku-2"]},
        },
        overrides,
    )


def ios_event(**overrides: Any) -> dict[str, Any]:
    """An iOS app event for `USER` on `DEVICE` (iOS 17, ATT authorized)."""
    base = sdk_event(
        action_source="app_ios",
        device={"os_version": "17.2", "att_status": "authorized"},
        user_data={"client_user_agent": "ShopApp/3.1 (iPhone; iOS 17.2)"},
    )
    return merged(base, overrides)


def widget_event(**overrides: Any) -> dict[str, Any]:
    """A Save button click on a third-party site by `USER`; `overrides` merge deeply."""
    return merged(
        {
            "event_id": "evt-3",
            "event_name": "save_click",
            "event_time": NOW - 60,
            "user_id": USER,
            "site_domain": "blog.example.org",
            "page_url": "https://blog.example.org/2023/recipes?utm=x",
            "widget_type": "save_button",
            "browser": {"cookie_id": "cookie-3", "dnt": False, "gpc": False, "daa_opt_out": False},
            "client_ip_address": "203.0.113.9",
            "client_user_agent": (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_1) AppleWebKit/605.1.15 "
                "(KHTML, like Gecko) Version/17.1 Safari/605.1.15"
            ),
        },
        overrides,
    )


RAW_EVENTS: Final = {"tag": tag_event, "sdk": sdk_event, "widget": widget_event}


def parsed(source: Source, raw: dict[str, Any]) -> Event:
    """`raw` through the ingest parser; fails the test if it is rejected."""
    event = parse_event(source, codec.dumps(raw), now=NOW, limits=NO_KEY)
    assert not isinstance(event, Rejected), event
    return event


def change(changed_at: int = 1, user_id: str = USER, **fields: Any) -> ConsentChange:
    """A consent change for `user_id`, through the ingest parser."""
    result = parse_consent_change(
        codec.dumps({"user_id": user_id, "changed_at": changed_at, **fields}), limits=NO_KEY
    )
    assert not isinstance(result, Rejected), result
    return result


def adult_in(country: str | None = "US", **settings: bool | None) -> ConsentState:
    """The state of an adult (born 1980) in `country` with the given settings set."""
    profile: dict[str, Any] = {"birth_year": 1980}
    if country is not None:
        profile["country"] = country
    changes = [change(profile=profile)]
    if settings:
        changes.append(change(changed_at=2, settings=settings))
    state = fold(changes)
    assert state is not None
    return state


def merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`base` with `overrides` merged in, recursively for dicts; `...` deletes a key."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if value is ...:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
