"""The rule table is complete, the policy denies what it says, and its words read right."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest

from pipeline import policydoc
from pipeline.core.consent import fold
from pipeline.core.policy import PolicyConfig, decide
from pipeline.core.reasons import (
    PURPOSES,
    RULE,
    RULES,
    Reason,
    Rule,
    denied_by,
    dlq_words,
    identity_words,
    sentence,
)
from schemas.identity import IdentityMatch
from schemas.outputs import DLQ_REASONS
from tests.unit.factories import change, parsed, tag_event

ROOT = Path(__file__).resolve().parents[3]


def test_every_reason_code_has_one_rule_with_words_and_a_source() -> None:
    assert [rule.reason for rule in RULES] == list(Reason)
    for rule in RULES:
        assert rule.condition, rule.reason
        assert rule.because, rule.reason
        assert rule.source, rule.reason
        assert not rule.because.endswith("."), "it completes a sentence"


def test_every_dlq_reason_has_words() -> None:
    for reason in DLQ_REASONS:
        assert dlq_words(reason) != reason, reason


def test_the_committed_policy_document_is_the_table() -> None:
    committed = (ROOT / policydoc.POLICY_FILE).read_text()
    assert committed == policydoc.render(), "run `consent-pipeline contracts` and commit"
    for rule in RULES:
        assert f"`{rule.reason}`" in committed
        assert rule.because in committed


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: str(rule.reason))
def test_denied_by_reads_each_rule_from_the_table(rule: Rule) -> None:
    for purpose in PURPOSES:
        expected = "ads" if purpose == "measurement" else purpose
        assert (expected in rule.denies) == bool(denied_by([rule.reason], purpose))


def test_a_minor_reads_why_nothing_is_shared() -> None:
    event = parsed("tag", tag_event())
    minor = fold([change(profile={"birth_year": 2014, "country": "US"})])
    decision = decide(event, minor, PolicyConfig())
    assert Reason.USER_UNDER_16 in decision.reasons
    assert decision.partner_sharing == "deny"
    said = sentence("partner_sharing", decision.partner_sharing, decision.reasons)
    assert said == "Not shared with partners because you are under 16."
    assert sentence("ads", decision.ads, decision.reasons) == "Used to personalize ads."


def test_sharing_withheld_because_ads_was_names_the_ads_rule() -> None:
    said = sentence("partner_sharing", "deny", ("browser.daa_opt_out",))
    assert said == (
        "Not shared with partners because you opted out of targeted ads in this browser "
        "(the industry's web opt-out)."
    )


def test_a_waived_rule_is_not_given_as_the_reason_for_an_on_platform_purchase() -> None:
    codes = ("account.personalization_off", "exception.on_platform_purchase", "user.under_16")
    assert sentence("personalization", "allow", codes) == "Used to personalize what you see."
    assert sentence("partner_sharing", "deny", codes) == (
        "Not shared with partners because you are under 16."
    )


def test_the_rule_of_an_unknown_code_is_none() -> None:
    assert RULE.get(Reason.BROWSER_DNT) is not None
    assert denied_by(["no.such_rule"], "ads") == []


def test_every_way_a_subject_is_found_has_words() -> None:
    for match in get_args(IdentityMatch):
        assert identity_words(match) != match, match


def test_the_contracts_describe_every_reason_code_from_the_table() -> None:
    from pipeline import catalogue, contracts

    described = contracts.json_schema(catalogue.AUDIT)["properties"]["reasons"]["description"]
    in_asyncapi = contracts.asyncapi()["components"]["schemas"]["AuditRecord"]["properties"]
    assert in_asyncapi["reasons"]["description"] == described
    for known in RULES:
        assert f"`{known.reason}`" in described
