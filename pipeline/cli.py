"""The `consent-pipeline` command: one entry point with a subcommand per job."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from pipeline.errors import ConfigError, PipelineError
from pipeline.settings import Settings


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        names = ", ".join(
            "PIPELINE_" + ".".join(str(p) for p in err["loc"]).upper() + f" ({err['msg']})"
            for err in exc.errors()
        )
        raise SystemExit(f"consent-pipeline: invalid settings: {names}") from None


def _worker(_: argparse.Namespace) -> int:
    from pipeline.app import run_worker

    run_worker(_settings())
    return 0


def _topics_create(_: argparse.Namespace) -> int:
    from pipeline.admin import create_topics

    settings = _settings()
    created = asyncio.run(create_topics(settings))
    for name in created:
        print(f"created {name}")
    print(f"{len(created)} topics created on {settings.kafka_bootstrap_servers}")
    return 0


def _topics_check(_: argparse.Namespace) -> int:
    from pipeline.admin import check_copartitioned

    partitions = asyncio.run(check_copartitioned(_settings()))
    print(f"input topics are co-partitioned ({partitions} partitions)")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from pipeline.demo import run_demo

    return asyncio.run(run_demo(_settings(), args.rate, args.users, args.duration, print))


def _decide(args: argparse.Namespace) -> int:
    from pipeline.decide import run_decide

    try:
        policy = _settings().policy()
    except ConfigError as exc:
        raise SystemExit(f"consent-pipeline: invalid settings: {exc}") from None
    if args.file == "-":
        return run_decide(sys.stdin.buffer, sys.stdout.buffer, sys.stderr, policy)
    try:
        source = open(args.file, "rb")  # noqa: SIM115 - closed below, after the run
    except OSError as exc:
        print(f"consent-pipeline: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 1
    with source:
        return run_decide(source, sys.stdout.buffer, sys.stderr, policy)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="consent-pipeline",
        description="Consent-enforcing streaming pipeline for ad signals.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    worker = commands.add_parser("worker", help="run a stream-processing worker")
    worker.set_defaults(func=_worker)

    decide = commands.add_parser(
        "decide", help="decide events offline: JSON Lines in, one decision per line out"
    )
    decide.add_argument("file", nargs="?", default="-", help="input file (default: stdin)")
    decide.set_defaults(func=_decide)

    demo = commands.add_parser("demo", help="worker + synthetic producer + live view (make run)")
    demo.add_argument("--rate", type=float, default=20.0, help="events per second")
    demo.add_argument("--users", type=int, default=1000, help="synthetic users")
    demo.add_argument("--duration", type=float, default=None, help="seconds, then stop")
    demo.set_defaults(func=_demo)

    topics = commands.add_parser("topics", help="manage the pipeline's topics")
    topic_commands = topics.add_subparsers(dest="topics_command", required=True, metavar="ACTION")
    topic_commands.add_parser(
        "create", help="create every missing topic (partitions, retention, compaction)"
    ).set_defaults(func=_topics_create)
    topic_commands.add_parser(
        "check", help="check that the input topics exist and are co-partitioned"
    ).set_defaults(func=_topics_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except PipelineError as exc:
        print(f"consent-pipeline: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
