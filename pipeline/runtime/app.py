"""Build the Faust app that hosts a worker: its engine service and its web endpoints.

Faust runs the worker process: signals, logging, service start and stop, the web server.
The stream processing itself is the `Engine` service, which drives aiokafka in batches
inside Kafka transactions (see `pipeline.runtime.engine` for why), so Faust's own consumer and
producer are not started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import faust
from faust.app.base import BootStrategy
from prometheus_client import CollectorRegistry

from pipeline.errors import ConfigError, WorkerFault
from pipeline.host import port_problem
from pipeline.kafka.admin import check_copartitioned, read_cluster
from pipeline.kafka.cluster import cluster_problems, transaction_timeout_problem
from pipeline.runtime.engine import Engine
from pipeline.runtime.metrics import Metrics
from pipeline.runtime.privacy import register_consent_pages
from pipeline.runtime.web import register_pages
from pipeline.settings import Settings
from pipeline.stages import worker_stages
from pipeline.state.folder import StateFolder

log = logging.getLogger(__name__)


class _WorkerBoot(BootStrategy):
    """Start the web server and the engine; not Faust's stream consumer and producer."""

    enable_kafka = False


class _PipelineApp(faust.App):
    BootStrategy = _WorkerBoot

    def _create_directories(self) -> None:
        """Nothing: Faust keeps no state here; the engine's stores live under `data_dir`."""


def create_app(
    settings: Settings, partition_count: int | None = None, folder: StateFolder | None = None
) -> tuple[faust.App, Engine]:
    """The Faust app and the engine service of one worker, configured from `settings`."""
    app = _PipelineApp(
        settings.app_id,
        broker=settings.broker_urls,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_in_thread=False,
    )
    metrics = Metrics(CollectorRegistry())
    engine = Engine(
        settings,
        metrics,
        worker_stages(settings),
        partition_count=partition_count,
        folder=folder,
        loop=asyncio.get_event_loop(),
    )
    register_pages(app, engine, metrics)
    register_consent_pages(app, settings, engine, metrics.registry)
    return app, engine


def run_worker(settings: Settings) -> None:
    """Run one worker process until it is stopped by a signal.

    Raises:
        TopicLayoutError: the input topics are missing or not co-partitioned.
        ConfigError: a setting the worker needs is missing, its web port is taken, another
            worker runs on its state folder, or the brokers refuse its transaction timeout.
        KafkaUnavailable: no bootstrap server answered.
    """
    settings.require_hmac_key()
    taken = port_problem("PIPELINE_WEB_PORT", settings.web_host, settings.web_port)
    if taken is not None:
        raise ConfigError(taken)
    folder = StateFolder(settings.data_dir / settings.app_id)
    if settings.store == "rocksdb":
        with contextlib.suppress(WorkerFault):  # a folder it cannot use yet: retried by the engine
            folder.lock()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    partitions = loop.run_until_complete(check_copartitioned(settings))
    log.info("the tables' topics are co-partitioned (%d partitions)", partitions)
    cluster = loop.run_until_complete(read_cluster(settings))
    refused = transaction_timeout_problem(settings, cluster)
    if refused is not None:
        raise ConfigError(refused)
    for problem in cluster_problems(settings, cluster):
        log.warning("cluster: %s", problem)
    app, engine = create_app(settings, partitions, folder)
    worker = faust.Worker(app, engine, loglevel=settings.log_level.upper(), quiet=True, loop=loop)
    worker.execute_from_commandline()
