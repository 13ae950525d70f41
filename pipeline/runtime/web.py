"""The worker's web endpoints: Prometheus metrics, liveness and readiness.

`/ready` answers 200 only while the worker processes its assignment, and says what it does
otherwise (`pipeline.runtime.membership.Phase`): `starting`, `recovering` its tables,
`rebalancing`, `rejoining` after the group dropped it, `faulted` (with the `fault`: its
state, disk or lock), or `stopping`. `/healthz` fails when the loop has stalled, or when
the worker has stood down for a fault as often as it may (it then exits).
"""

from __future__ import annotations

import time
from typing import Any

import faust
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pipeline.runtime.engine import Engine
from pipeline.runtime.metrics import Metrics

STALL_AFTER_S = 60.0
"""Liveness fails when the engine loop has not turned for this long."""


def register_pages(app: faust.App, engine: Engine, metrics: Metrics) -> None:
    """Serve `/metrics`, `/healthz` and `/ready` on the worker's web port."""

    @app.page("/metrics")
    async def prometheus(web: Any, request: Any) -> Any:
        # aiohttp refuses a charset inside content_type, so the header is set whole.
        return web.bytes(
            generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        if engine.unrecoverable:
            return web.json({"status": "faulted", "fault": engine.fault}, status=503)
        stalled = time.monotonic() - engine.last_cycle > STALL_AFTER_S
        body = {"status": "stalled" if stalled else "ok"}
        return web.json(body, status=503 if stalled else 200)

    @app.page("/ready")
    async def ready(web: Any, request: Any) -> Any:
        state = "stopping" if engine.should_stop else engine.phase
        is_ready = state == "processing"
        body: dict[str, Any] = {"ready": is_ready, "phase": state}
        if engine.fault is not None:
            body["fault"] = engine.fault
        return web.json(body, status=200 if is_ready else 503)
