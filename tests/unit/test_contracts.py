"""The published contracts are what the catalogue and the models say, and they hold."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from pipeline import catalogue, contracts
from pipeline.core.deidentify import Pseudonymizer
from pipeline.core.policy import PolicyConfig, decide
from pipeline.core.route import audit_record, route
from tests.unit.factories import NOW, parsed, tag_event

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_contracts_match_the_models() -> None:
    assert contracts.drift(ROOT) == [], "run `consent-pipeline contracts` and commit the result"


def test_drift_names_a_changed_missing_or_stale_file(tmp_path: Path) -> None:
    contracts.write(tmp_path)
    schema = tmp_path / contracts.JSON_DIR / f"{catalogue.AUDIT.name}.json"
    schema.write_text("{}")
    (tmp_path / contracts.JSON_DIR / f"{catalogue.DLQ.name}.json").unlink()
    (tmp_path / contracts.JSON_DIR / "gone.topic.json").write_text("{}")

    assert sorted(map(str, contracts.drift(tmp_path))) == sorted(
        str(contracts.JSON_DIR / name)
        for name in (
            f"{catalogue.AUDIT.name}.json",
            f"{catalogue.DLQ.name}.json",
            "gone.topic.json",
        )
    )


@pytest.mark.parametrize("topic", contracts.json_topics(), ids=lambda topic: topic.name)
def test_every_json_topic_has_a_valid_json_schema(topic: catalogue.Topic) -> None:
    schema = json.loads((ROOT / contracts.JSON_DIR / f"{topic.name}.json").read_text())

    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$id"] == f"{topic.name}.json"


def test_the_asyncapi_document_names_every_topic_once() -> None:
    document = yaml.safe_load((ROOT / contracts.ASYNCAPI_FILE).read_text())

    addresses = [channel["address"] for channel in document["channels"].values()]
    assert document["asyncapi"] == "3.0.0"
    assert sorted(addresses) == sorted(topic.name for topic in catalogue.every_topic())
    assert len(document["operations"]) == len(addresses)


def test_a_routed_record_validates_and_a_changed_one_does_not() -> None:
    event = parsed("tag", tag_event())
    pseudonymizer = Pseudonymizer(b"k" * 32, "k1")
    decision = decide(event, None, PolicyConfig())
    audit = audit_record(
        event,
        decision,
        pseudonymizer=pseudonymizer,
        destinations=[o.destination for o in route(event, decision, None, pseudonymizer)],
        duplicate=False,
        origin=None,
        received_at=NOW,
        decided_at=NOW,
    )
    validator = jsonschema.Draft202012Validator(contracts.json_schema(catalogue.AUDIT))

    assert list(validator.iter_errors(audit.record)) == []
    assert list(validator.iter_errors({**audit.record, "user_id": "u"}))
    assert list(validator.iter_errors({**audit.record, "duplicate": "no"}))
