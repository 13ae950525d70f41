"""Synthetic traffic: raw-record-shaped raw events and consent changes, deterministic per seed.

A `TrafficGenerator` owns a population of synthetic users (`user-<n>`, emails at
example.com, phones under the unassigned +1 555 area code, IPs from the documentation ranges)
with stable attributes drawn from a `TrafficConfig`: region, age, account settings, a
browser (DNT, GPC, the web opt-out cookie), one app device (iOS with an ATT status, or
Android with the ads opt-out), a widget session and the click ids of ads they clicked.
It yields Kafka-ready `Record`s:

- `bootstrap()`: both of these, consent first:
- `consent_bootstrap()`: one full consent record per registered user;
- `identity_bootstrap()`: the `identity.links` of every user's match keys (hashed email
  and phone, advertising id, widget session, click ids);
- `records(n)`: `n` raw records (events, tag/server duplicates, malformed records,
  customer-list members added to advertisers' audiences) and, interleaved, the churn they
  caused: consent revocations, re-grants, device changes and deletions (whose keys are
  unlinked), emails moving to another account, new ad clicks, list members removed.

Raw events look like the advertisers' integrations send them: without a `user_id`,
naming the person by match keys only, and keyed by their event id (the producer's
choice; the pipeline re-keys). A share comes from a trusted producer that names the
user and signs the record (`pipeline.core.trust`), when the generator has the trust key.

`consent.changes` is compacted by user id, so every consent record carries the user's
full current consent (settings, profile and device), and a deletion is the last record
a user ever gets. The generator does no I/O: `pipeline.sim.stream` writes its records.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, NamedTuple

from pipeline.catalogue import (
    CONSENT_CHANGES,
    IDENTITY_LINKS,
    RAW_AUDIENCE,
    RAW_SDK,
    RAW_TAG,
    RAW_WIDGET,
    Topic,
)
from pipeline.core.identity import advertising_id_key
from pipeline.core.policy import EEA_GB_CH
from pipeline.core.route import list_key
from pipeline.core.trust import TRUST_HEADER, trust_signature
from schemas import codec

REGION_COUNTRIES: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "EEA": ("DE", "FR", "IT", "ES", "NL", "PL", "SE", "IE", "BE", "AT", "DK", "PT", "NO"),
        "GB": ("GB",),
        "CH": ("CH",),
        "US": ("US",),
        "other": ("CA", "BR", "IN", "JP", "AU", "MX", "ZA"),
    }
)
AGE_RANGES: Final[Mapping[str, tuple[int, int]]] = MappingProxyType(
    {
        "under_16": (13, 15),
        "16_17": (16, 17),
        "18_34": (18, 34),
        "35_54": (35, 54),
        "55_plus": (55, 84),
    }
)
"""Age buckets by the youngest age consistent with the birth year; or `unknown`."""

SETTINGS: Final = ("personalization", "ads_from_partner_info", "partner_sharing")
MALFORMED_KINDS: Final = (
    "invalid_json",
    "invalid_utf8",
    "schema_violation",
    "too_old",
    "in_future",
)
"""Kinds of malformed raw record, each named after the DLQ reason the pipeline gives it.
(Raw records may be keyed any way; the churn's `unkeyed` consent changes are the
`missing_key` ones.)"""

_EVENT_NAMES: Final = (
    ("page_visit", 0.40),
    ("view_category", 0.14),
    ("search", 0.10),
    ("add_to_cart", 0.12),
    ("add_to_wishlist", 0.04),
    ("checkout", 0.07),
    ("lead", 0.03),
    ("signup", 0.03),
    ("subscribe", 0.02),
    ("watch_video", 0.04),
    ("custom", 0.01),
)
_WIDGET_EVENTS: Final = (
    ("widget_view", ("save_button", "pin_widget", "board_widget", "profile_widget")),
    ("save_click", ("save_button",)),
    ("follow_click", ("follow_button",)),
)
_COMMERCE: Final = frozenset({"view_category", "add_to_cart", "add_to_wishlist", "checkout"})
_CURRENCIES: Final = ("USD", "EUR", "GBP", "CHF", "CAD")
_WEB_AGENTS: Final = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
)
_IOS_VERSIONS: Final = ("18.1", "17.5", "17.2", "16.7")
_LEGACY_IOS_VERSIONS: Final = ("14.4", "13.7")
_ANDROID_VERSIONS: Final = ("15", "14", "13", "12")
_ZERO_AD_ID: Final = "00000000-0000-0000-0000-000000000000"
_IPV4_PREFIXES: Final = ("192.0.2.", "198.51.100.", "203.0.113.")
_HOUR: Final = 3600
_DAY: Final = 24 * _HOUR


AUDIENCES_PER_ADVERTISER: Final = 2


def audience_ids(advertiser: int) -> tuple[str, ...]:
    """The customer lists of generated advertiser `advertiser` (numeric, as Pinterest list
    ids and Meta audience ids are)."""
    first = 7_100_000_000 + advertiser * 10
    return tuple(str(first + k) for k in range(AUDIENCES_PER_ADVERTISER))


def _weights(**shares: float) -> Mapping[str, float]:
    return MappingProxyType(shares)


@dataclass(frozen=True)
class TrafficConfig:
    """What the synthetic traffic looks like.

    Plain `*_share` fields are probabilities in [0, 1]. Mapping fields are weights,
    normalized to sum to 1. Per-user attributes (region, age, settings, browser and
    device signals) are drawn once per user; per-event ones on every event.
    """

    users: int = 10_000
    advertisers: int = 50
    platforms: Mapping[str, float] = field(
        default_factory=lambda: _weights(web=0.55, ios=0.25, android=0.20)
    )
    """Where an event happens; web events come from `web_sources`, app events are sdk."""
    web_sources: Mapping[str, float] = field(
        default_factory=lambda: _weights(tag=0.75, widget=0.20, sdk=0.05)
    )
    """Which collector a web event comes through (sdk: a server Conversions-API upload)."""
    att: Mapping[str, float] = field(
        default_factory=lambda: _weights(
            authorized=0.30, denied=0.45, not_determined=0.20, restricted=0.05
        )
    )
    legacy_ios_share: float = 0.05
    """iOS devices older than 14.5, where ATT does not apply."""
    android_opt_out_share: float = 0.12
    dnt_share: float = 0.10
    gpc_share: float = 0.12
    optout_cookie_share: float = 0.05
    regions: Mapping[str, float] = field(
        default_factory=lambda: _weights(EEA=0.30, GB=0.08, CH=0.02, US=0.40, other=0.20)
    )
    ages: Mapping[str, float] = field(
        default_factory=lambda: MappingProxyType(
            {
                "under_16": 0.05,
                "16_17": 0.04,
                "18_34": 0.38,
                "35_54": 0.33,
                "55_plus": 0.15,
                "unknown": 0.05,
            }
        )
    )
    settings_off: Mapping[str, float] = field(
        default_factory=lambda: _weights(
            personalization=0.08, ads_from_partner_info=0.10, partner_sharing=0.15
        )
    )
    """Outside EEA/GB/CH (opt-out regions): share of users who turned each setting off."""
    opt_in: Mapping[str, float] = field(
        default_factory=lambda: _weights(
            personalization=0.60, ads_from_partner_info=0.50, partner_sharing=0.30
        )
    )
    """In EEA/GB/CH (opt-in regions): share of users who turned each setting on."""
    unregistered_share: float = 0.02
    """Users the platform knows by id but who have no consent record (fail closed)."""
    anonymous_share: float = 0.08
    """Events of visitors the platform does not know: no match key links to anyone."""
    trusted_share: float = 0.05
    """Events from a trusted producer that names the user (and signs the record)."""
    click_share: float = 0.3
    """Tag events that carry the click id of an ad the user clicked."""
    list_share: float = 0.02
    """Raw records that are customer-list uploads: an advertiser adds a member to one of
    its audiences, by hashed email and phone."""
    unmatched_member_share: float = 0.15
    """List members the platform does not know (no key links to anyone)."""
    on_platform_share: float = 0.30
    """Share of checkouts initiated on the platform itself."""
    opt_out_share: float = 0.01
    ldp_share: float = 0.01
    raw_contact_share: float = 0.03
    """Tag and sdk events carrying a raw (unhashed) email, which ingest must hash."""
    duplicate_share: float = 0.03
    """Raw records that repeat a recent tag event as a server (sdk) upload."""
    malformed_share: float = 0.01
    churn_per_event: float = 0.01
    """Consent changes per raw record while running."""
    churn: Mapping[str, float] = field(
        default_factory=lambda: _weights(
            revoke=0.40,
            regrant=0.30,
            device=0.10,
            delete=0.05,
            move_email=0.05,
            new_click=0.08,
            unkeyed=0.02,
            list_remove=0.05,
        )
    )
    """Churn per kind: consent changes, identity changes (an email moving to another
    account, a new ad click's click id), consent changes sent without a key, and an
    advertiser removing a member from one of its audiences."""

    def __post_init__(self) -> None:
        if self.users < 1 or self.advertisers < 1:
            raise ValueError("users and advertisers must be at least 1")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_share") or f.name == "churn_per_event":
                if not 0.0 <= value <= 1.0:
                    raise ValueError(f"{f.name} must be between 0 and 1")
            elif isinstance(value, Mapping):
                self._check_weights(f.name, value)
        if self.duplicate_share + self.malformed_share + self.list_share > 1.0:
            raise ValueError("duplicate_share + malformed_share + list_share must be at most 1")

    @staticmethod
    def _check_weights(name: str, weights: Mapping[str, float]) -> None:
        if any(w < 0 for w in weights.values()):
            raise ValueError(f"{name}: weights must not be negative")
        if name not in ("settings_off", "opt_in") and sum(weights.values()) <= 0:
            raise ValueError(f"{name}: weights must not all be zero")
        if name in ("settings_off", "opt_in") and any(w > 1 for w in weights.values()):
            raise ValueError(f"{name}: shares must be between 0 and 1")

    def override(self, name: str, value: float) -> TrafficConfig:
        """A copy with one field changed: `dnt_share`, or `platforms.ios` for a weight.

        Raises:
            ValueError: no such field or key, or the result is invalid.
        """
        field_name, _, key = name.partition(".")
        known = {f.name: f for f in dataclasses.fields(self)}
        if field_name not in known:
            raise ValueError(f"unknown traffic setting {field_name!r}")
        current = getattr(self, field_name)
        if isinstance(current, Mapping):
            if key not in current:
                raise ValueError(f"{field_name} has no key {key!r}; one of {sorted(current)}")
            updated: Any = MappingProxyType({**current, key: float(value)})
        elif key:
            raise ValueError(f"{field_name} is not a mapping")
        elif field_name in ("users", "advertisers"):
            updated = int(value)
        else:
            updated = float(value)
        return dataclasses.replace(self, **{field_name: updated})


class Record(NamedTuple):
    """One record for Kafka: its catalogue topic, key, value, what it is, its headers."""

    topic: Topic
    key: bytes | None
    value: bytes | None
    kind: str
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(slots=True)
class SyntheticUser:
    """A synthetic person and their current consent, browser and device."""

    index: int
    user_id: str
    registered: bool
    country: str
    birth_year: int | None
    settings: dict[str, bool | None]
    email: str
    email_sha256: str
    phone_sha256: str
    session_id: str
    click_ids: list[str]
    cookie_id: str
    dnt: bool
    gpc: bool
    daa_opt_out: bool
    ip: str
    web_agent: str
    platform: str
    device_id: str
    os_version: str
    att_status: str | None
    ads_opt_out: bool
    advertising_id: str | None
    deleted: bool = False
    changed_at_ms: int = 0


class _Picker:
    """Draws keys by weight with one uniform number; weights are normalized."""

    __slots__ = ("_cumulative", "_keys")

    def __init__(self, weights: Mapping[str, float]) -> None:
        total = sum(weights.values())
        running = 0.0
        self._keys: list[str] = []
        self._cumulative: list[float] = []
        for key, weight in weights.items():
            if weight > 0:
                running += weight / total
                self._keys.append(key)
                self._cumulative.append(running)
        self._cumulative[-1] = 1.0

    def pick(self, u: float) -> str:
        for key, bound in zip(self._keys, self._cumulative, strict=True):
            if u < bound:
                return key
        return self._keys[-1]


def _as_stranger(event: dict[str, Any], rng: random.Random) -> None:
    """Make `event` one of a visitor the platform does not know: no key links to anyone."""
    event.pop("session_id", None)
    user_data = event.get("user_data")
    if user_data is not None:
        for name in ("click_id", "ph", "hashed_maids"):
            user_data.pop(name, None)
        user_data["em"] = [f"{rng.getrandbits(256):064x}"]
    device = event.get("device")
    if device is not None:
        device.pop("advertising_id", None)
    browser = event.get("browser")
    if browser is not None:
        browser["cookie_id"] = f"ck-{rng.getrandbits(64):016x}"


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _below(rng: random.Random, n: int) -> int:
    """A uniform integer in [0, n): `randrange`'s job, several times faster."""
    return int(rng.random() * n)


def _choice(rng: random.Random, options: tuple[str, ...] | list[str]) -> str:
    return options[int(rng.random() * len(options))]


def _uuid(rng: random.Random) -> str:
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class TrafficGenerator:
    """Deterministic synthetic traffic for one seed; `counts` tallies what it produced.

    Args:
        trust_key: the deployment's trust key; without it no event names its user.
    """

    def __init__(
        self,
        config: TrafficConfig,
        seed: int,
        clock: Callable[[], float] = time.time,
        *,
        trust_key: bytes | None = None,
    ) -> None:
        self.config = config
        self.seed = seed
        self._trust_key = trust_key
        self.counts: Counter[str] = Counter()
        """Records by kind: `event`, `duplicate`, `malformed.<reason>`, `consent.<kind>`."""
        self.topics: Counter[str] = Counter()
        """Records by logical topic name."""
        self._clock = clock
        self._rng = random.Random(seed)
        self._year = time.gmtime(clock()).tm_year
        self._platforms = _Picker(config.platforms)
        self._web_sources = _Picker(config.web_sources)
        self._churn = _Picker(config.churn)
        self._event_names = _Picker(dict(_EVENT_NAMES))
        self._regions = _Picker(config.regions)
        self._ages = _Picker(config.ages)
        self._att = _Picker(config.att)
        app_weights = {"ios": config.platforms.get("ios", 0.0)}
        app_weights["android"] = config.platforms.get("android", 0.0)
        self._app_platforms = _Picker(
            app_weights if sum(app_weights.values()) > 0 else {"ios": 1.0, "android": 1.0}
        )
        self._recent_tags: list[dict[str, Any]] = []
        self._last_ms = 0
        self._last_link_ms = 0
        self._last_list_ms = 0
        self._list_members: list[tuple[int, str, dict[str, list[str]]]] = []
        self.users = [self._new_user(i) for i in range(config.users)]
        by_platform: dict[str, list[SyntheticUser]] = {"ios": [], "android": []}
        for user in self.users:
            by_platform[user.platform].append(user)
        self._app_users = by_platform
        self._registered = [u for u in self.users if u.registered]

    # -- the population ------------------------------------------------------------

    def _new_user(self, index: int) -> SyntheticUser:
        c = self.config
        rng = self._rng
        region = self._regions.pick(rng.random())
        country = rng.choice(REGION_COUNTRIES[region])
        age_bucket = self._ages.pick(rng.random())
        birth_year = None
        if age_bucket in AGE_RANGES:
            low, high = AGE_RANGES[age_bucket]
            birth_year = self._year - rng.randint(low, high) - 1
        restricted = country in EEA_GB_CH
        settings: dict[str, bool | None] = {}
        for name in SETTINGS:
            if restricted:
                settings[name] = True if rng.random() < c.opt_in.get(name, 0.0) else None
            else:
                settings[name] = rng.random() >= c.settings_off.get(name, 0.0)
        platform = self._app_platforms.pick(rng.random())
        att_status: str | None = None
        ads_opt_out = False
        advertising_id: str | None = _uuid(rng)
        if platform == "ios":
            legacy = rng.random() < c.legacy_ios_share
            os_version = rng.choice(_LEGACY_IOS_VERSIONS if legacy else _IOS_VERSIONS)
            att_status = self._att.pick(rng.random())
            if att_status != "authorized" and not legacy:
                advertising_id = None
        else:
            os_version = rng.choice(_ANDROID_VERSIONS)
            ads_opt_out = rng.random() < c.android_opt_out_share
            if ads_opt_out:
                advertising_id = _ZERO_AD_ID
        if rng.random() < 0.85:
            ip = f"{rng.choice(_IPV4_PREFIXES)}{rng.randrange(1, 255)}"
        else:
            group, host = rng.getrandbits(16), rng.randrange(1, 9999)
            ip = f"2001:db8:{group:x}::{host}"
        email = f"user{index}@example.com"
        phone = f"1555{index:07d}"  # +1 555 is no North American area code
        return SyntheticUser(
            index=index,
            user_id=f"user-{index}",
            registered=rng.random() >= c.unregistered_share,
            country=country,
            birth_year=birth_year,
            settings=settings,
            email=email,
            email_sha256=_sha256(email),
            phone_sha256=_sha256(phone),
            session_id=f"sess-{rng.getrandbits(64):016x}",
            click_ids=[f"clk-{rng.getrandbits(64):016x}" for _ in range(2)],
            cookie_id=f"ck-{rng.getrandbits(64):016x}",
            dnt=rng.random() < c.dnt_share,
            gpc=rng.random() < c.gpc_share,
            daa_opt_out=rng.random() < c.optout_cookie_share,
            ip=ip,
            web_agent=rng.choice(_WEB_AGENTS),
            platform=platform,
            device_id=_uuid(rng),
            os_version=os_version,
            att_status=att_status,
            ads_opt_out=ads_opt_out,
            advertising_id=advertising_id,
        )

    # -- consent -------------------------------------------------------------------

    def bootstrap(self) -> Iterator[Record]:
        """What the platform holds before traffic starts: every consent record, every link."""
        yield from self.consent_bootstrap()
        yield from self.identity_bootstrap()

    def consent_bootstrap(self) -> Iterator[Record]:
        """One full consent record for every registered user, in user order."""
        for user in self._registered:
            if not user.deleted:
                yield self._consent_record(user, "consent.bootstrap")

    # -- identity ------------------------------------------------------------------

    def identity_bootstrap(self) -> Iterator[Record]:
        """The links of every user's match keys, registered with consent or not."""
        for user in self.users:
            if not user.deleted:
                for key in self.match_keys(user):
                    yield self._link(key, user.user_id, "identity.bootstrap")

    def match_keys(self, user: SyntheticUser) -> list[str]:
        """The match keys the platform knows of `user`."""
        keys = [f"em:{user.email_sha256}", f"ph:{user.phone_sha256}", f"session:{user.session_id}"]
        maid = advertising_id_key(user.advertising_id)
        if maid is not None:
            keys.append(f"maid:{maid}")
        keys.extend(f"click:{click_id}" for click_id in user.click_ids)
        return keys

    def _link(self, key: str, user_id: str | None, kind: str) -> Record:
        """A link of `key` to `user_id`, or (None) a tombstone that unlinks it."""
        self.counts[kind] += 1
        self.topics[IDENTITY_LINKS.name] += 1
        if user_id is None:
            return Record(IDENTITY_LINKS, key.encode(), None, kind)
        now_ms = max(int(self._clock() * 1000), self._last_link_ms + 1)
        self._last_link_ms = now_ms
        document = {"match_key": key, "user_id": user_id, "linked_at": now_ms}
        return Record(IDENTITY_LINKS, key.encode(), codec.dumps(document), kind)

    def consent_document(self, user: SyntheticUser) -> dict[str, Any]:
        """The user's full current consent as a `consent.changes` record, newly stamped."""
        now_ms = int(self._clock() * 1000)
        user.changed_at_ms = max(now_ms, user.changed_at_ms + 1)
        device: dict[str, Any] = {"device_id": user.device_id, "platform": user.platform}
        if user.platform == "ios":
            device["att_status"] = user.att_status
        else:
            device["ads_opt_out"] = user.ads_opt_out
        return {
            "user_id": user.user_id,
            "changed_at": user.changed_at_ms,
            "settings": dict(user.settings),
            "profile": {"country": user.country, "birth_year": user.birth_year},
            "device": device,
        }

    def _consent_record(self, user: SyntheticUser, kind: str) -> Record:
        self.counts[kind] += 1
        self.topics[CONSENT_CHANGES.name] += 1
        return Record(
            CONSENT_CHANGES, user.user_id.encode(), codec.dumps(self.consent_document(user)), kind
        )

    def _churn_records(self) -> list[Record]:
        rng = self._rng
        if not self._registered:
            return []
        user = self._registered[_below(rng, len(self._registered))]
        if user.deleted:
            return []
        kind = self._churn.pick(rng.random())
        if kind == "delete":
            user.deleted = True
            now_ms = max(int(self._clock() * 1000), user.changed_at_ms + 1)
            user.changed_at_ms = now_ms
            self.counts["consent.delete"] += 1
            self.topics[CONSENT_CHANGES.name] += 1
            document = {"user_id": user.user_id, "changed_at": now_ms, "deleted": True}
            deletion = Record(
                CONSENT_CHANGES, user.user_id.encode(), codec.dumps(document), "consent.delete"
            )
            # Deleting an account unlinks its keys.
            unlinks = [self._link(key, None, "identity.unlink") for key in self.match_keys(user)]
            return [deletion, *unlinks]
        if kind == "move_email":
            return self._move_email(user)
        if kind == "list_remove":
            return self._list_remove()
        if kind == "unkeyed":
            # A consent change must be keyed by its user. A compacted topic refuses a record
            # without a key; an empty one gets through, and is DLQ'd as missing_key.
            self.counts["malformed.missing_key"] += 1
            self.topics[CONSENT_CHANGES.name] += 1
            document = {**self.consent_document(user), "changed_at": 1}
            return [Record(CONSENT_CHANGES, b"", codec.dumps(document), "malformed.missing_key")]
        if kind == "new_click":
            click_id = f"clk-{rng.getrandbits(64):016x}"
            user.click_ids = [*user.click_ids[-3:], click_id]
            return [self._link(f"click:{click_id}", user.user_id, "identity.click")]
        if kind == "device":
            if user.platform == "ios":
                user.att_status = "denied" if user.att_status == "authorized" else "authorized"
                user.advertising_id = _uuid(rng) if user.att_status == "authorized" else None
            else:
                user.ads_opt_out = not user.ads_opt_out
                user.advertising_id = _ZERO_AD_ID if user.ads_opt_out else _uuid(rng)
            links = []
            maid = advertising_id_key(user.advertising_id)
            if maid is not None:
                links.append(self._link(f"maid:{maid}", user.user_id, "identity.maid"))
            return [self._consent_record(user, "consent.device"), *links]
        user.settings[_choice(rng, SETTINGS)] = kind == "regrant"
        return [self._consent_record(user, f"consent.{kind}")]

    def _move_email(self, user: SyntheticUser) -> list[Record]:
        """`user`'s email address moves to another account; `user` gets a new one."""
        others = [u for u in (self.users[_below(self._rng, len(self.users))],) if u is not user]
        if not others or others[0].deleted:
            return []
        other = others[0]
        moved = user.email_sha256
        records = [self._link(f"em:{other.email_sha256}", None, "identity.unlink")]
        other.email_sha256 = moved
        records.append(self._link(f"em:{moved}", other.user_id, "identity.move_email"))
        user.email = f"user{user.index}+{self._rng.getrandbits(32):08x}@example.com"
        user.email_sha256 = _sha256(user.email)
        records.append(self._link(f"em:{user.email_sha256}", user.user_id, "identity.email"))
        return records

    # -- raw records ---------------------------------------------------------------

    def records(self, n: int) -> list[Record]:
        """`n` raw records, plus the consent churn that happened meanwhile."""
        c = self.config
        rng = self._rng
        now = int(self._clock())
        dup_bound = c.duplicate_share
        malformed_bound = dup_bound + c.malformed_share
        list_bound = malformed_bound + c.list_share
        churn = c.churn_per_event
        out: list[Record] = []
        append = out.append
        counts = self.counts
        topics = self.topics
        for _ in range(n):
            u = rng.random()
            if u < dup_bound:  # before any tag event, nothing to duplicate: an event instead
                record = self._duplicate() if self._recent_tags else self._event(now)
            elif u < malformed_bound:
                record = self._malformed(now)
            elif u < list_bound:
                record = self._list_member()
            else:
                record = self._event(now)
            counts[record.kind] += 1
            topics[record.topic.name] += 1
            append(record)
            if churn and rng.random() < churn:
                out.extend(self._churn_records())
        return out

    def _event(self, now: int) -> Record:
        rng = self._rng
        platform = self._platforms.pick(rng.random())
        app_users = self._app_users.get(platform)
        if app_users:
            user = app_users[_below(rng, len(app_users))]
            event = self._app_event(user, now)
            topic = RAW_SDK
        else:
            user = self.users[_below(rng, len(self.users))]
            source = self._web_sources.pick(rng.random())
            if source == "widget":
                event = self._widget_event(user, now)
                topic = RAW_WIDGET
            else:
                event = self._web_event(user, now, tag=source == "tag")
                topic = RAW_TAG if source == "tag" else RAW_SDK
        headers: tuple[tuple[str, bytes], ...] = ()
        if rng.random() < self.config.anonymous_share:
            _as_stranger(event, rng)
        elif self._trust_key is not None and rng.random() < self.config.trusted_share:
            event["user_id"] = user.user_id
        value = codec.dumps(event)
        if "user_id" in event and self._trust_key is not None:
            headers = ((TRUST_HEADER, trust_signature(self._trust_key, value)),)
        if topic is RAW_TAG:
            self._remember_tag(event)
        return Record(topic, event["event_id"].encode(), value, "event", headers)

    def _common(self, user: SyntheticUser, now: int, name: str) -> dict[str, Any]:
        rng = self._rng
        c = self.config
        event: dict[str, Any] = {
            "event_id": f"{rng.getrandbits(64):016x}",
            "event_name": name,
            "event_time": now - _below(rng, 30),
        }
        if rng.random() < c.opt_out_share:
            event["opt_out"] = True
        if rng.random() < c.ldp_share:
            event["opt_out_type"] = "LDP"
        return event

    def _commerce(self, event: dict[str, Any], advertiser: int) -> None:
        rng = self._rng
        name = event["event_name"]
        if name not in _COMMERCE:
            return
        items = 1 + _below(rng, 4)
        data: dict[str, Any] = {
            "currency": _CURRENCIES[advertiser % len(_CURRENCIES)],
            "value": round(rng.uniform(5, 250) * items, 2),
            "content_ids": [f"sku-{_below(rng, 5000)}" for _ in range(min(items, 3))],
            "num_items": items,
        }
        if name == "checkout":
            data["order_id"] = f"ord-{rng.getrandbits(48):012x}"
            if rng.random() < self.config.on_platform_share:
                event["surface"] = "on_platform"
        event["custom_data"] = data

    def _contact(self, user: SyntheticUser) -> list[str]:
        if self._rng.random() < self.config.raw_contact_share:
            return [f" {user.email.upper()}"]  # raw and untidy: ingest normalizes and hashes
        return [user.email_sha256]

    def _browser(self, user: SyntheticUser) -> dict[str, Any]:
        return {
            "cookie_id": user.cookie_id,
            "dnt": user.dnt,
            "gpc": user.gpc,
            "daa_opt_out": user.daa_opt_out,
        }

    def _web_event(self, user: SyntheticUser, now: int, *, tag: bool) -> dict[str, Any]:
        rng = self._rng
        advertiser = _below(rng, self.config.advertisers)
        event = self._common(user, now, self._event_names.pick(rng.random()))
        event["action_source"] = "web"
        event["advertiser_id"] = f"adv-{advertiser}"
        event["event_source_url"] = (
            f"https://shop{advertiser}.example.com/{event['event_name']}/{_below(rng, 1000)}"
        )
        user_data: dict[str, Any] = {
            "em": self._contact(user),
            "client_ip_address": user.ip,
            "client_user_agent": user.web_agent,
        }
        if not tag:  # a server upload knows more of its customer than the page did
            user_data["ph"] = [user.phone_sha256]
        if tag and user.click_ids and rng.random() < self.config.click_share:
            user_data["click_id"] = user.click_ids[_below(rng, len(user.click_ids))]
        event["user_data"] = user_data
        event["browser"] = self._browser(user)
        self._commerce(event, advertiser)
        return event

    def _app_event(self, user: SyntheticUser, now: int) -> dict[str, Any]:
        rng = self._rng
        advertiser = _below(rng, self.config.advertisers)
        event = self._common(user, now, self._event_names.pick(rng.random()))
        ios = user.platform == "ios"
        event["action_source"] = "app_ios" if ios else "app_android"
        event["advertiser_id"] = f"adv-{advertiser}"
        user_data: dict[str, Any] = {
            "em": self._contact(user),
            "client_ip_address": user.ip,
            "client_user_agent": (
                f"ShopApp/3.{advertiser % 10} (iPhone; iOS {user.os_version})"
                if ios
                else f"ShopApp/3.{advertiser % 10} (Linux; Android {user.os_version})"
            ),
        }
        if user.advertising_id and user.advertising_id != _ZERO_AD_ID:
            user_data["hashed_maids"] = [_sha256(user.advertising_id)]
        event["user_data"] = user_data
        device: dict[str, Any] = {"device_id": user.device_id, "os_version": user.os_version}
        if ios:
            device["att_status"] = user.att_status
        else:
            device["ads_opt_out"] = user.ads_opt_out
        if user.advertising_id is not None:
            device["advertising_id"] = user.advertising_id
        event["device"] = device
        event["app"] = {
            "app_id": f"com.example.shop{advertiser}",
            "app_name": f"Shop {advertiser}",
            "app_version": f"3.{advertiser % 10}",
        }
        self._commerce(event, advertiser)
        return event

    def _widget_event(self, user: SyntheticUser, now: int) -> dict[str, Any]:
        rng = self._rng
        name, widget_types = _WIDGET_EVENTS[_below(rng, len(_WIDGET_EVENTS))]
        site = _below(rng, 200)
        event = self._common(user, now, name)
        event["site_domain"] = f"blog{site}.example.org"
        event["page_url"] = f"https://blog{site}.example.org/posts/{_below(rng, 10_000)}"
        event["widget_type"] = _choice(rng, widget_types)
        event["session_id"] = user.session_id
        event["browser"] = self._browser(user)
        event["client_ip_address"] = user.ip
        event["client_user_agent"] = user.web_agent
        return event

    def _list_member(self) -> Record:
        """An advertiser adds a member to one of its audiences (a customer-list upload)."""
        rng = self._rng
        advertiser = _below(rng, self.config.advertisers)
        audience = audience_ids(advertiser)[_below(rng, AUDIENCES_PER_ADVERTISER)]
        if rng.random() < self.config.unmatched_member_share:
            keys = {"em": [f"{rng.getrandbits(256):064x}"]}
        else:
            user = self.users[_below(rng, len(self.users))]
            keys = {"em": [user.email_sha256], "ph": [user.phone_sha256]}
            members = self._list_members
            if len(members) < 4096:
                members.append((advertiser, audience, keys))
            else:
                members[_below(rng, len(members))] = (advertiser, audience, keys)
        return self._member_record(advertiser, audience, "add", keys, "audience.add")

    def _list_remove(self) -> list[Record]:
        """An advertiser removes a member it added earlier."""
        if not self._list_members:
            return []
        index = _below(self._rng, len(self._list_members))
        advertiser, audience, keys = self._list_members.pop(index)
        self.topics[RAW_AUDIENCE.name] += 1
        self.counts["audience.remove"] += 1
        return [self._member_record(advertiser, audience, "remove", keys, "audience.remove")]

    def _member_record(
        self,
        advertiser: int,
        audience: str,
        operation: str,
        keys: dict[str, list[str]],
        kind: str,
    ) -> Record:
        now_ms = max(int(self._clock() * 1000), self._last_list_ms + 1)
        self._last_list_ms = now_ms
        document = {
            "advertiser_id": f"adv-{advertiser}",
            "audience_id": audience,
            "operation": operation,
            "match_keys": keys,
            "uploaded_at": now_ms,
        }
        key = list_key(f"adv-{advertiser}", audience).encode()
        return Record(RAW_AUDIENCE, key, codec.dumps(document), kind)

    def _remember_tag(self, event: dict[str, Any]) -> None:
        recent = self._recent_tags
        if len(recent) < 64:
            recent.append(event)
        else:
            recent[_below(self._rng, 64)] = event

    def _duplicate(self) -> Record:
        """A recent tag event again, as the advertiser's server uploads it (same event id)."""
        tag = self._recent_tags[_below(self._rng, len(self._recent_tags))]
        event = {k: v for k, v in tag.items() if k not in ("user_data", "user_id")}
        user_data = dict(tag["user_data"])
        user_data.pop("click_id", None)
        event["user_data"] = user_data
        return Record(RAW_SDK, event["event_id"].encode(), codec.dumps(event), "duplicate")

    def _malformed(self, now: int) -> Record:
        rng = self._rng
        reason = MALFORMED_KINDS[_below(rng, len(MALFORMED_KINDS))]
        user = self.users[_below(rng, len(self.users))]
        event = self._web_event(user, now, tag=True)
        key = event["event_id"].encode()
        value: bytes
        if reason == "invalid_json":
            value = codec.dumps(event)[: 1 + _below(rng, 39)]
        elif reason == "invalid_utf8":
            value = b'{"event_id":"\xff\xfe' + codec.dumps(event)[14:]
        elif reason == "schema_violation":
            broken = _below(rng, 3)
            if broken == 0:
                event["event_name"] = "purchase_completed"
            elif broken == 1:
                del event["advertiser_id"]
            else:
                event["event_time"] = str(event["event_time"])
            value = codec.dumps(event)
        else:
            if reason == "too_old":
                event["event_time"] = now - 8 * _DAY
            else:
                event["event_time"] = now + 2 * _HOUR
            value = codec.dumps(event)
        return Record(RAW_TAG, key, value, f"malformed.{reason}")
