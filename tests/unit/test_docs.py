"""The documents stand alone: links resolve, files they name exist, long pages have contents."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.docs import PAGES, ROOT, anchors, blocks, prose

LINK = re.compile(r"\]\(([^)\s]+)\)")
NAMED_FILE = re.compile(
    r"`((?:pipeline|schemas|tests|deploy|benchmarks|docs)/[A-Za-z0-9_./-]+\.[a-z]{1,5})`"
)
README_MAX_LINES = 250
CONTENTS_FROM_LINES = 120
TRACKED = set(
    subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
)


def ids(page: Path) -> str:
    return str(page.relative_to(ROOT))


def exists(path: Path) -> bool:
    relative = str(path.resolve().relative_to(ROOT))
    return relative in TRACKED or any(name.startswith(relative + "/") for name in TRACKED)


@pytest.mark.parametrize("page", PAGES, ids=ids)
def test_every_link_names_a_file_of_the_repository_and_a_heading_it_has(page: Path) -> None:
    for target in LINK.findall(prose(page)):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, fragment = target.partition("#")
        linked = page if not path else (page.parent / path)
        assert exists(linked), f"{ids(page)} links to {target}, which the repository lacks"
        if fragment and linked.suffix == ".md":
            assert fragment in anchors(linked), f"{ids(page)}: no heading #{fragment} in {path}"


@pytest.mark.parametrize("page", PAGES, ids=ids)
def test_every_file_a_page_names_is_in_the_repository(page: Path) -> None:
    for named in NAMED_FILE.findall(page.read_text()):
        found = exists(ROOT / named) or exists(page.parent / named)
        assert found, f"{ids(page)} names {named}, which the repository lacks"


@pytest.mark.parametrize("page", PAGES, ids=ids)
def test_no_page_cites_a_document_outside_the_repository(page: Path) -> None:
    text = page.read_text()
    assert "SPEC" not in text.replace("ASYNCAPI_SPECS", "")
    assert "§" not in text


def test_the_readme_is_a_front_page() -> None:
    readme = ROOT / "README.md"
    assert len(readme.read_text().splitlines()) <= README_MAX_LINES
    assert "make run" in readme.read_text()
    assert "make test" in readme.read_text()


@pytest.mark.parametrize("page", sorted((ROOT / "docs").glob("*.md")), ids=ids)
def test_a_long_page_opens_with_its_contents(page: Path) -> None:
    if len(page.read_text().splitlines()) < CONTENTS_FROM_LINES:
        return
    assert "contents" in anchors(page), f"{ids(page)} is long and has no Contents"


@pytest.mark.parametrize("page", PAGES, ids=ids)
def test_a_block_left_unrun_says_why(page: Path) -> None:
    for block in blocks(page):
        if block.not_run is not None:
            assert len(block.not_run) > 10, block.name
