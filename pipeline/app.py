"""Build the Faust app from settings, and run a worker."""

from __future__ import annotations

import asyncio
import logging

import faust

from pipeline.admin import check_copartitioned
from pipeline.agents import register_agents
from pipeline.settings import Settings
from pipeline.topics import Topics

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> faust.App:
    """A Faust app with the pipeline's topics and agents, configured from `settings`."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=settings.broker_urls,
        store="rocksdb://" if settings.store == "rocksdb" else "memory://",
        datadir=str(settings.data_dir),
        web_host=settings.web_host,
        web_port=settings.web_port,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        consumer_auto_offset_reset="earliest",
        key_serializer="raw",
        value_serializer="raw",
    )
    register_agents(app, Topics.bind(app, settings))
    return app


def run_worker(settings: Settings) -> None:
    """Run one worker process until it is stopped by a signal.

    Raises:
        TopicLayoutError: the input topics are missing or not co-partitioned.
    """
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    partitions = loop.run_until_complete(check_copartitioned(settings))
    log.info("input topics are co-partitioned (%d partitions)", partitions)
    app = create_app(settings)
    worker = faust.Worker(app, loglevel=settings.log_level.upper(), quiet=True, loop=loop)
    worker.execute_from_commandline()
