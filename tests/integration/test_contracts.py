"""Real records from every output topic validate against the published JSON Schemas."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from pipeline import catalogue
from pipeline.contracts import JSON_DIR
from pipeline.settings import Settings
from pipeline.sim.traffic import TrafficConfig, TrafficGenerator
from schemas import codec
from tests.conftest import TRUST_KEY
from tests.integration.conftest import WorkerProcess
from tests.integration.kafka_io import Read, produce_sync, read_sync

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _schema(topic: catalogue.Topic) -> jsonschema.Draft202012Validator:
    schema = json.loads((ROOT / JSON_DIR / f"{topic.name}.json").read_text())
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


HOUR = 3600
CLOSE_AFTER_S = 45
"""The previous hour's aggregation cells close this long after the test starts."""


def _last_hour_event(n: int, hour: int) -> dict[str, Any]:
    """A tag event of the hour before the current one."""
    return {
        "event_id": f"last-hour-{n}",
        "event_name": "page_visit",
        "event_time": hour + 60 + n,
        "action_source": "web",
        "advertiser_id": "adv-contracts",
        "browser": {"cookie_id": f"ck-last-hour-{n}"},
    }


def test_records_of_every_output_topic_match_their_json_schema(
    pipeline_settings: Settings, start_worker: Callable[[Settings], WorkerProcess]
) -> None:
    # The grace period keeps the previous hour open until CLOSE_AFTER_S from now, then
    # closes it: its cell of events sent meanwhile is emitted (k = 2).
    now = int(time.time())
    current_hour = now - now % HOUR
    grace = now - current_hour + CLOSE_AFTER_S
    settings = pipeline_settings.model_copy(
        update={"aggregate_k": 2, "aggregate_grace_seconds": grace}
    )
    start_worker(settings).wait_ready()
    generator = TrafficGenerator(
        TrafficConfig(users=200, malformed_share=0.05), seed=11, trust_key=TRUST_KEY
    )
    records = [*generator.bootstrap(), *generator.records(600)]
    produce_sync(
        settings.kafka_bootstrap_servers,
        [(settings.topic(r.topic), r.key, r.value, list(r.headers)) for r in records],
    )
    produce_sync(
        settings.kafka_bootstrap_servers,
        [
            (settings.topic(catalogue.RAW_TAG), f"anon:ck-last-hour-{n}".encode(), codec.dumps(e))
            for n, e in ((n, _last_hour_event(n, current_hour - HOUR)) for n in range(4))
        ],
    )
    names = {settings.topic(topic): topic for topic in catalogue.OUTPUTS}

    def every_output_seen(got: dict[str, list[Read]]) -> bool:
        return all(got.get(name) for name in names)

    got = read_sync(settings.kafka_bootstrap_servers, list(names), every_output_seen, timeout_s=90)

    for name, topic in names.items():
        validator = _schema(topic)
        assert got[name], f"no record on {topic.name}"
        for read in got[name]:
            errors = [e.message for e in validator.iter_errors(codec.loads(read.value or b""))]
            assert errors == [], (topic.name, errors[:3])
