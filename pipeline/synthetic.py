"""Synthetic traffic for demos and tests: SPEC-shaped raw events with no real personal data."""

from __future__ import annotations

import hashlib
import random
import time
from typing import Any

EVENT_NAMES = ("page_visit", "view_category", "search", "add_to_cart", "checkout", "lead", "signup")


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def tag_event(rng: random.Random, n_users: int, now: float | None = None) -> dict[str, Any]:
    """One conversion-tag event for a random synthetic user (`user-<n>`, `<n>@example.com`)."""
    user = rng.randrange(n_users)
    event_time = int(now if now is not None else time.time())
    return {
        "event_id": f"evt-{rng.getrandbits(64):016x}",
        "event_name": rng.choice(EVENT_NAMES),
        "event_time": event_time,
        "action_source": "web",
        "advertiser_id": f"adv-{rng.randrange(20)}",
        "user_id": f"user-{user}",
        "event_source_url": f"https://shop{rng.randrange(20)}.example.com/p/{rng.randrange(1000)}",
        "user_data": {
            "em": [_sha256(f"{user}@example.com")],
            "client_ip_address": f"198.51.100.{rng.randrange(1, 255)}",
            "client_user_agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
        },
        "browser": {
            "cookie_id": f"ck-{user}",
            "dnt": rng.random() < 0.1,
            "gpc": rng.random() < 0.1,
            "daa_opt_out": rng.random() < 0.05,
        },
        "custom_data": {"currency": "USD", "value": round(rng.uniform(1, 200), 2)},
    }


COUNTRIES = ("US", "US", "US", "CA", "GB", "DE", "FR", "BR", "IN", "CH")


def consent_change(rng: random.Random, user: int, now: float | None = None) -> dict[str, Any]:
    """A full consent record for synthetic user `user-<n>`: settings, profile."""
    changed_at = int((now if now is not None else time.time()) * 1000)
    return {
        "user_id": f"user-{user}",
        "changed_at": changed_at,
        "settings": {
            "personalization": rng.random() > 0.1,
            "ads_from_partner_info": rng.random() > 0.1,
            "partner_sharing": rng.random() > 0.2,
        },
        "profile": {"country": rng.choice(COUNTRIES), "birth_year": rng.randint(1950, 2015)},
    }
