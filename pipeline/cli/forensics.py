"""The `explain` and `dlq` subcommands: arguments, settings, what they print, progress on
stderr. What they find and how they search is `pipeline.forensics`."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from pipeline import catalogue
from pipeline.core.deidentify import Pseudonymizer
from pipeline.errors import ConfigError
from pipeline.forensics import dlq
from pipeline.forensics.explain import Query, as_json, explain, render
from pipeline.forensics.scan import Progress
from pipeline.settings import Settings

DEV_HMAC_KEY: Final = Path(".local/dev-hmac-key")
"""The development key `make run` writes; used when PIPELINE_HMAC_KEY is not set."""
DEFAULT_SINCE: Final = "24h"
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_S: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def when(text: str) -> int:
    """A time as unix ms: `90m`/`2h`/`7d` ago, an ISO-8601 time, or unix ms."""
    match = _DURATION.match(text)
    if match:
        return int((time.time() - float(match[1]) * _UNIT_S[match[2]]) * 1000)
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration (30m, 2h, 7d), an ISO-8601 time or unix ms"
        ) from None
    return int(moment.timestamp() * 1000)


def add_commands(commands: Any, load_settings: Callable[[], Settings]) -> None:
    """Register `explain` and `dlq` on the CLI's subparsers; `load_settings` reads the
    settings (exiting with a message naming the setting when one is wrong)."""
    explain_cmd = commands.add_parser(
        "explain",
        help="why one event was decided as it was: outcomes, rules, identity, consent, outputs",
        description="Find an event's audit record (and any dead letter) and explain it. "
        "Give --advertiser and --event-id, or a raw record's --topic/--partition/--offset, "
        "or an audit record's --audit PARTITION:OFFSET.",
    )
    explain_cmd.add_argument("--advertiser", help="the event's advertiser_id")
    explain_cmd.add_argument("--event-id", help="the event's event_id")
    explain_cmd.add_argument("--topic", help="a raw topic, with --partition and --offset")
    explain_cmd.add_argument("--partition", type=int)
    explain_cmd.add_argument("--offset", type=int)
    explain_cmd.add_argument("--audit", metavar="PARTITION:OFFSET", help="an audit record")
    explain_cmd.add_argument(
        "--since", type=when, default=None, help=f"search from (default {DEFAULT_SINCE} ago)"
    )
    explain_cmd.add_argument("--budget", type=float, default=30.0, help="seconds per topic")
    explain_cmd.add_argument("--json", action="store_true", help="one JSON document")
    explain_cmd.set_defaults(func=_explain, load_settings=load_settings)

    dlq_cmd = commands.add_parser("dlq", help="list, show and replay dead letters")
    dlq_commands = dlq_cmd.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    chooser = argparse.ArgumentParser(add_help=False)
    chooser.add_argument(
        "--since", type=when, default=None, help=f"from (default {DEFAULT_SINCE} ago)"
    )
    chooser.add_argument("--until", type=when, default=None, help="up to (default: now)")
    chooser.add_argument("--reason", action="append", default=[], help="only this reason")
    chooser.add_argument(
        "--source",
        action="append",
        default=[],
        help="only records from this input topic, as named on the cluster",
    )
    chooser.add_argument("--budget", type=float, default=60.0, help="seconds to read at most")

    listing = dlq_commands.add_parser(
        "list", parents=[chooser], help="counts by source and reason (no payloads)"
    )
    listing.add_argument(
        "--records", type=int, default=0, help="also list this many records' coordinates"
    )
    listing.set_defaults(func=_dlq_list, load_settings=load_settings)

    show = dlq_commands.add_parser("show", help="one dead letter's reason, detail and origin")
    show.add_argument("--partition", type=int, required=True)
    show.add_argument("--offset", type=int, required=True)
    show.add_argument(
        "--show-payload", action="store_true", help="print the payload: it holds personal data"
    )
    show.set_defaults(func=_dlq_show, load_settings=load_settings)

    replay = dlq_commands.add_parser(
        "replay",
        parents=[chooser],
        help="send chosen dead letters back to their raw topics (dry run unless --yes)",
    )
    replay.add_argument("--partition", type=int, help="only the record at this partition ...")
    replay.add_argument("--offset", type=int, help="... and offset")
    replay.add_argument("--yes", action="store_true", help="write, not a dry run")
    replay.set_defaults(func=_dlq_replay, load_settings=load_settings)


def _explain(args: argparse.Namespace) -> int:
    settings = args.load_settings()
    query = _query(args)
    answer = asyncio.run(
        explain(settings, query, pseudonymizer=_pseudonymizer(settings), report=_progress)
    )
    _clear_progress()
    if args.json:
        print(json.dumps(as_json(answer), indent=2, ensure_ascii=False))
    else:
        print(render(answer, query))
    return 0 if answer.found else 1


def _query(args: argparse.Namespace) -> Query:
    since = args.since
    if args.audit is not None:
        partition, _, offset = args.audit.partition(":")
        if not (partition.isdigit() and offset.isdigit()):
            raise SystemExit("consent-pipeline explain: --audit takes PARTITION:OFFSET")
        return Query(audit=(int(partition), int(offset)), budget_s=args.budget)
    if args.topic is not None:
        if args.partition is None or args.offset is None:
            raise SystemExit("consent-pipeline explain: --topic needs --partition and --offset")
        return Query(raw=(args.topic, args.partition, args.offset), budget_s=args.budget)
    if not args.advertiser or not args.event_id:
        raise SystemExit(
            "consent-pipeline explain: give --advertiser and --event-id, "
            "or --topic/--partition/--offset, or --audit PARTITION:OFFSET"
        )
    return Query(
        advertiser_id=args.advertiser,
        event_id=args.event_id,
        since_ms=since if since is not None else when(DEFAULT_SINCE),
        budget_s=args.budget,
    )


def _pseudonymizer(settings: Settings) -> Pseudonymizer | None:
    """The HMAC key that keyed the audit, to find the person's consent record by it."""
    if settings.hmac_key is not None:
        try:
            return Pseudonymizer(settings.require_hmac_key(), settings.hmac_key_id)
        except ConfigError:
            return None
    if DEV_HMAC_KEY.is_file():
        key = DEV_HMAC_KEY.read_text().strip()
        print(f"using the development HMAC key in {DEV_HMAC_KEY}", file=sys.stderr)
        return Pseudonymizer(key.encode(), settings.hmac_key_id)
    return None


def _selection(args: argparse.Namespace) -> dlq.Selection:
    return dlq.Selection(
        since_ms=args.since if args.since is not None else when(DEFAULT_SINCE),
        until_ms=args.until,
        reasons=frozenset(args.reason),
        sources=frozenset(args.source),
        budget_s=args.budget,
    )


def _dlq_list(args: argparse.Namespace) -> int:
    settings = args.load_settings()
    listing = asyncio.run(dlq.read(settings, _selection(args), report=_progress))
    _clear_progress()
    print(dlq.render_list(listing, settings.topic(catalogue.DLQ), records=args.records))
    return 0


def _dlq_show(args: argparse.Namespace) -> int:
    settings = args.load_settings()
    letter = asyncio.run(dlq.one(settings, args.partition, args.offset))
    if letter is None:
        print("consent-pipeline dlq: no committed dead letter there", file=sys.stderr)
        return 1
    if args.show_payload:
        print("warning: the payload below is personal data; do not paste it", file=sys.stderr)
    topic = settings.topic(catalogue.DLQ)
    print(dlq.render_show(letter, topic, show_payload=args.show_payload))
    return 0


def _dlq_replay(args: argparse.Namespace) -> int:
    settings = args.load_settings()
    topic = settings.topic(catalogue.DLQ)
    if (args.partition is None) != (args.offset is None):
        raise SystemExit("consent-pipeline dlq replay: give --partition and --offset together")
    if args.partition is not None:
        letter = asyncio.run(dlq.one(settings, args.partition, args.offset))
        letters = [] if letter is None else [letter]
    else:
        listing = asyncio.run(dlq.read(settings, _selection(args), report=_progress))
        _clear_progress()
        letters = listing.letters
    chosen = dlq.plan(letters, settings)
    print(dlq.render_plan(chosen, topic, dry_run=not args.yes))
    if args.yes and chosen.send:
        sent = asyncio.run(dlq.replay(settings, chosen))
        print(f"acknowledged by Kafka: {sent:,}")
    return 0


_shown = False


def _progress(topic: str, progress: Progress) -> None:
    global _shown
    if sys.stderr.isatty():
        print(f"\rsearching {topic}: {progress.read:,} records read", end="", file=sys.stderr)
    else:
        print(f"searching {topic}: {progress.read:,} records read", file=sys.stderr)
    _shown = True


def _clear_progress() -> None:
    global _shown
    if _shown and sys.stderr.isatty():
        print(file=sys.stderr)
    _shown = False
