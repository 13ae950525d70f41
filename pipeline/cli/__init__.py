"""The `consent-pipeline` command: one entry point with a subcommand per job."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from pipeline import catalogue
from pipeline.cli.forensics import add_commands as add_forensics
from pipeline.errors import ConfigError, PipelineError
from pipeline.settings import Settings

if TYPE_CHECKING:
    from pipeline.ingest.registry import IdKind
    from pipeline.sim.stream import ProduceReport
    from pipeline.sim.traffic import TrafficConfig


BROKEN_PIPE = 128 + 13
"""The exit code of a command whose output pipe was closed (128 + SIGPIPE)."""


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(_setting_problem(err["loc"], err["msg"]) for err in exc.errors())
        raise SystemExit(f"consent-pipeline: invalid settings: {problems}") from None


def _setting_problem(loc: tuple[int | str, ...], message: str) -> str:
    """One validation error as the environment variable it concerns and what is wrong."""
    message = message.removeprefix("Value error, ")
    if not loc:  # a rule across settings: its message names them
        return message
    head = str(loc[0])
    name = "PIPELINE_" + head.upper()
    if head.isupper():  # an alias (KAFKA_BOOTSTRAP_SERVERS): the variable that was set
        name = head if head in os.environ or name not in os.environ else name
    rest = "".join(f"[{part}]" for part in loc[1:])
    return f"{name}{rest}: {message}"


def _worker(_: argparse.Namespace) -> int:
    from pipeline.runtime.app import run_worker

    run_worker(_settings())
    return 0


def _topics_create(_: argparse.Namespace) -> int:
    from pipeline.kafka.admin import create_topics

    settings = _settings()
    created = asyncio.run(create_topics(settings))
    for name in created:
        print(f"created {name}")
    print(f"{len(created)} topics created on {settings.kafka_bootstrap_servers}")
    return 0


def _topics_check(_: argparse.Namespace) -> int:
    from pipeline.kafka.admin import check_cluster, check_copartitioned

    settings = _settings()
    partitions = asyncio.run(check_copartitioned(settings))
    print(f"input topics are co-partitioned ({partitions} partitions)")
    problems = asyncio.run(check_cluster(settings))
    for problem in problems:
        print(f"problem: {problem}")
    if not problems:
        print("the brokers' replication and transaction settings allow exactly-once")
    return 1 if problems else 0


def _demo(args: argparse.Namespace) -> int:
    from pipeline.sim.demo import LOG_DIR, DemoConsole, DemoOptions, run_demo

    LOG_DIR.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(  # library warnings go to the log, not over the live view
        filename=LOG_DIR / "demo.log",
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    options = DemoOptions(
        rate=args.rate,
        users=args.users,
        duration=args.duration,
        seed=args.seed,
        http_share=args.http_share,
    )
    return asyncio.run(run_demo(_settings(), options, DemoConsole()))


def _traffic_config(args: argparse.Namespace) -> TrafficConfig:
    from pipeline.sim.traffic import TrafficConfig

    config = TrafficConfig(users=args.users)
    overrides: list[tuple[str, float]] = [
        (name, value)
        for name, value in (
            ("malformed_share", args.malformed),
            ("duplicate_share", args.duplicates),
            ("churn_per_event", args.churn),
            ("anonymous_share", args.anonymous),
        )
        if value is not None
    ]
    for item in args.mix:
        name, _, value = item.partition("=")
        try:
            overrides.append((name.strip(), float(value)))
        except ValueError:
            raise SystemExit(f"consent-pipeline: --mix expects NAME=NUMBER, got {item!r}") from None
    try:
        for name, number in overrides:
            config = config.override(name, number)
    except ValueError as exc:
        raise SystemExit(f"consent-pipeline: {exc}") from None
    return config


def _produce(args: argparse.Namespace) -> int:
    import gc
    import secrets
    import signal

    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    from pipeline.sim.live import generated_table
    from pipeline.sim.stream import produce
    from pipeline.sim.traffic import TrafficGenerator

    settings = _settings()
    config = _traffic_config(args)
    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    console = Console(stderr=True)
    with console.status(f"building {config.users:,} synthetic users (seed {seed})"):
        generator = TrafficGenerator(config, seed=seed, trust_key=_trust_key(settings))
    gc.freeze()  # the population lives as long as the run: keep the GC from rescanning it
    limit = (
        f"{args.count:,} records"
        if args.count
        else f"{args.duration:g}s"
        if args.duration
        else "until Ctrl-C"
    )
    rate = f"{args.rate:g}/s" if args.rate else "as fast as possible"
    console.print(
        f"producing to {settings.kafka_bootstrap_servers} ({rate}, {limit}); "
        f"{config.users:,} users, seed {seed}"
    )

    async def run() -> ProduceReport:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        progress = Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[rate]}"),
            console=console,
            disable=args.no_progress,
        )
        started = loop.time()
        with progress:
            task = progress.add_task("raw records", total=args.count or None, rate="")

            def advance(n: int) -> None:
                done = progress.tasks[0].completed + n
                elapsed = max(loop.time() - started, 1e-9)
                progress.update(task, advance=n, rate=f"{done / elapsed:,.0f}/s")

            return await produce(
                settings,
                generator,
                rate=args.rate,
                count=args.count,
                duration=args.duration,
                stop=stop,
                bootstrap=not args.no_bootstrap,
                on_progress=advance,
            )

    report = asyncio.run(run())
    Console().print(generated_table(report))
    if report.failures:
        print(
            f"consent-pipeline: {sum(report.failures.values())} records were not acknowledged",
            file=sys.stderr,
        )
        return 1
    return 0


def _collect(args: argparse.Namespace) -> int:
    import signal

    from pipeline.ingest.collector import serve

    overrides = {
        name: value
        for name, value in (("collector_host", args.host), ("collector_port", args.port))
        if value is not None
    }
    settings = _settings().model_copy(update=overrides)
    from pipeline.host import port_problem

    taken = port_problem(
        "PIPELINE_COLLECTOR_PORT", settings.collector_host, settings.collector_port
    )
    if taken is not None:
        raise ConfigError(taken)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    # aiokafka's debug log prints produce requests, record values included: the
    # collector's records hold addresses and hashed contact points.
    logging.getLogger("aiokafka").setLevel(max(logging.INFO, logging.root.level))

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(settings, stop)

    try:
        asyncio.run(run())
    except OSError as exc:
        host, port = settings.collector_host, settings.collector_port
        print(f"consent-pipeline: cannot listen on {host}:{port}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0


def _decide(args: argparse.Namespace) -> int:
    from pipeline.offline.replay import run_decide
    from pipeline.offline.snapshot import Snapshot, load_files, load_topics

    settings = _settings()
    try:
        policy = settings.policy()
    except ConfigError as exc:
        raise SystemExit(f"consent-pipeline: invalid settings: {exc}") from None
    snapshot: Snapshot | None = None
    if args.from_kafka:
        snapshot = asyncio.run(load_topics(settings))
    elif args.links is not None or args.consent is not None:
        snapshot = load_files(args.links, args.consent)
    if args.file == "-":
        return run_decide(
            sys.stdin.buffer, sys.stdout.buffer, sys.stderr, policy, snapshot=snapshot
        )
    try:
        source = open(args.file, "rb")  # noqa: SIM115 - closed below, after the run
    except OSError as exc:
        print(f"consent-pipeline: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 1
    with source:
        return run_decide(source, sys.stdout.buffer, sys.stderr, policy, snapshot=snapshot)


def _contracts(args: argparse.Namespace) -> int:
    from pipeline.contracts import drift, write

    root = Path(args.root)
    if args.check:
        differing = drift(root)
        for path in differing:
            print(f"out of date: {path}", file=sys.stderr)
        if differing:
            print(
                "consent-pipeline: run `consent-pipeline contracts` to regenerate", file=sys.stderr
            )
            return 1
        print("contracts match the models")
        return 0
    for path in write(root):
        print(f"wrote {path}")
    return 0


def _trust_key(settings: Settings) -> bytes | None:
    key = settings.trust_key
    return None if key is None else key.get_secret_value().encode()


def _registry_path(args: argparse.Namespace) -> Path:
    path: Path | None = args.file or _settings().advertisers_file
    if path is None:
        raise SystemExit(
            "consent-pipeline: set PIPELINE_ADVERTISERS_FILE or pass --file (the registry YAML)"
        )
    return path


def _advertisers_add(args: argparse.Namespace) -> int:
    import time

    from pipeline.ingest.registry import Registry, load_registry, new_token, save_registry

    path = _registry_path(args)
    registry = load_registry(path) if path.exists() else Registry()
    token = new_token()
    ids: dict[IdKind, list[str]] = {
        "ad_account": args.ad_account,
        "pixel": args.pixel,
        "tag": args.tag,
        "audience": args.audience,
    }
    updated, token_id = registry.with_new_token(
        args.advertiser_id,
        token,
        ids=ids,
        trusted=args.trusted,
        now=int(time.time()),
    )
    save_registry(path, updated)
    print(token)
    kind = "trusted token" if args.trusted else "token"
    print(
        f"added a {kind} ({token_id}) for {args.advertiser_id} to {path}; the token is shown "
        "once, above: keep it secret",
        file=sys.stderr,
    )
    return 0


def _advertisers_list(args: argparse.Namespace) -> int:
    from pipeline.ingest.registry import describe, load_registry

    path = _registry_path(args)
    registry = load_registry(path)
    for line in describe(registry):
        print(line)
    if not registry.advertisers:
        print(f"no advertisers in {path}", file=sys.stderr)
    return 0


def _advertisers_revoke(args: argparse.Namespace) -> int:
    from pipeline.ingest.registry import load_registry, save_registry

    path = _registry_path(args)
    registry = load_registry(path)
    save_registry(path, registry.without_tokens(args.advertiser_id, args.token_id))
    which = f"token {args.token_id}" if args.token_id else "every token"
    print(f"revoked {which} of {args.advertiser_id} in {path}", file=sys.stderr)
    return 0


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be a positive number")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


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
    decide.add_argument(
        "--links",
        type=Path,
        help=f"{catalogue.IDENTITY_LINKS.name} records (JSON Lines) to resolve match keys",
    )
    decide.add_argument(
        "--consent",
        type=Path,
        help=f"{catalogue.CONSENT_CHANGES.name} records (JSON Lines) for lines without any",
    )
    decide.add_argument(
        "--from-kafka",
        action="store_true",
        help=f"read {catalogue.IDENTITY_LINKS.name} and {catalogue.CONSENT_CHANGES.name} from the "
        "cluster instead of files",
    )
    decide.set_defaults(func=_decide)

    demo = commands.add_parser(
        "demo", help="worker + collector + synthetic traffic + live view (make run)"
    )
    demo.add_argument("--rate", type=_positive, default=100.0, help="events per second")
    demo.add_argument("--users", type=_count, default=2000, help="synthetic users")
    demo.add_argument("--duration", type=_positive, default=None, help="seconds, then stop")
    demo.add_argument("--seed", type=int, default=None, help="traffic seed (default: random)")
    demo.add_argument(
        "--http-share",
        type=_share,
        default=0.2,
        help="share of events sent through the collector over HTTP (default 0.2)",
    )
    demo.set_defaults(func=_demo)

    produce = commands.add_parser(
        "produce", help="write realistic synthetic traffic (events and consent churn) to Kafka"
    )
    produce.add_argument("--users", type=_count, default=10_000, help="synthetic users")
    produce.add_argument(
        "--rate", type=_positive, default=None, help="raw records per second (default: max)"
    )
    limit = produce.add_mutually_exclusive_group()
    limit.add_argument("--count", type=_count, default=None, help="raw records, then stop")
    limit.add_argument("--duration", type=_positive, default=None, help="seconds, then stop")
    produce.add_argument(
        "--seed", type=int, default=None, help="same seed, same traffic (default: random)"
    )
    produce.add_argument("--malformed", type=_share, help="share of malformed records")
    produce.add_argument("--duplicates", type=_share, help="share of tag/server duplicates")
    produce.add_argument("--churn", type=_share, help="consent changes per raw record")
    produce.add_argument("--anonymous", type=_share, help="share of events without user_id")
    produce.add_argument(
        "--mix",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="any traffic setting, e.g. dnt_share=0.3 or platforms.ios=0.4 (repeatable)",
    )
    produce.add_argument(
        "--no-bootstrap", action="store_true", help="do not write every user's consent first"
    )
    produce.add_argument("--no-progress", action="store_true", help="no progress bar")
    produce.set_defaults(func=_produce)

    collect = commands.add_parser(
        "collect", help="run the HTTP collector (Conversions-API batches, pixel, widgets)"
    )
    collect.add_argument("--host", default=None, help="default: PIPELINE_COLLECTOR_HOST")
    collect.add_argument("--port", type=int, default=None, help="default: PIPELINE_COLLECTOR_PORT")
    collect.set_defaults(func=_collect)

    contracts = commands.add_parser(
        "contracts",
        help="write the JSON Schemas and the AsyncAPI document of every topic (schemas/)",
    )
    contracts.add_argument("--root", default=".", help="repository root (default: .)")
    contracts.add_argument(
        "--check", action="store_true", help="only check that the committed files are current"
    )
    contracts.set_defaults(func=_contracts)

    advertisers = commands.add_parser(
        "advertisers", help="manage the advertiser registry (ids and token digests)"
    )
    advertiser_commands = advertisers.add_subparsers(
        dest="advertisers_command", required=True, metavar="ACTION"
    )
    registry_file = argparse.ArgumentParser(add_help=False)
    registry_file.add_argument(
        "--file", type=Path, default=None, help="the registry (default: PIPELINE_ADVERTISERS_FILE)"
    )
    add = advertiser_commands.add_parser(
        "add",
        parents=[registry_file],
        help="add or extend an advertiser and print one new token (once) on stdout",
    )
    add.add_argument("advertiser_id", help="the advertiser's id in the pipeline's records")
    for flag, help_text in (
        ("--ad-account", "a Pinterest ad account id (repeatable)"),
        ("--pixel", "a Meta pixel id (repeatable)"),
        ("--tag", "a Pinterest tag id (repeatable)"),
        ("--audience", "a customer-list / custom audience id (repeatable)"),
    ):
        add.add_argument(flag, action="append", default=[], metavar="ID", help=help_text)
    add.add_argument(
        "--trusted",
        action="store_true",
        help="the token may name a user_id on native events (internal producers only)",
    )
    add.set_defaults(func=_advertisers_add)
    advertiser_commands.add_parser(
        "list", parents=[registry_file], help="each advertiser's ids and token ids (no tokens)"
    ).set_defaults(func=_advertisers_list)
    revoke = advertiser_commands.add_parser(
        "revoke", parents=[registry_file], help="revoke an advertiser's tokens (or one token)"
    )
    revoke.add_argument("advertiser_id")
    revoke.add_argument("--token-id", default=None, help="only this token (see `list`)")
    revoke.set_defaults(func=_advertisers_revoke)

    add_forensics(commands, _settings)

    topics = commands.add_parser("topics", help="manage the pipeline's topics")
    topic_commands = topics.add_subparsers(dest="topics_command", required=True, metavar="ACTION")
    topic_commands.add_parser(
        "create", help="create every missing topic (partitions, retention, compaction)"
    ).set_defaults(func=_topics_create)
    topic_commands.add_parser(
        "check",
        help="check that the input topics exist and are co-partitioned, and that the brokers' "
        "replication and transaction settings allow exactly-once",
    ).set_defaults(func=_topics_check)
    return parser


_SERVICES = frozenset({"worker", "collect", "demo"})
"""Commands that run until stopped and log what their clients meet."""


def _said_by_the_command(record: logging.LogRecord) -> bool:
    """Drop aiokafka's own "Unable connect" line: a one-shot command that cannot reach the
    cluster says so itself, in one line naming the setting."""
    return not str(record.msg).startswith("Unable connect to")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.command not in _SERVICES:
        logging.getLogger("aiokafka").addFilter(_said_by_the_command)
    try:
        code: int = args.func(args)
    except PipelineError as exc:
        print(f"consent-pipeline: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`| head`): the command has stopped what it started; leave
        # quietly, with the shell's code for a closed pipe, and nothing more to flush.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return BROKEN_PIPE
    return code
