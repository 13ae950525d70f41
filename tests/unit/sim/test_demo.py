"""The demo's development registry: a trusted token per synthetic advertiser, and an
example advertiser holding a Pinterest ad account, a Meta pixel and a Pinterest tag."""

from __future__ import annotations

from pathlib import Path

from pipeline.ingest.registry import load_registry
from pipeline.sim.demo import DEMO_AD_ACCOUNT, DEMO_PIXEL, DEMO_TAG, dev_registry, first_event_help


def test_the_dev_registry_holds_digests_of_the_tokens_the_demo_sends_with(tmp_path: Path) -> None:
    path = tmp_path / "demo-advertisers.yaml"

    made = dev_registry(path, advertisers=3, now=1_700_000_000)

    registry = load_registry(path)
    assert set(registry.advertisers) == {"adv-0", "adv-1", "adv-2", "widgets", "shop-demo"}
    for advertiser, token in made.tokens.items():
        credential = registry.authenticate(token)
        assert credential is not None
        assert (credential.advertiser_id, credential.trusted) == (advertiser, True)
        assert token not in path.read_text()
    example = registry.authenticate(made.example_token)
    assert example is not None
    assert (example.advertiser_id, example.trusted) == ("shop-demo", False)
    assert registry.owner("ad_account", DEMO_AD_ACCOUNT) == "shop-demo"
    assert registry.owner("pixel", DEMO_PIXEL) == "shop-demo"
    assert registry.owner("tag", DEMO_TAG) == "shop-demo"
    widgets = registry.authenticate(made.widget_token)
    assert widgets is not None
    assert widgets.trusted


def test_the_first_event_help_is_a_curl_command_for_the_example_advertiser() -> None:
    text = first_event_help("http://127.0.0.1:6067", "cpt_example")

    assert f"/v5/ad_accounts/{DEMO_AD_ACCOUNT}/events?test=true" in text
    assert "Authorization: Bearer cpt_example" in text
    assert f"/v25.0/{DEMO_PIXEL}/events" in text
