"""The published contracts, generated from the topic catalogue and the pydantic models.

- `schemas/json/<topic>.json`: a JSON Schema (draft 2020-12) of the values of every topic
  that carries JSON, from its catalogue model;
- `schemas/asyncapi.yaml`: an AsyncAPI 3.0 document of every topic (inputs, outputs and
  the worker's changelogs): address, key, partitioning, retention, compaction, the
  worker's operation on it and the message payload;
- `docs/policy.md`: the policy's rules, purposes and DLQ reasons, from the rule table.

`consent-pipeline contracts` writes them; `consent-pipeline contracts --check` (and a
test) fails when the committed files differ from what the models say. Nothing here is
written by hand.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any, Final, Literal

import yaml
from pydantic.json_schema import models_json_schema

from pipeline import catalogue
from pipeline.catalogue import Topic
from pipeline.policydoc import POLICY_FILE, reasons_description
from pipeline.policydoc import render as render_policy
from schemas.internal import HOP_HEADER

JSON_DIR: Final = Path("schemas/json")
ASYNCAPI_FILE: Final = Path("schemas/asyncapi.yaml")
JSON_SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
KAFKA_BINDING_VERSION: Final = "0.5.0"
DAY_MS: Final = 24 * 3600 * 1000

_RETENTION_SETTING: Final[Mapping[str, str]] = {
    "raw": "PIPELINE_RAW_RETENTION_DAYS (default 7 days)",
    "internal": "PIPELINE_INTERNAL_RETENTION_HOURS (default 24 hours)",
    "output": "PIPELINE_OUTPUT_RETENTION_DAYS (default 7 days)",
    "audit": "PIPELINE_AUDIT_RETENTION_DAYS (default 90 days)",
    "dlq": "PIPELINE_DLQ_RETENTION_DAYS (default 30 days)",
    "compacted": "compacted: the newest record of each key is kept",
}
_RETENTION_DEFAULT_DAYS: Final[Mapping[str, int]] = {"raw": 7, "output": 7, "audit": 90, "dlq": 30}
_PARTITIONING: Final[Mapping[str, str]] = {
    "any": "any partitioner; the pipeline re-keys what it reads",
    "murmur2": catalogue.MURMUR2_NOTE,
    "table": "the partition of the table store the record belongs to",
}


def json_schema(topic: Topic) -> dict[str, Any]:
    """The JSON Schema of a topic's values.

    Raises:
        ValueError: the topic carries stored bytes, not JSON.
    """
    if topic.value is None:
        raise ValueError(f"{topic.name} carries no JSON")
    schema = topic.value.model_json_schema(mode="validation")
    if topic is catalogue.AUDIT:
        _describe_reasons(schema)
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": f"{topic.name}.json",
        **schema,
        "description": f"Values of `{topic.name}`: {topic.summary}",
    }


def _describe_reasons(audit: dict[str, Any]) -> None:
    """The audit schema's `reasons`, described from the policy's rule table."""
    audit["properties"]["reasons"]["description"] = reasons_description()


def json_topics() -> list[Topic]:
    """The catalogue topics whose values are JSON documents."""
    return [topic for topic in catalogue.every_topic() if topic.value is not None]


def asyncapi() -> dict[str, Any]:
    """The AsyncAPI 3.0 document of every topic of the catalogue."""
    topics = list(catalogue.every_topic())
    mode: Literal["validation"] = "validation"
    models = [(t.value, mode) for t in json_topics() if t.value is not None]
    models += [(t.headers, mode) for t in catalogue.INTERNAL if t.headers is not None]
    _, definitions = models_json_schema(models, ref_template="#/components/schemas/{model}")
    schemas: dict[str, Any] = dict(definitions.get("$defs", {}))
    _describe_reasons(schemas[catalogue.AUDIT.value.__name__])  # type: ignore[union-attr]
    schemas["StoredBytes"] = {
        "type": "string",
        "format": "binary",
        "description": "A table's stored bytes, as pipeline.core.stored encodes them.",
    }
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for topic in topics:
        channel_id = _identifier(topic.name)
        message_id = f"{channel_id}Record"
        messages[message_id] = _message(topic)
        channel: dict[str, Any] = {
            "address": topic.name,
            "title": topic.name,
            "description": _description(topic),
            "messages": {message_id: {"$ref": f"#/components/messages/{message_id}"}},
            "bindings": {"kafka": _channel_binding(topic)},
        }
        if "{app_id}" in topic.name:
            channel["parameters"] = {
                "app_id": {"description": "The worker group's PIPELINE_APP_ID."}
            }
        channels[channel_id] = channel
        action = "receive" if topic.role == "input" else "send"
        operations[f"{action}{channel_id[0].upper()}{channel_id[1:]}"] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "summary": _operation_summary(topic, action),
            "messages": [{"$ref": f"#/channels/{channel_id}/messages/{message_id}"}],
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "consent-pipeline",
            "version": _version(),
            "description": (
                "The topics of the consent-enforcing pipeline: what its workers read "
                "(raw events, consent changes), what they write (one stream per permitted "
                "use, de-identified aggregates, the audit of every decision, the DLQ) and "
                "the changelogs of their tables. Every address takes the deployment's "
                "PIPELINE_TOPIC_PREFIX in front. Values are UTF-8 JSON unless stated."
            ),
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def render() -> dict[Path, str]:
    """Every contract file (relative to the repository root) and its text."""
    files = {
        JSON_DIR / f"{topic.name}.json": json.dumps(json_schema(topic), indent=2) + "\n"
        for topic in json_topics()
    }
    header = (
        "# Generated by `consent-pipeline contracts` from pipeline/catalogue.py and schemas/.\n"
    )
    files[ASYNCAPI_FILE] = header + yaml.dump(
        asyncapi(), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100
    )
    files[POLICY_FILE] = render_policy()
    return files


class _Dumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks, so descriptions read as they were written."""


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _represent_str)


def write(root: Path) -> list[Path]:
    """Write every contract under `root`, removing stale JSON Schemas; returns what changed."""
    files = render()
    changed = [path for path, text in files.items() if _read(root / path) != text]
    for path in changed:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(files[path])
    for stale in stale_files(root):
        stale.unlink()
        changed.append(stale.relative_to(root))
    return changed


def drift(root: Path) -> list[Path]:
    """The contract files under `root` that differ from the models (missing or stale too)."""
    files = render()
    differing = [path for path, text in files.items() if _read(root / path) != text]
    return differing + [stale.relative_to(root) for stale in stale_files(root)]


def stale_files(root: Path) -> list[Path]:
    """JSON Schemas under `root` of topics the catalogue no longer has."""
    expected = {JSON_DIR / f"{topic.name}.json" for topic in json_topics()}
    folder = root / JSON_DIR
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.json") if p.relative_to(root) not in expected)


def _message(topic: Topic) -> dict[str, Any]:
    payload: dict[str, Any]
    message: dict[str, Any] = {"name": f"{topic.name} record"}
    if topic.headers is not None:
        raw = [
            f"#/components/schemas/{t.value.__name__}" for t in catalogue.RAW.values() if t.value
        ]
        payload = {
            "description": "The raw record's value, unchanged: an event of the source the "
            "header names.",
            "oneOf": [{"$ref": ref} for ref in raw],
        }
        message["title"] = "Raw event on its way between the stages"
        message["contentType"] = "application/json"
        message["headers"] = {
            "type": "object",
            "properties": {
                HOP_HEADER: {
                    "description": "JSON: what the stages learned of the raw record so far.",
                    "$ref": f"#/components/schemas/{topic.headers.__name__}",
                }
            },
            "required": [HOP_HEADER],
        }
    elif topic.value is None:
        payload = {"$ref": "#/components/schemas/StoredBytes"}
        message["title"] = "Stored table value"
        message["contentType"] = "application/octet-stream"
    else:
        payload = {"$ref": f"#/components/schemas/{topic.value.__name__}"}
        message["title"] = topic.value.__name__
        message["contentType"] = "application/json"
    return {
        **message,
        "payload": payload,
        "bindings": {
            "kafka": {
                "key": {"type": "string", "description": topic.key},
                "bindingVersion": KAFKA_BINDING_VERSION,
            }
        },
    }


def _channel_binding(topic: Topic) -> dict[str, Any]:
    config: dict[str, Any] = {
        "cleanup.policy": ["compact"] if topic.compacted else ["delete"],
    }
    if topic.retention == "internal":
        config["retention.ms"] = 24 * 3600 * 1000
    elif not topic.compacted:
        config["retention.ms"] = _RETENTION_DEFAULT_DAYS[topic.retention] * DAY_MS
    return {
        "topic": topic.name,
        "topicConfiguration": config,
        "bindingVersion": KAFKA_BINDING_VERSION,
    }


def _description(topic: Topic) -> str:
    lines = [
        topic.summary,
        "",
        f"- role: {topic.role}",
        f"- key: {topic.key}",
        f"- partitioning: {_PARTITIONING[topic.partitioning]}",
        f"- retention: {_RETENTION_SETTING[topic.retention]}",
    ]
    if topic.append_time:
        lines.append("- timestamps: the broker's append time (LogAppendTime)")
    return "\n".join(lines)


def _operation_summary(topic: Topic, action: str) -> str:
    if topic.role == "changelog":
        return "Workers write their table changes here and read them back on recovery."
    if topic.role == "internal":
        return "One stage's workers produce it and the next stage's consume it, a hop per batch."
    if action == "receive":
        return f"Workers consume {topic.name}."
    return f"Workers produce {topic.name}, inside the transaction of the batch it comes from."


def _identifier(name: str) -> str:
    """A channel id from a topic name: `activity.partner_share` -> `activityPartnerShare`."""
    parts = re.split(r"[._-]", name.replace("{app_id}", "app"))
    return parts[0] + "".join(part[:1].upper() + part[1:] for part in parts[1:])


def _version() -> str:
    try:
        return metadata.version("consent-pipeline")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None
