"""Every snippet of the README and docs/ runs: against a collector, a worker and the broker.

(The runbooks under deploy/ and the suites' own READMEs hold operators' commands for
clusters and images; `make deploy-check` checks what they deploy.)

- `python` blocks run in their own interpreter (the SDKs read their endpoint at import),
  with the names the pages leave to the reader (`TOKEN`, hashed emails, click ids, ...)
  defined, and `https://collector.example.com` the test collector;
- `sh` blocks run in bash (`-eu -o pipefail`) in a scratch folder holding `.local/demo-token`
  and `.venv/bin/consent-pipeline`, with `$TOKEN`/`$TRUSTED_TOKEN` set, the collector's
  address for `127.0.0.1:6067`, every `curl` answer's status checked (2xx), and each
  `make` line checked to name a target of the Makefile (the suite itself runs them);
- `html` blocks: each image beacon's `src` is requested from the collector (200, a GIF);
- `text` blocks and blocks without a language are output and diagrams, not run;
- a block the page marks `<!-- not run by the docs test: why -->` is skipped, with that
  reason in the test's id.

The demo's advertiser, `shop-demo`, is the test registry's `shop-1`; both own ad account
549755885175, pixel 1234567890 and tag 2612345678901.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shlex
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from pipeline.settings import Settings
from tests.docs import ROOT, Block, blocks
from tests.integration.collector_io import Running, Tokens
from tests.integration.conftest import WorkerProcess, process_env
from tests.integration.privacy_io import (
    Writer,
    consent_api,
    held_by_api,
    person,
)

pytestmark = pytest.mark.integration

RUN = ("python", "sh", "html")
TARGET = re.compile(r"^([A-Za-z][\w-]*):", re.MULTILINE)
MAKE_TARGETS = set(TARGET.findall((ROOT / "Makefile").read_text()))
EMAIL_SHA256 = hashlib.sha256(b"jane@example.com").hexdigest()
PRELUDE = f"""
TOKEN = {{token!r}}
EMAIL_SHA256 = {EMAIL_SHA256!r}
IP = "203.0.113.7"
UA = "Mozilla/5.0 (X11; Linux x86_64)"
EPIK = "dj0yJnU9b2JDcFFHekV4SHJNcmVrbFBkUEdqakh0akdUT1VjVVUmcD0yJm49cnNBQ3F2"
FBC = "fb.1.1700000000000.IwAR2F4-dbP0l7Mn1IawQQGCINEz7PYXQvwjNwB_qa2ofrHyiLjcbCRxTDMgk"
FBP = "fb.1.1700000000000.1098115397"
"""
CURL = 'curl() { command curl -w "\\nHTTP %{http_code}\\n" "$@"; }\n'


def runnable() -> Iterator[Block]:
    for page in (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))):
        yield from (block for block in blocks(page) if block.language in RUN)


BLOCKS = list(runnable())


@pytest.fixture(scope="module")
def tokens() -> Tokens:
    return Tokens()


@pytest.fixture
async def api(
    stack: Settings, tokens: Tokens, workers: list[WorkerProcess]
) -> AsyncIterator[Running]:
    async with Writer(stack) as writer, consent_api(stack, tokens, workers) as running:
        for record in (person("demo-us", "US", 35), person("demo-eea", "DE", 30)):
            await writer.consent(record)
            await held_by_api(running.url, tokens.trusted, record["user_id"])
        yield running


def scratch(folder: Path, tokens: Tokens) -> Path:
    """A folder like a checkout after `make run`: the demo token and the console script."""
    (folder / ".local").mkdir(exist_ok=True)
    (folder / ".local" / "demo-token").write_text(tokens.shop + "\n")
    script = folder / ".venv" / "bin" / "consent-pipeline"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m pipeline.cli "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return folder


def environment(
    settings: Settings, running: Running, tokens: Tokens, folder: Path
) -> dict[str, str]:
    env = process_env(running.settings)
    env["KAFKA_BOOTSTRAP_SERVERS"] = settings.kafka_bootstrap_servers
    env["PYTHONPATH"] = str(ROOT)
    env["PATH"] = f"{folder / '.venv' / 'bin'}{os.pathsep}{env['PATH']}"
    env["TOKEN"] = tokens.shop
    env["TRUSTED_TOKEN"] = tokens.trusted
    env["PIPELINE_ADVERTISERS_FILE"] = str(folder / "advertisers.yaml")
    env["PINTEREST_API_URI"] = f"{running.url}/v5"
    return env


def localized(text: str, running: Running) -> str:
    return (
        text.replace("https://collector.example.com", running.url)
        .replace("http://127.0.0.1:6067", running.url)
        .replace("localhost:6067", running.url)
        .replace("shop-demo", "shop-1")
    )


def run_sh(block: Block, env: dict[str, str], folder: Path, running: Running) -> None:
    for target in re.findall(r"^\s*make ([\w-]+)", block.text, re.MULTILINE):
        assert target in MAKE_TARGETS, f"{block.name}: no make target {target}"
    script = "\n".join(
        line for line in localized(block.text, running).split("\n") if not line.startswith("make ")
    )
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", CURL + script],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    out = done.stdout + done.stderr
    assert "Traceback" not in out, f"{block.name}:\n{out[-3000:]}"
    assert done.returncode in (0, 1), f"{block.name} exited {done.returncode}:\n{out[-3000:]}"
    if done.returncode == 1:  # only `explain` or `dlq show` finding nothing ends so
        assert "No audit record" in out or "no committed dead letter" in out, out[-3000:]
    for status in re.findall(r"^HTTP (\d{3})$", done.stdout, re.MULTILINE):
        assert status.startswith("2"), f"{block.name}: HTTP {status}\n{out[-3000:]}"


def run_python(
    block: Block, env: dict[str, str], folder: Path, running: Running, token: str
) -> None:
    source = PRELUDE.format(token=token) + localized(block.text, running)
    done = subprocess.run(
        [sys.executable, "-c", source],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, f"{block.name}:\n{done.stdout}\n{done.stderr[-3000:]}"


async def run_html(block: Block, running: Running) -> None:
    sources = re.findall(r'src="https://collector\.example\.com([^"]+)"', block.text)
    assert sources, f"{block.name}: no beacon"
    async with aiohttp.ClientSession() as session:
        for source in sources:
            async with session.get(running.url + source) as answer:
                assert answer.status == 200, f"{block.name}: {answer.status}"
                assert answer.content_type == "image/gif"


@pytest.mark.parametrize(
    "block",
    [
        pytest.param(
            block,
            id=block.name,
            marks=[pytest.mark.skip(reason=block.not_run)] if block.not_run else [],
        )
        for block in BLOCKS
    ],
)
async def test_the_snippet_runs(
    block: Block, api: Running, stack: Settings, tokens: Tokens, tmp_path: Path
) -> None:
    folder = scratch(tmp_path, tokens)
    env = environment(stack, api, tokens, folder)
    if block.language == "html":
        await run_html(block, api)
    elif block.language == "python":
        await asyncio.to_thread(run_python, block, env, folder, api, tokens.shop)
    else:
        await asyncio.to_thread(run_sh, block, env, folder, api)
