"""Faust agents: read a batch, hand it to the core, write what it returns."""

from __future__ import annotations

import json
import logging
from typing import Any

import faust

from pipeline.topics import Topics

log = logging.getLogger(__name__)

BATCH_SIZE = 1000
BATCH_WITHIN_S = 0.05


def register_agents(app: faust.App, topics: Topics) -> None:
    """Attach the agents to `app`."""
    audit = topics.outputs["decisions.audit"]
    raw_tag = topics.raw["raw.tag"]

    @app.agent(raw_tag, name="receipts")
    async def receipts(stream: Any) -> None:
        async for batch in stream.take_events(BATCH_SIZE, within=BATCH_WITHIN_S):
            for event in batch:
                message = event.message
                receipt = {
                    "source_topic": message.topic,
                    "partition": message.partition,
                    "offset": message.offset,
                    "bytes": len(message.value or b""),
                }
                await audit.send(key=message.key, value=json.dumps(receipt).encode())
