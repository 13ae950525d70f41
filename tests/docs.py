"""The product's documents as data: their pages, links, headings and code blocks.

Shared by the unit test of the documents (links, anchors, contents, length) and the
integration test that runs their snippets.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parents[1]
PAGES: Final = (
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    ROOT / "deploy" / "README.md",
    ROOT / "deploy" / "chaos" / "README.md",
    ROOT / "benchmarks" / "README.md",
)
NOT_RUN: Final = re.compile(r"^<!-- not run by the docs test: (.+) -->$")
_FENCE: Final = re.compile(r"^```(\w*)\s*$")
_HEADING: Final = re.compile(r"^(#{1,6}) (.*)$")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    page: Path
    line: int
    language: str
    text: str
    not_run: str | None
    """Why the docs test does not run it, as the page says just above it."""

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> Iterator[Block]:
    """The fenced code blocks of `page`, in order."""
    lines = page.read_text().split("\n")
    index = 0
    while index < len(lines):
        match = _FENCE.match(lines[index])
        if match is None:
            index += 1
            continue
        start = index
        end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("```"))
        marker = NOT_RUN.match(lines[start - 1]) if start > 0 else None
        yield Block(
            page,
            start + 1,
            match[1],
            "\n".join(lines[start + 1 : end]) + "\n",
            None if marker is None else marker[1],
        )
        index = end + 1


def prose(page: Path) -> str:
    """The page without its code blocks."""
    kept, inside = [], False
    for line in page.read_text().split("\n"):
        if line.startswith("```"):
            inside = not inside
            continue
        if not inside:
            kept.append(line)
    return "\n".join(kept)


def anchor(title: str) -> str:
    """GitHub's anchor of a heading."""
    text = re.sub(r"[^\w\- ]", "", title.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of every heading of `page`."""
    return {anchor(m[2]) for line in prose(page).split("\n") if (m := _HEADING.match(line))}
