"""The demo's development registry: a trusted token per synthetic advertiser, an example
advertiser holding a Pinterest ad account, a Meta pixel and a Pinterest tag, and the
account settings frontend whose token the settings pages use; the pages' URLs."""

from __future__ import annotations

from pathlib import Path

from pipeline.ingest.registry import load_registry
from pipeline.sim.demo import (
    ACCOUNT_SETTINGS,
    DEMO_AD_ACCOUNT,
    DEMO_PIXEL,
    DEMO_TAG,
    DEMO_TOKEN_FILE,
    dev_registry,
    first_event_help,
    settings_pages,
)
from pipeline.sim.people import demo_people


def test_the_dev_registry_holds_digests_of_the_tokens_the_demo_sends_with(tmp_path: Path) -> None:
    path = tmp_path / "demo-advertisers.yaml"

    made = dev_registry(path, advertisers=3, now=1_700_000_000)

    registry = load_registry(path)
    assert set(registry.advertisers) == {
        "adv-0",
        "adv-1",
        "adv-2",
        "widgets",
        "shop-demo",
        ACCOUNT_SETTINGS,
    }
    for advertiser, token in made.tokens.items():
        credential = registry.authenticate(token)
        assert credential is not None
        assert (credential.advertiser_id, credential.trusted) == (advertiser, True)
        assert token not in path.read_text()
    example = registry.authenticate(made.example_token)
    assert example is not None
    assert (example.advertiser_id, example.trusted) == ("shop-demo", False)
    token_file = tmp_path / DEMO_TOKEN_FILE
    assert token_file.read_text().strip() == made.example_token
    assert token_file.stat().st_mode & 0o077 == 0  # the owner's only
    assert registry.owner("ad_account", DEMO_AD_ACCOUNT) == "shop-demo"
    assert registry.owner("pixel", DEMO_PIXEL) == "shop-demo"
    assert registry.owner("tag", DEMO_TAG) == "shop-demo"
    widgets = registry.authenticate(made.widget_token)
    assert widgets is not None
    assert widgets.trusted
    frontend = registry.authenticate(made.settings_token)
    assert frontend is not None
    assert (frontend.advertiser_id, frontend.trusted) == (ACCOUNT_SETTINGS, True)


def test_the_settings_pages_are_listed_for_a_person_in_the_us_the_eea_and_under_16() -> None:
    people = demo_people()

    text = settings_pages("http://127.0.0.1:6067", people, "cpt_settings")

    assert {person.country for person in people} >= {"US", "DE"}
    assert min(person.age for person in people) < 16
    for person in people:
        url = f"http://127.0.0.1:6067/account/privacy#user={person.user_id}&token=cpt_settings"
        assert url in text
        assert person.label in text


def test_the_first_event_help_is_a_curl_command_for_the_example_advertiser() -> None:
    text = first_event_help("http://127.0.0.1:6067", "cpt_example")

    assert f"/v5/ad_accounts/{DEMO_AD_ACCOUNT}/events?test=true" in text
    assert "Authorization: Bearer cpt_example" in text
    assert f"/v25.0/{DEMO_PIXEL}/events" in text
