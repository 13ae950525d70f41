"""`make run`: a worker, a synthetic producer and a live view of what flows, until Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from pipeline.admin import create_topics
from pipeline.settings import Settings
from pipeline.synthetic import consent_change, tag_event
from schemas import codec

log = logging.getLogger(__name__)

Say = Callable[[str], None]


async def _produce(
    settings: Settings, rate: float, n_users: int, stop: asyncio.Event, say: Say
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
    await producer.start()
    rng = random.Random(7)
    sent = 0
    try:
        for user in range(n_users):
            change = consent_change(rng, user)
            await producer.send(
                settings.topic("consent.changes"),
                codec.dumps(change),
                key=change["user_id"].encode(),
            )
        await producer.flush()
        say(f"producer: wrote consent for {n_users} users to {settings.topic('consent.changes')}")
        while not stop.is_set():
            event = tag_event(rng, n_users)
            await producer.send(
                settings.topic("raw.tag"), codec.dumps(event), key=event["user_id"].encode()
            )
            sent += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1 / rate)
    finally:
        await producer.stop()
        say(f"producer: sent {sent} events to {settings.topic('raw.tag')}")


async def _tail(settings: Settings, stop: asyncio.Event, say: Say) -> None:
    topic = settings.topic("decisions.audit")
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        auto_offset_reset="latest",
        isolation_level="read_committed",
    )
    await consumer.start()
    seen = 0
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=500)
            for messages in batches.values():
                for message in messages:
                    seen += 1
                    record = codec.loads(message.value or b"{}")
                    outcomes = record.get("outcomes", {})
                    flags = " ".join(f"{k[:5]}={v}" for k, v in outcomes.items())
                    say(
                        f"{time.strftime('%H:%M:%S')}  {record.get('source')}:"
                        f"{record.get('event_id', '')[:12]}  {flags}"
                        f"  reasons={','.join(record.get('reasons', [])) or '-'}  (total {seen})"
                    )
    finally:
        await consumer.stop()


async def run_demo(
    settings: Settings, rate: float, n_users: int, duration: float | None, say: Say
) -> int:
    """Start a worker process, feed it and print its output until interrupted."""
    created = await create_topics(settings)
    if created:
        say(f"created {len(created)} topics on {settings.kafka_bootstrap_servers}")
    log_dir = Path(".local/logs")
    log_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, before anything runs
    worker_log = (log_dir / "worker.log").open("ab")
    env = dict(os.environ)
    if settings.hmac_key is None:
        env["PIPELINE_HMAC_KEY"] = _dev_hmac_key(Path(".local/dev-hmac-key"))
        say("using a development HMAC key from .local/dev-hmac-key (set PIPELINE_HMAC_KEY)")
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pipeline.cli",
        "worker",
        stdout=worker_log,
        stderr=worker_log,
        env=env,
    )
    say(f"worker started (pid {worker.pid}, log {log_dir / 'worker.log'}); Ctrl-C stops")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if duration:
        loop.call_later(duration, stop.set)
    tasks = [
        asyncio.create_task(_produce(settings, rate, n_users, stop, say)),
        asyncio.create_task(_tail(settings, stop, say)),
    ]
    worker_exit = asyncio.create_task(worker.wait())
    await asyncio.wait(
        [worker_exit, asyncio.create_task(stop.wait())], return_when="FIRST_COMPLETED"
    )
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    if worker.returncode is None:
        worker.terminate()
    code = await worker_exit
    worker_log.close()
    say(f"worker stopped (exit {code})")
    return 0 if code in (0, -signal.SIGTERM) else 1


def _dev_hmac_key(path: Path) -> str:
    """A random key kept in `path`, created on first use; for local demos only."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()
