"""The privacy settings page in a real browser (headless Chromium from Debian's packages):
a person turns Personalization off and saves; their next events leave the personalization
and ads streams and arrive de-identified. A person in the EEA is offered no partner
sharing; a minor reads why nothing of theirs is shared; every decision is said in words.
The screenshots it takes are the docs' (`SCREENSHOT_DIR=docs` writes them there).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By

from pipeline import catalogue
from pipeline.settings import Settings
from tests.integration.browser import chromium, full_page_screenshot, script, wait_for
from tests.integration.collector_io import Tokens
from tests.integration.conftest import WorkerProcess
from tests.integration.privacy_io import (
    Sent,
    Writer,
    consent_api,
    held_by_api,
    person,
    read_outputs,
    tag,
)

pytestmark = pytest.mark.integration

SCREENSHOTS = Path(os.environ.get("SCREENSHOT_DIR", ".local/screenshots"))
EVENT_EVERY_S = 0.4


@pytest.fixture(scope="module")
def driver() -> Iterator[WebDriver]:
    with chromium() as browser:
        yield browser


@contextlib.asynccontextmanager
async def browsing(writer: Writer, user_id: str, advertiser_id: str) -> AsyncIterator[list[Sent]]:
    """The person visits an advertiser's site every `EVENT_EVERY_S` while the block runs."""
    sent: list[Sent] = []
    stop = asyncio.Event()

    async def visit() -> None:
        while not stop.is_set():
            sent.append(await writer.event(tag(user_id, advertiser_id)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), EVENT_EVERY_S)

    task = asyncio.create_task(visit())
    try:
        yield sent
    finally:
        stop.set()
        await task


def rows(driver: WebDriver) -> list[dict[str, str]]:
    """The decisions the page lists: event id, outcome, whether after the last Save."""
    found = script(
        driver,
        "return [...document.querySelectorAll('#decisions tr')].map((r) => ({"
        "id: r.dataset.eventId, outcome: r.dataset.outcome, after: r.dataset.afterSave || ''}))",
    )
    return list(found)


def said(driver: WebDriver) -> list[dict[str, str]]:
    """What each listed decision says happened to the data, by purpose."""
    found = script(
        driver,
        "return [...document.querySelectorAll('#decisions tr')].map((r) => Object.fromEntries("
        "[...r.querySelectorAll('li[data-purpose]')].map((li) => [li.dataset.purpose, "
        "li.textContent])))",
    )
    return [dict(row) for row in found]


def page_text(driver: WebDriver) -> str:
    return str(script(driver, "return document.body.innerText"))


def no_reason_codes(text: str) -> None:
    """A person reads words, never the policy's codes."""
    for code in ("user.", "account.", "browser.", "device.", "subject.", "consent.missing"):
        assert code not in text


def open_page(driver: WebDriver, base_url: str, user_id: str, token: str) -> None:
    driver.get("about:blank")
    driver.get(f"{base_url}/account/privacy#user={user_id}&token={token}")
    wait_for(lambda: driver.find_element(By.ID, "settings").is_displayed(), what="the form")


async def in_thread(function: Any, *args: Any) -> Any:
    """Run a blocking browser step off the event loop (the collector serves on it)."""
    return await asyncio.to_thread(function, *args)


async def test_turning_personalization_off_deidentifies_the_persons_next_events(
    stack: Settings, workers: list[WorkerProcess], driver: WebDriver
) -> None:
    tokens = Tokens()
    user, advertiser = f"page-us-{uuid.uuid4().hex[:8]}", f"adv-{uuid.uuid4().hex[:8]}"
    async with (
        Writer(stack) as writer,
        consent_api(stack, tokens, workers) as api,
    ):
        await writer.consent(
            person(user, "US", 35, personalization=True, ads_from_partner_info=True)
        )
        await held_by_api(api.url, tokens.trusted, user)
        async with browsing(writer, user, advertiser) as sent:
            await in_thread(open_page, driver, api.url, user, tokens.trusted)
            switch = driver.find_element(By.ID, "personalization")
            assert switch.get_attribute("role") == "switch"
            assert await in_thread(switch.is_selected)
            assert driver.find_element(By.CSS_SELECTOR, "label[for=personalization]").text == (
                "Personalization"
            )
            allowed_before: set[str] = await in_thread(
                wait_for,
                lambda: {r["id"] for r in rows(driver) if r["outcome"] == "allowed"},
                60.0,
                "an allowed decision",
            )

            await in_thread(switch.click)
            await in_thread(driver.find_element(By.ID, "save").click)
            status = driver.find_element(By.ID, "status")
            await in_thread(
                wait_for, lambda: "Kafka acknowledged" in status.text, 30.0, "the acknowledgement"
            )
            acknowledged = int(status.get_attribute("data-acknowledged-at") or 0)
            assert status.get_attribute("role") == "status"

            def after_save() -> list[dict[str, str]]:
                later = [r for r in rows(driver) if r["after"]]
                return later if len(later) >= 3 else []

            shown = await in_thread(wait_for, after_save, 60.0, "three decisions after Save")
            assert {r["outcome"] for r in shown} == {"deidentified"}
            assert not await in_thread(switch.is_selected)
            await in_thread(full_page_screenshot, driver, SCREENSHOTS / "privacy-settings.png")
            resources = script(
                driver, "return performance.getEntriesByType('resource').map((e) => e.name)"
            )
            assert all(str(name).startswith(api.url) for name in resources)  # no external assets

    later = {s.event_id for s in sent if s.appended_ms > acknowledged}
    earlier_allowed = allowed_before
    assert len(later) >= 3
    got = await read_outputs(stack, later | earlier_allowed)
    identified = {
        read.json()["event_id"]
        for name in (catalogue.PERSONALIZATION.name, catalogue.ADS.name)
        for read in got[name]
    }
    assert earlier_allowed <= identified  # the streams did carry the person before the save
    assert not later & identified
    audits = {read.json()["event_id"]: read.json() for read in got[catalogue.AUDIT.name]}
    for event_id in later:
        assert audits[event_id]["destinations"] == ["deidentified"]
        assert "account.personalization_off" in audits[event_id]["reasons"]
    deidentified = [
        read
        for read in got[catalogue.DEIDENTIFIED.name]
        if read.json()["advertiser_id"] == advertiser
    ]
    assert len(deidentified) >= len(later) + len(earlier_allowed)
    assert all("user_id" not in read.json() for read in deidentified)


async def test_the_eea_persons_page_offers_no_partner_sharing(
    stack: Settings, workers: list[WorkerProcess], driver: WebDriver
) -> None:
    tokens = Tokens()
    user, advertiser = f"page-eea-{uuid.uuid4().hex[:8]}", f"adv-{uuid.uuid4().hex[:8]}"
    async with Writer(stack) as writer, consent_api(stack, tokens, workers) as api:
        await writer.consent(person(user, "DE", 30, personalization=True))
        await held_by_api(api.url, tokens.trusted, user)
        async with browsing(writer, user, advertiser):
            await in_thread(open_page, driver, api.url, user, tokens.trusted)

            inputs = driver.find_elements(By.CSS_SELECTOR, "#settings input")
            assert [i.get_attribute("id") for i in inputs] == [
                "personalization",
                "ads_from_partner_info",
            ]
            assert not driver.find_elements(By.ID, "partner_sharing")
            sharing = driver.find_element(By.ID, "setting-partner_sharing").text
            assert (
                "Not available for your account because you are in the EEA, the United Kingdom "
                "or Switzerland." in sharing
            )
            assert driver.find_element(By.ID, "personalization").is_selected()
            assert not driver.find_element(By.ID, "ads_from_partner_info").is_selected()  # opt-in
            region = driver.find_element(By.ID, "region-note").text
            assert "off unless you turn them on" in region

            decided = await in_thread(wait_for, lambda: said(driver), 60.0, "a decision")
            assert decided[0] == {
                "personalization": "Used to personalize what you see.",
                "ads": "Not used to personalize ads because ads based on information from "
                "partners is off in your settings.",
                "measurement": "Used only after removing what identifies you because ads "
                "based on information from partners is off in your settings.",
                "partner_sharing": "Not shared with partners because sharing with partners is "
                "off in your settings; and because you are in the EEA, the United Kingdom or "
                "Switzerland.",
            }
            decision = driver.find_element(By.CSS_SELECTOR, "#decisions td.decision").text
            assert decision == "Not used for ads, partner sharing"
            no_reason_codes(page_text(driver))
            await in_thread(full_page_screenshot, driver, SCREENSHOTS / "privacy-settings-eea.png")


async def test_a_minors_page_says_nothing_is_shared_because_they_are_under_16(
    stack: Settings, workers: list[WorkerProcess], driver: WebDriver
) -> None:
    tokens = Tokens()
    user, advertiser = f"page-minor-{uuid.uuid4().hex[:8]}", f"adv-{uuid.uuid4().hex[:8]}"
    async with Writer(stack) as writer, consent_api(stack, tokens, workers) as api:
        await writer.consent(person(user, "US", 14, personalization=True))
        await held_by_api(api.url, tokens.trusted, user)
        async with browsing(writer, user, advertiser):
            await in_thread(open_page, driver, api.url, user, tokens.trusted)
            sharing = driver.find_element(By.ID, "setting-partner_sharing").text
            assert "Not available for your account because you are under 16." in sharing

            decided = await in_thread(wait_for, lambda: said(driver), 60.0, "a decision")
            assert decided[0] == {
                "personalization": "Used to personalize what you see.",
                "ads": "Used to personalize ads.",
                "measurement": "Used to measure ads, under a pseudonym.",
                "partner_sharing": "Not shared with partners because you are under 16.",
            }
            decision = driver.find_element(By.CSS_SELECTOR, "#decisions td.decision").text
            assert decision == "Not used for partner sharing"
            no_reason_codes(page_text(driver))
            await in_thread(
                full_page_screenshot, driver, SCREENSHOTS / "privacy-settings-minor.png"
            )

            await in_thread(driver.find_element(By.ID, "personalization").click)
            await in_thread(driver.find_element(By.ID, "save").click)
            effect = driver.find_element(By.ID, "ads_from_partner_info-effect")
            await in_thread(
                wait_for, lambda: effect.is_displayed(), 30.0, "the effect on the next setting"
            )
            assert effect.text.startswith("Personalization is off, and that also stops ads")
