"""The demo's people: a few named accounts whose privacy settings page the demo prints.

Each is a synthetic person with a full consent record (settings on, no device or browser
signal that would deny anything on its own) and a linked email, browsing advertisers'
shops: one web tag event every few seconds, so that their settings page shows their next
events being decided. One lives in the US, one in the EEA (partner sharing is never
offered there), one is under 16 (nor to them). They are apart from the generated
population (`user-<n>`): the consent churn never touches them.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from pipeline.catalogue import CONSENT_CHANGES, IDENTITY_LINKS, RAW_TAG
from pipeline.sim.traffic import Record
from schemas import codec

_EVENTS: Final = ("page_visit", "view_category", "add_to_cart", "search", "checkout")
_AGENT: Final = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)


@dataclass(frozen=True)
class DemoPerson:
    """A named demo account."""

    user_id: str
    label: str
    """Who they are, for the demo's list of pages."""
    country: str
    age: int
    settings: dict[str, bool | None]

    @property
    def email_sha256(self) -> str:
        return hashlib.sha256(f"{self.user_id}@example.com".encode()).hexdigest()

    @property
    def cookie_id(self) -> str:
        return "ck-" + hashlib.sha256(self.user_id.encode()).hexdigest()[:16]


def demo_people() -> tuple[DemoPerson, ...]:
    """The demo's three people: in the US, in the EEA, under 16."""
    on: dict[str, bool | None] = {"personalization": True, "ads_from_partner_info": True}
    return (
        DemoPerson("demo-us", "in the US", "US", 34, {**on, "partner_sharing": True}),
        DemoPerson("demo-eea", "in the EEA (Germany)", "DE", 29, {**on, "partner_sharing": None}),
        DemoPerson("demo-teen", "under 16 (US)", "US", 14, {**on, "partner_sharing": None}),
    )


class PeopleTraffic:
    """The demo people's consent, links and events."""

    def __init__(
        self,
        people: tuple[DemoPerson, ...],
        seed: int,
        *,
        advertisers: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.people = people
        self._rng = random.Random(seed)
        self._advertisers = advertisers
        self._clock = clock

    def bootstrap(self) -> list[Record]:
        """Each person's full consent record and the link of their email."""
        now_ms = int(self._clock() * 1000)
        year = time.gmtime(self._clock()).tm_year
        records = []
        for person in self.people:
            consent = {
                "user_id": person.user_id,
                "changed_at": now_ms,
                "settings": dict(person.settings),
                "profile": {"country": person.country, "birth_year": year - person.age - 1},
            }
            records.append(
                Record(
                    CONSENT_CHANGES,
                    person.user_id.encode(),
                    codec.dumps(consent),
                    "consent.bootstrap",
                )
            )
            key = f"em:{person.email_sha256}"
            link = {"match_key": key, "user_id": person.user_id, "linked_at": now_ms}
            records.append(
                Record(IDENTITY_LINKS, key.encode(), codec.dumps(link), "identity.bootstrap")
            )
        return records

    def events(self) -> list[Record]:
        """One tag event of each person, now: a visit to an advertiser's shop."""
        return [self._event(person) for person in self.people]

    def _event(self, person: DemoPerson) -> Record:
        rng = self._rng
        advertiser = rng.randrange(self._advertisers)
        name = rng.choice(_EVENTS)
        event: dict[str, Any] = {
            "event_id": f"{rng.getrandbits(64):016x}",
            "event_name": name,
            "event_time": int(self._clock()),
            "action_source": "web",
            "advertiser_id": f"adv-{advertiser}",
            "event_source_url": f"https://shop{advertiser}.example.com/{name}",
            "user_data": {
                "em": [person.email_sha256],
                "client_ip_address": "192.0.2.10",
                "client_user_agent": _AGENT,
            },
            "browser": {"cookie_id": person.cookie_id},
        }
        return Record(RAW_TAG, event["event_id"].encode(), codec.dumps(event), "event")
