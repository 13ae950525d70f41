"""The synthetic traffic: valid record shapes, identity links, determinism, the configured mix."""

from __future__ import annotations

import dataclasses
import ipaddress
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any, Final

import pytest

from pipeline import catalogue
from pipeline.core.identity import LinkRow, apply_link, match_keys
from pipeline.core.parse import (
    ParseLimits,
    Rejected,
    parse_consent_change,
    parse_event,
    parse_identity_link,
)
from pipeline.core.policy import EEA_GB_CH
from pipeline.core.trust import TRUST_HEADER, is_trusted
from pipeline.sim.traffic import (
    AGE_RANGES,
    REGION_COUNTRIES,
    Record,
    TrafficConfig,
    TrafficGenerator,
)
from schemas import codec

NOW: Final = 1_750_000_000.0
TRUST_KEY: Final = b"synthetic-trust-key-0123456789abcdef"
EVENT_YEAR: Final = 2025
N_RECORDS: Final = 20_000
N_USERS: Final = 20_000
DOC_NETWORKS: Final = tuple(
    ipaddress.ip_network(n)
    for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
)

SKEWED = (
    TrafficConfig(users=N_USERS)
    .override("platforms.web", 0.2)
    .override("platforms.ios", 0.6)
    .override("platforms.android", 0.2)
    .override("web_sources.widget", 0.6)
    .override("web_sources.tag", 0.3)
    .override("web_sources.sdk", 0.1)
    .override("dnt_share", 0.4)
    .override("gpc_share", 0.3)
    .override("optout_cookie_share", 0.25)
    .override("android_opt_out_share", 0.5)
    .override("att.authorized", 0.7)
    .override("regions.EEA", 0.6)
    .override("ages.under_16", 0.3)
    .override("duplicate_share", 0.1)
    .override("malformed_share", 0.08)
    .override("anonymous_share", 0.25)
    .override("churn_per_event", 0.05)
)
CONFIGS = pytest.mark.parametrize(
    "config", [TrafficConfig(users=N_USERS), SKEWED], ids=["defaults", "skewed"]
)


def clock() -> float:
    return NOW


def generate(config: TrafficConfig, seed: int = 7) -> tuple[TrafficGenerator, list[Record]]:
    generator = TrafficGenerator(config, seed=seed, clock=clock, trust_key=TRUST_KEY)
    return generator, [
        *generator.consent_bootstrap(),
        *generator.identity_bootstrap(),
        *generator.records(N_RECORDS),
    ]


def linked_keys(records: list[Record]) -> dict[str, LinkRow]:
    """Every identity link of `records` folded in order, as the pipeline's table would be."""
    rows: dict[str, LinkRow] = {}
    for n, record in enumerate(records):
        if record.topic is catalogue.IDENTITY_LINKS:
            assert record.key is not None
            key = record.key.decode()
            link = None
            if record.value is not None:
                parsed = parse_identity_link(record.value, key=record.key)
                assert not isinstance(parsed, Rejected), parsed
                assert parsed.match_key == key
                link = parsed
            rows[key] = apply_link(rows.get(key), link, n)
    return rows


def share(part: float, whole: float) -> float:
    return part / whole if whole else 0.0


def weights(mapping: Any) -> dict[str, float]:
    total = sum(mapping.values())
    return {k: v / total for k, v in mapping.items()}


def test_the_same_seed_gives_the_same_traffic_and_another_seed_other_traffic() -> None:
    config = TrafficConfig(users=500)
    first = TrafficGenerator(config, seed=11, clock=clock)
    second = TrafficGenerator(config, seed=11, clock=clock)
    other = TrafficGenerator(config, seed=12, clock=clock)

    a = [*first.consent_bootstrap(), *first.records(2000)]
    b = [*second.consent_bootstrap(), *second.records(2000)]
    c = [*other.consent_bootstrap(), *other.records(2000)]

    assert a == b
    assert a != c


@CONFIGS
def test_every_event_parses_and_names_its_user_only_when_a_trusted_producer_signed_it(
    config: TrafficConfig,
) -> None:
    _, records = generate(config)

    checked = signed = 0
    for record in records:
        if record.kind not in ("event", "duplicate"):
            continue
        source = record.topic.source
        assert source is not None
        assert source != "audience"
        event = parse_event(source, record.value, now=NOW, key=record.key)
        assert not isinstance(event, Rejected), (event, record.value)
        assert record.key == event.event_id.encode()  # the producer's choice of key
        trusted = is_trusted(TRUST_KEY, record.value, dict(record.headers).get(TRUST_HEADER))
        assert trusted == (event.user_id is not None)
        signed += trusted
        checked += 1
    assert checked > N_RECORDS * 0.8
    assert 0 < signed < checked * 0.2


@CONFIGS
def test_malformed_records_are_rejected_with_the_reason_they_are_named_after(
    config: TrafficConfig,
) -> None:
    _, records = generate(config)
    malformed = [r for r in records if r.kind.startswith("malformed.")]

    reasons: Counter[str] = Counter()
    for record in malformed:
        rejected: object = (
            parse_consent_change(record.value, now=NOW, key=record.key)
            if record.topic is catalogue.CONSENT_CHANGES
            else parse_event("tag", record.value, now=NOW, key=record.key)
        )
        assert isinstance(rejected, Rejected)
        assert rejected.reason == record.kind.removeprefix("malformed.")
        reasons[rejected.reason] += 1
    assert set(reasons) == {
        "invalid_json",
        "invalid_utf8",
        "schema_violation",
        "too_old",
        "in_future",
        "missing_key",
    }


def test_a_duplicate_repeats_a_recent_tag_event_as_a_server_upload_on_the_same_key() -> None:
    _, records = generate(TrafficConfig(users=1000, duplicate_share=0.1))
    tags: dict[tuple[str, str], Record] = {}
    duplicates = 0
    for record in records:
        if record.topic is catalogue.RAW_TAG and record.kind == "event":
            event = codec.loads(record.value or b"")
            tags[event["advertiser_id"], event["event_id"]] = record
        elif record.kind == "duplicate":
            event = codec.loads(record.value or b"")
            original = tags[event["advertiser_id"], event["event_id"]]
            assert record.topic is catalogue.RAW_SDK
            assert record.key == original.key
            assert event["action_source"] == "web"
            duplicates += 1
    assert duplicates > 100


@CONFIGS
def test_the_event_mix_matches_the_configuration(config: TrafficConfig) -> None:
    generator, records = generate(config)
    raw = [r for r in records if r.topic.source is not None]
    events = [
        codec.loads(r.value or b"") | {"_source": r.topic.source} for r in raw if r.kind == "event"
    ]
    platforms: Counter[str] = Counter()
    web_sources: Counter[str] = Counter()
    for event in events:
        action = event.get("action_source", "web")
        platform = {"app_ios": "ios", "app_android": "android"}.get(action, "web")
        platforms[platform] += 1
        if platform == "web":
            web_sources[event["_source"]] += 1
    kinds = Counter(r.kind.split(".")[0] for r in raw)
    # One record of each churn draw says what it was (a deletion also unlinks keys, an email
    # move relinks three, a device change may link a new advertising id).
    markers = {"identity.click": "new_click", "identity.move_email": "move_email"}
    markers["malformed.missing_key"] = "unkeyed"
    churn_kinds = Counter(
        markers.get(r.kind, r.kind.removeprefix("consent."))
        for r in records
        if r.kind in markers or (r.kind.startswith("consent.") and r.kind != "consent.bootstrap")
    )
    links = linked_keys(records)

    tolerance = 0.02
    for name, expected in weights(config.platforms).items():
        assert share(platforms[name], len(events)) == pytest.approx(expected, abs=tolerance)
    for name, expected in weights(config.web_sources).items():
        got = share(web_sources[name], sum(web_sources.values()))
        assert got == pytest.approx(expected, abs=tolerance)
    assert share(kinds["duplicate"], len(raw)) == pytest.approx(config.duplicate_share, abs=0.01)
    assert share(kinds["malformed"], len(raw)) == pytest.approx(config.malformed_share, abs=0.01)
    strangers = sum(
        1
        for e in events
        if "user_id" not in e
        and not any(links.get(key, LinkRow(None, 0)).user_id for key in match_keys(_parsed(e)))
    )
    expected = config.anonymous_share
    assert share(strangers, len(events)) == pytest.approx(expected, abs=tolerance + 0.02)
    signed = sum(1 for e in events if "user_id" in e)
    assert share(signed, len(events)) == pytest.approx(
        config.trusted_share * (1 - config.anonymous_share), abs=tolerance
    )
    churn = sum(churn_kinds.values())
    assert share(churn, len(raw)) == pytest.approx(config.churn_per_event, rel=0.2)
    assert generator.counts["event"] == len(events)
    assert set(churn_kinds) <= set(config.churn)


@CONFIGS
def test_the_population_matches_the_configuration(config: TrafficConfig) -> None:
    generator = TrafficGenerator(config, seed=3, clock=clock)
    users = generator.users
    ios = [u for u in users if u.platform == "ios"]
    android = [u for u in users if u.platform == "android"]
    tolerance = 0.02

    def fraction(selected: list[Any], predicate: Callable[[Any], bool]) -> float:
        return share(sum(1 for u in selected if predicate(u)), len(selected))

    for status, expected in weights(config.att).items():
        got = share(sum(1 for u in ios if u.att_status == status), len(ios))
        assert got == pytest.approx(expected, abs=0.03)
    assert fraction(ios, lambda u: u.os_version in ("14.4", "13.7")) == pytest.approx(
        config.legacy_ios_share, abs=tolerance
    )
    assert fraction(android, lambda u: u.ads_opt_out) == pytest.approx(
        config.android_opt_out_share, abs=0.03
    )
    assert fraction(users, lambda u: u.dnt) == pytest.approx(config.dnt_share, abs=tolerance)
    assert fraction(users, lambda u: u.gpc) == pytest.approx(config.gpc_share, abs=tolerance)
    assert fraction(users, lambda u: u.daa_opt_out) == pytest.approx(
        config.optout_cookie_share, abs=tolerance
    )
    assert fraction(users, lambda u: not u.registered) == pytest.approx(
        config.unregistered_share, abs=tolerance
    )
    for region, expected in weights(config.regions).items():
        countries = REGION_COUNTRIES[region]
        got = share(sum(1 for u in users if u.country in countries), len(users))
        assert got == pytest.approx(expected, abs=tolerance)
    buckets: Counter[str] = Counter()
    for user in users:
        buckets[age_bucket(user.birth_year)] += 1
    for bucket, expected in weights(config.ages).items():
        assert share(buckets[bucket], len(users)) == pytest.approx(expected, abs=tolerance)


def age_bucket(birth_year: int | None) -> str:
    if birth_year is None:
        return "unknown"
    youngest = EVENT_YEAR - birth_year - 1
    return next(name for name, (low, high) in AGE_RANGES.items() if low <= youngest <= high)


def test_settings_follow_the_region_default_direction() -> None:
    generator = TrafficGenerator(TrafficConfig(users=5000), seed=5, clock=clock)
    restricted = [u for u in generator.users if u.country in EEA_GB_CH]
    elsewhere = [u for u in generator.users if u.country not in EEA_GB_CH]

    # Opt-in regions: a setting is on only where the user chose it, never explicitly off.
    assert all(v in (True, None) for u in restricted for v in u.settings.values())
    # Opt-out regions: every setting is explicit, and most are on.
    assert all(v in (True, False) for u in elsewhere for v in u.settings.values())
    on = sum(1 for u in elsewhere if u.settings["personalization"])
    assert on / len(elsewhere) > 0.85


def test_consent_records_carry_the_full_consent_and_deletion_is_the_last_word() -> None:
    config = TrafficConfig(users=300, churn_per_event=0.2)
    _, records = generate(config)
    last_changed: dict[bytes, int] = {}
    deleted: set[bytes] = set()

    consent = [
        r
        for r in records
        if r.topic is catalogue.CONSENT_CHANGES and r.kind != "malformed.missing_key"
    ]
    for record in consent:
        assert record.key is not None
        assert record.key not in deleted, "a record after a deletion would undo it in compaction"
        change = parse_consent_change(record.value, now=NOW, key=record.key)
        assert not isinstance(change, Rejected)
        assert change.user_id.encode() == record.key
        assert change.changed_at > last_changed.get(record.key, -1)
        last_changed[record.key] = change.changed_at
        if record.kind == "consent.delete":
            assert change.deleted
            deleted.add(record.key)
            continue
        document = codec.loads(record.value or b"")
        assert set(document["settings"]) == {
            "personalization",
            "ads_from_partner_info",
            "partner_sharing",
        }
        assert set(document["profile"]) == {"country", "birth_year"}
        assert {"device_id", "platform"} <= set(document["device"])
    kinds = Counter(r.kind for r in consent)
    assert {"consent.revoke", "consent.regrant", "consent.device", "consent.delete"} <= set(kinds)


def test_a_revocation_turns_a_setting_off_and_a_regrant_turns_it_on() -> None:
    _, records = generate(TrafficConfig(users=200, churn_per_event=0.2))
    previous: dict[bytes | None, dict[str, Any]] = {}
    seen: defaultdict[str, int] = defaultdict(int)
    for record in records:
        if record.topic is not catalogue.CONSENT_CHANGES or record.kind in (
            "consent.delete",
            "malformed.missing_key",
        ):
            continue
        settings = codec.loads(record.value or b"")["settings"]
        before = previous.get(record.key)
        if before is not None and record.kind in ("consent.revoke", "consent.regrant"):
            changed = {k: v for k, v in settings.items() if before[k] != v}
            wanted = record.kind == "consent.regrant"
            assert all(v is wanted for v in changed.values())
            assert len(changed) <= 1
            seen[record.kind] += 1
        previous[record.key] = settings
    assert seen["consent.revoke"] > 0
    assert seen["consent.regrant"] > 0


def test_the_data_is_synthetic_only() -> None:
    config = TrafficConfig(users=2000, raw_contact_share=0.2)
    _, records = generate(config)
    raw_emails = 0
    for record in records:
        if record.kind != "event":
            continue
        event = codec.loads(record.value or b"")
        user_data = event.get("user_data", {})
        ip = user_data.get("client_ip_address") or event.get("client_ip_address")
        assert any(ipaddress.ip_address(ip) in net for net in DOC_NETWORKS)
        for email in user_data.get("em", []):
            if "@" in email:
                raw_emails += 1
                assert email.strip().lower().endswith("@example.com")
        for url in (event.get("event_source_url"), event.get("page_url")):
            if url:
                assert url.split("/")[2].endswith((".example.com", ".example.org"))
    assert raw_emails > 100


@pytest.mark.parametrize(
    ("name", "value"),
    [("no_such_share", 0.1), ("dnt_share", 1.5), ("platforms.tv", 0.2), ("att.denied", -1)],
)
def test_an_invalid_override_is_refused(name: str, value: float) -> None:
    with pytest.raises(ValueError, match=r"\w"):
        TrafficConfig().override(name, value)


def _parsed(document: dict[str, Any]) -> Any:
    source = document.pop("_source")
    event = parse_event(
        source, codec.dumps(document), now=NOW, limits=ParseLimits(require_key=False)
    )
    document["_source"] = source
    assert not isinstance(event, Rejected)
    return event


def test_the_links_name_each_user_by_every_key_they_have_now() -> None:
    generator, records = generate(TrafficConfig(users=400, churn_per_event=0.2))

    rows = linked_keys(records)

    for user in generator.users:
        for key in generator.match_keys(user):
            row = rows.get(key)
            assert (row.user_id if row else None) == (None if user.deleted else user.user_id)
    kinds = Counter(r.kind for r in records if r.topic is catalogue.IDENTITY_LINKS)
    assert {"identity.bootstrap", "identity.unlink", "identity.move_email"} <= set(kinds)


def test_an_email_that_moved_resolves_to_its_new_owner_only() -> None:
    generator, records = generate(
        TrafficConfig(users=300, churn_per_event=0.3).override("churn.move_email", 5.0)
    )
    rows = linked_keys(records)
    moves = [r for r in records if r.kind == "identity.move_email"]

    assert moves
    for record in moves:
        assert record.key is not None
        assert record.value is not None
        owner = codec.loads(record.value)["user_id"]
        row = rows[record.key.decode()]
        current = next(u for u in generator.users if u.user_id == owner)
        if f"em:{current.email_sha256}" == record.key.decode() and not current.deleted:
            assert row.user_id == owner


def test_no_malformed_share_means_no_malformed_records() -> None:
    config = dataclasses.replace(TrafficConfig(users=50), malformed_share=0.0, duplicate_share=0.5)
    generator = TrafficGenerator(config, seed=3)

    kinds = {record.kind for record in generator.records(2_000)}

    assert not any(kind.startswith("malformed.") for kind in kinds)
    assert "duplicate" in kinds
