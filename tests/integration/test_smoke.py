"""The plumbing end to end: an independent producer in, a worker, an independent consumer out."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from pipeline import catalogue
from pipeline.settings import Settings
from schemas import codec
from tests.integration.conftest import WorkerProcess
from tests.integration.kafka_io import Read, produce_sync, read_sync

pytestmark = pytest.mark.integration

N_EVENTS = 300


def _event(i: int) -> dict[str, object]:
    return {
        "event_id": f"smoke-{i}",
        "event_name": "page_visit",
        "event_time": int(time.time()) - 5,
        "action_source": "web",
        "advertiser_id": "adv-smoke",
        "user_id": f"smoke-user-{i % 17}",
    }


def test_worker_audits_every_event_written_by_an_independent_producer(
    pipeline_settings: Settings, start_worker: Callable[[Settings], WorkerProcess]
) -> None:
    worker = start_worker(pipeline_settings)
    worker.wait_ready()
    raw_tag = pipeline_settings.topic(catalogue.RAW_TAG)
    produce_sync(
        pipeline_settings.kafka_bootstrap_servers,
        (
            (raw_tag, str(e["user_id"]).encode(), codec.dumps(e))
            for e in map(_event, range(N_EVENTS))
        ),
    )
    audit = pipeline_settings.topic(catalogue.AUDIT)

    def all_audited(got: dict[str, list[Read]]) -> bool:
        return len(got[audit]) >= N_EVENTS

    out = read_sync(pipeline_settings.kafka_bootstrap_servers, [audit], all_audited)
    event_ids = sorted(r.json()["event_id"] for r in out[audit])
    assert event_ids == sorted(f"smoke-{i}" for i in range(N_EVENTS))
    assert worker.proc.poll() is None
