"""`python -m tests.chaos`: run the fault scenarios, print each, write the report.

By default the suite starts (if needed) its own local broker with `deploy/local/kafka.sh`
on `--kafka-port` (9192), runs every scenario at full size, prints each scenario's load,
faults and invariants, and writes `deploy/chaos/report.md` and `report.json`. `--short`
runs the small sizes and writes the report under `.local/chaos/` instead. With
`--bootstrap` an existing cluster is used and the broker scenario is skipped.
`--contender faust_batched` runs that benchmark contender through a scenario of its own
instead, held to the same ledger, and reports which invariants hold there (in
`deploy/chaos/faust_batched/`); it fails only if the scenario could not run.
`--contender pipeline` runs the same scenario on the pipeline (`deploy/chaos/pipeline/`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shlex
import sys
import time
from pathlib import Path

from pipeline.settings import Settings
from tests.chaos.faults import REPO, LocalBroker, LocalCluster
from tests.chaos.report import report_data, scenario_text, write_report
from tests.chaos.scenarios import (
    BY_NAME,
    CLUSTER_SCENARIOS,
    CONTENDER_SCENARIOS,
    SCENARIOS,
    ScenarioResult,
    run_scenario,
)

log = logging.getLogger("tests.chaos")
BROKER_PORT = 9192
CLUSTER_PORT = 9292


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tests.chaos",
        description="Fault-injection suite: crashes, restarts, rebalances, broker restarts, "
        "poison pills and PII canaries, checked against the pipeline's guarantees.",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=sorted(BY_NAME),
        help="run only this scenario (repeatable; default: all)",
    )
    parser.add_argument(
        "--contender",
        choices=sorted(CONTENDER_SCENARIOS),
        default=None,
        help="run the contender's scenario instead, reporting which invariants hold there "
        "(`pipeline`: the same scenario on the pipeline; report in deploy/chaos/<contender>/)",
    )
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="run the replicated-cluster scenarios on three local brokers the suite starts "
        "(`--kafka-port` and the two ports after it, each two apart); report in "
        "deploy/chaos/cluster/",
    )
    parser.add_argument("--short", action="store_true", help="small sizes (a few minutes)")
    parser.add_argument("--events", type=int, default=None, help="override every scenario's size")
    parser.add_argument("--seed", type=int, default=7, help="traffic, pill and fault seed")
    parser.add_argument(
        "--kafka-port",
        type=int,
        default=None,
        help="port of the suite's own local broker (default 9192; with --cluster, 9292)",
    )
    parser.add_argument(
        "--bootstrap",
        default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or None,
        help="use this cluster instead (default: $KAFKA_BOOTSTRAP_SERVERS; broker scenario "
        "skipped)",
    )
    parser.add_argument("--partitions", type=int, default=6, help="partitions of every topic")
    parser.add_argument(
        "--workdir", type=Path, default=REPO / ".local" / "chaos", help="logs and worker state"
    )
    parser.add_argument(
        "--report-dir",
        type=Path,
        default=None,
        help="where report.md and report.json go (default: deploy/chaos, or "
        ".local/chaos/report with --short)",
    )
    parser.add_argument("--no-report", action="store_true", help="print only")
    parser.add_argument("--keep", action="store_true", help="keep topics and worker state")
    return parser


async def _run(args: argparse.Namespace) -> int:
    broker: LocalBroker | None = None
    started_broker = False
    cluster: LocalCluster | None = None
    if args.cluster:
        cluster = LocalCluster(args.kafka_port or CLUSTER_PORT)
        log.info("starting the suite's three brokers from 127.0.0.1:%d", cluster.port)
        await cluster.up()
        bootstrap = cluster.bootstrap
    elif args.bootstrap:
        bootstrap = args.bootstrap
    else:
        broker = LocalBroker(args.kafka_port or BROKER_PORT)
        if broker.pid() is None:
            log.info("starting the suite's broker on 127.0.0.1:%d", broker.port)
            await broker.up()
            started_broker = True
        bootstrap = broker.bootstrap
    base = Settings(
        kafka_bootstrap_servers=bootstrap,
        topic_partitions=max(6, args.partitions),
        poll_timeout_ms=20,
    )
    if args.contender:
        selected = [CONTENDER_SCENARIOS[args.contender]]
    elif args.scenario:
        selected = [BY_NAME[name] for name in args.scenario]
    else:
        selected = list(CLUSTER_SCENARIOS if args.cluster else SCENARIOS)
    results: list[ScenarioResult] = []
    skipped: list[str] = []
    started = time.monotonic()
    try:
        for scenario in selected:
            if scenario.needs_broker and broker is None:
                skipped.append(scenario.name)
                _out(f"== {scenario.name}: SKIPPED (needs the suite's own broker, not --bootstrap)")
                continue
            if scenario.needs_cluster and cluster is None:
                skipped.append(scenario.name)
                _out(f"== {scenario.name}: SKIPPED (needs the suite's three brokers: --cluster)")
                continue
            log.info("scenario %s: %s", scenario.name, scenario.title)
            result = await run_scenario(
                scenario,
                base,
                args.workdir,
                short=args.short,
                seed=args.seed,
                broker=broker,
                cluster=cluster,
                keep=args.keep,
                events=args.events,
            )
            results.append(result)
            _out(scenario_text(result))
    finally:
        if started_broker and broker is not None:
            await broker.down()
        if cluster is not None:
            await cluster.down()
    passed = bool(results) and all(r.passed for r in results)
    _out(
        f"== {'PASSED' if passed else 'FAILED'}: {sum(r.passed for r in results)}/{len(results)} "
        f"scenarios in {time.monotonic() - started:.0f}s"
        + (f"; skipped {', '.join(skipped)}" if skipped else "")
    )
    if not args.no_report:
        directory = args.report_dir or (
            REPO / ".local" / "chaos" / "report" if args.short else REPO / "deploy" / "chaos"
        )
        if args.contender and not args.report_dir:
            directory = directory / args.contender
        if args.cluster and not args.report_dir:
            directory = directory / "cluster"
        meta = {
            "command": "python -m tests.chaos " + shlex.join(sys.argv[1:]),
            "variant": "short" if args.short else "full",
            "seed": args.seed,
            "contender": args.contender,
            "skipped": skipped,
            "total_duration_s": round(time.monotonic() - started, 1),
        }
        md, js = write_report(report_data(results, meta), directory)
        _out(f"report: {md} and {js}")
    if args.contender and CONTENDER_SCENARIOS[args.contender].contender is not None:
        # the report is the finding: which invariants hold for the contender
        return 0 if results and all(r.error is None for r in results) else 1
    return 0 if passed else 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("tests.chaos").setLevel(logging.INFO)
    # The suite's own clients lose the broker on purpose; their reconnection noise is not news.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    return asyncio.run(_run(args))


if __name__ == "__main__":
    sys.exit(main())
