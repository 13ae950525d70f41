"""The demo's people: valid consent, linked emails, clean web events the pipeline accepts."""

from __future__ import annotations

from pipeline import catalogue
from pipeline.core.consent import apply_change
from pipeline.core.parse import Rejected, parse_consent_change, parse_event
from pipeline.core.policy import EEA_GB_CH, PolicyConfig, decide
from pipeline.sim.people import PeopleTraffic, demo_people
from schemas import codec
from schemas.events import Event

NOW = 1_700_000_000.0


def test_one_person_in_the_us_one_in_the_eea_one_under_16() -> None:
    people = demo_people()

    assert [p.country for p in people if p.age >= 16 and p.country == "US"]
    assert [p for p in people if p.country in EEA_GB_CH]
    assert [p for p in people if p.age < 16]
    assert len({p.user_id for p in people}) == len(people)


def test_their_records_are_what_the_pipeline_accepts_and_their_events_are_allowed() -> None:
    traffic = PeopleTraffic(demo_people(), seed=7, advertisers=3, clock=lambda: NOW)

    bootstrap = traffic.bootstrap()
    consents = [r for r in bootstrap if r.topic is catalogue.CONSENT_CHANGES]
    links = [r for r in bootstrap if r.topic is catalogue.IDENTITY_LINKS]
    events = traffic.events()

    assert len(consents) == len(links) == len(events) == 3
    for consent, event_record in zip(consents, events, strict=True):
        change = parse_consent_change(consent.value, key=consent.key)
        assert not isinstance(change, Rejected), change
        assert consent.key == change.user_id.encode()
        event = parse_event("tag", event_record.value, now=NOW, key=event_record.key)
        assert isinstance(event, Event), event
        assert event.user_id is None  # named by its email, resolved like any advertiser's
        assert event_record.topic is catalogue.RAW_TAG
        assert change.user_id not in (event_record.value or b"").decode()
        decision = decide(
            event.model_copy(update={"user_id": change.user_id}),
            apply_change(None, change),
            PolicyConfig(),
        )
        assert (decision.personalization, decision.ads) == ("allow", "allow")
    assert {codec.loads(link.value or b"{}")["user_id"] for link in links} == {
        p.user_id for p in demo_people()
    }
