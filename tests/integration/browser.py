"""Headless Chromium from Debian's packages, driven through its chromedriver by selenium.

`deploy/tools/install-browser.sh` (run by `make test`) installs both; selenium is given
their paths, so it never looks for, nor downloads, a browser. A missing browser fails
the test, it is never skipped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver

INSTALL = "deploy/tools/install-browser.sh"
T = TypeVar("T")


def _executable(name: str, variable: str) -> str:
    found = shutil.which(os.environ.get(variable, name))
    if found is None:
        pytest.fail(f"{name} is not installed: run {INSTALL} (make test does)")
    return found


@contextlib.contextmanager
def chromium(width: int = 1000, height: int = 1400) -> Iterator[WebDriver]:
    """A headless Chromium session; quit when the block ends."""
    options = webdriver.ChromeOptions()
    options.binary_location = _executable("chromium", "CHROMIUM")
    for argument in (
        "--headless=new",
        "--no-sandbox",  # the tests run as root in CI
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        f"--window-size={width},{height}",
        "--lang=en-US",
    ):
        options.add_argument(argument)
    service = Service(executable_path=_executable("chromedriver", "CHROMEDRIVER"))
    try:
        driver = webdriver.Chrome(service=service, options=options)
    except WebDriverException as exc:
        pytest.fail(f"headless chromium did not start ({exc.msg}); see {INSTALL}")
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(check: Callable[[], T | None], timeout_s: float = 30.0, what: str = "") -> T:
    """Poll `check` until it returns something truthy (blocking: run it in a thread)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or 'the page'}")
        time.sleep(0.1)


def script(driver: WebDriver, source: str) -> Any:
    """What a script run in the page returns (selenium's call is untyped)."""
    return driver.execute_script(source)  # type: ignore[no-untyped-call]


def full_page_screenshot(driver: WebDriver, path: Path) -> None:
    """Save the whole page (not just the window) as a PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    width = script(driver, "return document.documentElement.scrollWidth")
    height = script(driver, "return document.documentElement.scrollHeight")
    driver.set_window_size(max(int(width), 1000), int(height) + 120)
    driver.save_screenshot(str(path))
