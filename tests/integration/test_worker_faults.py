"""A fault of the worker's machine stops its input instead of dead-lettering good records:
its state folder unusable, or held by another worker."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from pipeline import catalogue
from pipeline.settings import Settings
from schemas import codec
from tests.integration.conftest import WorkerProcess, free_port
from tests.integration.kafka_io import Read, produce_sync, read_sync

pytestmark = pytest.mark.integration

N_EVENTS = 40


def _event(i: int) -> dict[str, object]:
    return {
        "event_id": f"fault-{i}",
        "event_name": "page_visit",
        "event_time": int(time.time()) - 5,
        "action_source": "web",
        "advertiser_id": "adv-fault",
        "user_data": {"click_id": f"clk-fault-{i}"},
    }


def _get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except (urllib.error.URLError, ConnectionError):
        return 0, {}


def _until(check: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_state_folder_that_is_a_file_stops_input_until_it_is_fixed(
    pipeline_settings: Settings, start_worker: Callable[[Settings], WorkerProcess]
) -> None:
    settings = pipeline_settings.model_copy(update={"store": "rocksdb"})
    settings.data_dir.parent.mkdir(parents=True, exist_ok=True)
    settings.data_dir.write_text("a file where the state folder should be")
    raw_tag = settings.topic(catalogue.RAW_TAG)
    produce_sync(
        settings.kafka_bootstrap_servers,
        ((raw_tag, f"k-{i}".encode(), codec.dumps(_event(i))) for i in range(N_EVENTS)),
    )
    worker = start_worker(settings)
    base = f"http://127.0.0.1:{settings.web_port}"

    def faulted() -> dict[str, Any] | None:
        status, body = _get(f"{base}/ready")
        return body if status == 503 and body.get("phase") == "faulted" else None

    body = _until(faulted, 60, "the worker to stand down")
    assert "PIPELINE_DATA_DIR" in body["fault"]
    assert _get(f"{base}/healthz")[0] == 200, "it is retrying: alive, not ready"
    assert "worker fault:" in worker.output()

    settings.data_dir.unlink()
    _until(lambda: _get(f"{base}/ready")[0] == 200, 60, "the worker to recover")

    audit, dlq = settings.topic(catalogue.AUDIT), settings.topic(catalogue.DLQ)

    def all_audited(got: dict[str, list[Read]]) -> bool:
        return len(got[audit]) >= N_EVENTS

    out = read_sync(settings.kafka_bootstrap_servers, [audit, dlq], all_audited)
    assert sorted(r.json()["event_id"] for r in out[audit]) == sorted(
        f"fault-{i}" for i in range(N_EVENTS)
    )
    assert out[dlq] == [], "nothing was dead-lettered for the worker's fault"
    assert worker.proc.poll() is None


def test_a_second_worker_on_the_same_state_folder_is_refused_in_one_line(
    pipeline_settings: Settings, start_worker: Callable[[Settings], WorkerProcess]
) -> None:
    settings = pipeline_settings.model_copy(update={"store": "rocksdb"})
    first = start_worker(settings)
    first.wait_ready()
    second = start_worker(settings.model_copy(update={"web_port": free_port()}))

    code = second.proc.wait(timeout=60)

    lines = second.output().strip().splitlines()
    assert code == 2
    assert len(lines) == 1, lines
    assert "PIPELINE_DATA_DIR" in lines[0]
    assert f"pid {first.proc.pid}" in lines[0]
    assert first.proc.poll() is None
