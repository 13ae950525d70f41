"""PII canaries: synthetic people whose identifiers are searched for where the product forbids them.

A `CanarySet` makes a few synthetic users with recognisable identifiers (user id, email
and its hash, IPv4 and IPv6 addresses, device, advertising, cookie and click ids), a full
consent record each, and events over all three sources that carry every identifier
(a third with a raw email, which ingest must hash). `PiiScanner` counts the places each
identifier turns up in, against `FORBIDDEN` , and also looks for the
shapes of the ordinary synthetic traffic's identifiers in logs, metrics and DLQ details.
Findings name the location and the kind of identifier, never the value.
"""

from __future__ import annotations

import hashlib
import random
import re
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from pipeline.catalogue import CONSENT_CHANGES, IDENTITY_LINKS, RAW
from pipeline.core.trust import TRUST_HEADER, trust_signature
from pipeline.sim.traffic import Record
from schemas import codec
from schemas.events import Source

SOURCES: Final[tuple[Source, ...]] = ("tag", "sdk", "widget")
KINDS: Final = (
    "user_id",
    "email",
    "email_sha256",
    "ipv4",
    "ipv6",
    "device_id",
    "advertising_id",
    "advertising_id_sha256",
    "cookie_id",
    "click_id",
)
_EVERYTHING: Final = frozenset(KINDS)

FORBIDDEN: Final[Mapping[str, frozenset[str]]] = MappingProxyType(
    {
        "worker_log": _EVERYTHING,
        "metrics": _EVERYTHING,
        "dlq.detail": _EVERYTHING,
        "audit": _EVERYTHING,
        "measurement": _EVERYTHING,
        "deidentified": _EVERYTHING,
        "aggregates": _EVERYTHING,
        "personalization": _EVERYTHING - {"user_id"},
        "ads": _EVERYTHING - {"user_id"},
        "partner_share": _EVERYTHING - {"user_id", "email_sha256"},
    }
)
"""Which canary kinds may never appear in each location (keys and values)."""

SYNTHETIC_SHAPES: Final[Mapping[str, re.Pattern[bytes]]] = MappingProxyType(
    {
        "synthetic_user_id": re.compile(rb"\buser-\d+\b"),
        "synthetic_email": re.compile(rb"user\d+@example\.com", re.IGNORECASE),
        "documentation_ipv4": re.compile(rb"\b(?:192\.0\.2|198\.51\.100|203\.0\.113)\.\d{1,3}\b"),
        "documentation_ipv6": re.compile(rb"\b2001:db8:[0-9a-f]{1,4}::[0-9a-f]{1,4}\b"),
        "synthetic_cookie_id": re.compile(rb"\bck-[0-9a-f]{16}\b"),
    }
)
"""Shapes of the ordinary synthetic traffic's identifiers (`pipeline.sim.traffic`), searched for
in worker logs, `/metrics` and DLQ details, where no identifier may appear at all."""
SHAPE_LOCATIONS: Final = frozenset({"worker_log", "metrics", "dlq.detail"})


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class CanaryUser:
    """One synthetic person with recognisable identifiers."""

    user_id: str
    email: str
    ipv4: str
    ipv6: str
    device_id: str
    advertising_id: str
    cookie_id: str
    click_id: str

    def values(self) -> dict[str, str]:
        return {
            "user_id": self.user_id,
            "email": self.email,
            "email_sha256": _sha256(self.email),
            "ipv4": self.ipv4,
            "ipv6": self.ipv6,
            "device_id": self.device_id,
            "advertising_id": self.advertising_id,
            "advertising_id_sha256": _sha256(self.advertising_id),
            "cookie_id": self.cookie_id,
            "click_id": self.click_id,
        }


class CanarySet:
    """A few canary users, their consent records and their events."""

    def __init__(self, run: str, users: int = 12, *, trust_key: bytes | None = None) -> None:
        self.run = run
        self.trust_key = trust_key
        self.users = [
            CanaryUser(
                user_id=f"cnry-{run}-u{i}",
                email=f"canary.{run}.{i}@example.net",
                # Outside the ranges `pipeline.sim.traffic` uses, and never a prefix of another.
                ipv4=f"198.18.{i + 10}.{200 + i}",
                ipv6=f"2001:db8:ca{i:02x}:feed:1:2:3:{i + 10:x}",
                device_id=f"cnry-dev-{run}-{i}",
                advertising_id=f"cafe{i:04x}-0000-4000-8000-{run[:12].ljust(12, '0')}",
                cookie_id=f"cnry-ck-{run}-{i}",
                click_id=f"cnry-clk-{run}-{i}",
            )
            for i in range(users)
        ]
        self.events_written: Counter[str] = Counter()

    def values(self) -> dict[str, list[str]]:
        """Every canary value, by kind."""
        out: dict[str, list[str]] = {kind: [] for kind in KINDS}
        for user in self.users:
            for kind, value in user.values().items():
                out[kind].append(value)
        return out

    def all_values(self) -> list[str]:
        return [value for values in self.values().values() for value in values]

    def consent_records(self) -> list[Record]:
        """A full, permissive consent record per canary user: identified outputs flow."""
        now_ms = int(time.time() * 1000)
        records = []
        for user in self.users:
            document = {
                "user_id": user.user_id,
                "changed_at": now_ms,
                "settings": {
                    "personalization": True,
                    "ads_from_partner_info": True,
                    "partner_sharing": True,
                },
                "profile": {"country": "US", "birth_year": 1980},
                "device": {
                    "device_id": user.device_id,
                    "platform": "android",
                    "ads_opt_out": False,
                },
            }
            records.append(
                Record(CONSENT_CHANGES, user.user_id.encode(), codec.dumps(document), "canary")
            )
        return records

    def link_records(self) -> list[Record]:
        """Each canary user's email, click id and advertising id, linked to them."""
        now_ms = int(time.time() * 1000)
        records = []
        for user in self.users:
            for key in (
                f"em:{_sha256(user.email)}",
                f"click:{user.click_id}",
                f"maid:{_sha256(user.advertising_id)}",
            ):
                link = {"match_key": key, "user_id": user.user_id, "linked_at": now_ms}
                records.append(Record(IDENTITY_LINKS, key.encode(), codec.dumps(link), "canary"))
        return records

    def event(self, rng: random.Random) -> Record:
        """One event of a random canary user, carrying every identifier it can."""
        user = self.users[int(rng.random() * len(self.users))]
        now = int(time.time())
        source: Source = SOURCES[int(rng.random() * 3)]
        raw_email = rng.random() < 0.33
        contact = [f"  {user.email.upper()}"] if raw_email else [_sha256(user.email)]
        event: dict[str, Any] = {
            "event_id": f"cnry-{rng.getrandbits(64):016x}",
            "event_name": "add_to_cart" if source != "widget" else "save_click",
            "event_time": now - int(rng.random() * 20),
            "user_id": user.user_id,
        }
        if source == "tag":
            event.update(
                action_source="web",
                advertiser_id="adv-canary",
                event_source_url=f"https://shop.example.com/cart?click={user.click_id}",
                user_data={
                    "em": contact,
                    "client_ip_address": user.ipv4,
                    "client_user_agent": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Firefox/128.0",
                    "click_id": user.click_id,
                },
                browser={"cookie_id": user.cookie_id, "dnt": False, "gpc": False},
                custom_data={"currency": "USD", "value": 12.5, "content_ids": ["sku-1"]},
            )
        elif source == "sdk":
            event.update(
                action_source="app_android",
                advertiser_id="adv-canary",
                user_data={
                    "em": contact,
                    "hashed_maids": [_sha256(user.advertising_id)],
                    "client_ip_address": user.ipv6,
                    "client_user_agent": "ShopApp/3.1 (Linux; Android 14)",
                },
                device={
                    "device_id": user.device_id,
                    "os_version": "14",
                    "ads_opt_out": False,
                    "advertising_id": user.advertising_id,
                },
                app={"app_id": "com.example.canary", "app_name": "Canary", "app_version": "1.0"},
                custom_data={"currency": "USD", "value": 7.0, "content_ids": ["sku-2"]},
            )
        else:
            event.update(
                site_domain="blog.example.org",
                page_url=f"https://blog.example.org/post?u={user.cookie_id}",
                widget_type="save_button",
                browser={"cookie_id": user.cookie_id, "dnt": False, "gpc": False},
                client_ip_address=user.ipv4,
                client_user_agent="Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Firefox/128.0",
            )
        self.events_written[source] += 1
        # Half come from a trusted producer that names the user; the rest are resolved.
        if self.trust_key is None or rng.random() < 0.5:
            del event["user_id"]
            value = codec.dumps(event)
            return Record(RAW[source], event["event_id"].encode(), value, "canary")
        value = codec.dumps(event)
        headers = ((TRUST_HEADER, trust_signature(self.trust_key, value)),)
        return Record(RAW[source], user.cookie_id.encode(), value, "canary", headers)


@dataclass
class PiiScanner:
    """Counts canary values and synthetic identifier shapes found where they are forbidden."""

    canaries: CanarySet | None
    hits: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(location, kind) -> records or lines with a forbidden identifier."""
    scanned: Counter[str] = field(default_factory=Counter)
    """location -> records or files scanned."""
    _pattern: re.Pattern[bytes] | None = None
    _kind_of: dict[bytes, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.canaries is None:
            return
        for kind, values in self.canaries.values().items():
            for value in values:
                self._kind_of[value.encode()] = kind
        # Longest first, so a value that contains another is reported as itself.
        ordered = sorted(self._kind_of, key=len, reverse=True)
        self._pattern = re.compile(b"|".join(re.escape(v) for v in ordered))

    def scan(self, location: str, *blobs: bytes | None) -> None:
        """Search one record (its key and value) or one text for forbidden identifiers."""
        self.scanned[location] += 1
        forbidden = FORBIDDEN[location]
        found: set[str] = set()
        for blob in blobs:
            if not blob:
                continue
            if self._pattern is not None:
                for match in self._pattern.finditer(blob):
                    kind = self._kind_of[match.group()]
                    if kind in forbidden:
                        found.add(kind)
            if location in SHAPE_LOCATIONS:
                for shape, pattern in SYNTHETIC_SHAPES.items():
                    if pattern.search(blob):
                        found.add(shape)
        for kind in found:
            self.hits[location, kind] += 1

    def scan_dlq(self, value: bytes) -> None:
        """A DLQ record: its detail may name fields and error types, never values."""
        try:
            detail = str(codec.loads(value).get("detail", ""))
        except (codec.DecodeError, AttributeError):
            detail = ""
        self.scan("dlq.detail", detail.encode())

    def summary(self) -> dict[str, Any]:
        return {
            "hits": sum(self.hits.values()),
            "hits_by_location": {
                f"{location}:{kind}": n for (location, kind), n in sorted(self.hits.items())
            },
            "scanned": dict(sorted(self.scanned.items())),
            "canary_values": 0 if self.canaries is None else len(self._kind_of),
        }
