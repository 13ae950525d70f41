"""schemas/asyncapi.yaml is a valid AsyncAPI 3.0 document, by the specification's own schema."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import yaml

from pipeline.contracts import ASYNCAPI_FILE
from tests.deploy.metric_names import REPO


def test_the_asyncapi_document_validates_against_the_specification(asyncapi_schema: Path) -> None:
    schema = json.loads(asyncapi_schema.read_text())
    document = yaml.safe_load((REPO / ASYNCAPI_FILE).read_text())

    errors = [
        f"{'/'.join(map(str, error.path))}: {error.message}"
        for error in jsonschema.Draft7Validator(schema).iter_errors(document)
    ]

    assert errors == []


def test_the_specification_schema_rejects_a_broken_document(asyncapi_schema: Path) -> None:
    schema = json.loads(asyncapi_schema.read_text())
    document = yaml.safe_load((REPO / ASYNCAPI_FILE).read_text())
    channel = next(iter(document["channels"].values()))
    channel["messages"] = "not a map"

    assert list(jsonschema.Draft7Validator(schema).iter_errors(document))
