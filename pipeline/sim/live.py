"""The demo's view: what went in, what came out, why, and how far behind the worker is.

`parse_metrics` reads a worker's Prometheus text; `render` draws one frame (rich) from a
`Frame`, `plain_line` says the same in one line for logs and CI, `final_report` closes
the run. Everything here is pure: the demo fetches, this module only formats.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from prometheus_client.parser import text_string_to_metric_families
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from pipeline import catalogue
from pipeline.core.reasons import PURPOSES, dlq_words, rule
from pipeline.sim.stream import ProduceReport

SOURCES: Final = ("tag", "sdk", "widget")
"""The raw sources of events."""
INPUT_SOURCES: Final = (*SOURCES, "audience")
"""Every raw source: events and customer-list members."""
MEMBERSHIPS: Final = (
    ("added", "allowed by the member's consent: emitted"),
    ("denied", "the member's consent excludes it: kept suppressed"),
    ("unmatched", "no match key named anyone"),
    ("removed", "the advertiser's remove of an active membership"),
    ("already_withdrawn", "removed after consent had withdrawn it"),
    ("not_a_member", "a remove of nothing"),
    ("duplicate", "a copy of an upload already applied"),
    ("superseded", "older than the membership's last change: ignored"),
)
MEMBERSHIP_CHANGES: Final = (
    ("consent.revoked", "withdrawn when consent changed"),
    ("consent.granted", "restored when consent was given again"),
)
STREAMS: Final = tuple(
    (topic.name, topic.destination or topic.name, topic.summary) for topic in catalogue.OUTPUTS
)
"""Each output topic: its name, its short label and what it carries."""
MATCHES: Final = (
    ("provided", "user id signed by a trusted producer"),
    ("session", "the platform's widget session"),
    ("click", "a click id of an ad clicked"),
    ("em", "a hashed email"),
    ("ph", "a hashed phone"),
    ("maid", "an advertising id"),
    ("none", "nobody: anonymous"),
)
ALLOWING: Final = frozenset({"allow", "identified"})


@dataclass(frozen=True)
class WorkerMetrics:
    """The counters of one worker that the view shows."""

    events_in: Mapping[str, float] = field(default_factory=dict)
    events_out: Mapping[str, float] = field(default_factory=dict)
    decisions: Mapping[tuple[str, str], float] = field(default_factory=dict)
    reasons: Mapping[str, float] = field(default_factory=dict)
    dlq: Mapping[tuple[str, str], float] = field(default_factory=dict)
    duplicates: float = 0.0
    consent_changes: float = 0.0
    consent_users: float = 0.0
    lag: Mapping[str, float] = field(default_factory=dict)
    resolutions: Mapping[str, float] = field(default_factory=dict)
    """Events by identity match: provided, session, click, em, ph, maid, none."""
    identity_conflicts: float = 0.0
    identity_links: float = 0.0
    memberships: Mapping[str, float] = field(default_factory=dict)
    """Customer-list records by membership outcome."""
    membership_changes: Mapping[str, float] = field(default_factory=dict)
    """Memberships withdrawn or restored by consent, by reason."""

    @property
    def total_in(self) -> float:
        """Raw records consumed."""
        return sum(self.events_in.values())

    @property
    def total_lag(self) -> float:
        """Records behind, over every input partition."""
        return sum(self.lag.values())


def parse_metrics(text: str, topic_prefix: str = "") -> WorkerMetrics:
    """The view's counters from a worker's `/metrics` text; lag per topic, prefix removed."""
    events_in: defaultdict[str, float] = defaultdict(float)
    events_out: defaultdict[str, float] = defaultdict(float)
    decisions: defaultdict[tuple[str, str], float] = defaultdict(float)
    reasons: defaultdict[str, float] = defaultdict(float)
    dlq: defaultdict[tuple[str, str], float] = defaultdict(float)
    lag: defaultdict[str, float] = defaultdict(float)
    resolutions: defaultdict[str, float] = defaultdict(float)
    memberships: defaultdict[str, float] = defaultdict(float)
    membership_changes: defaultdict[str, float] = defaultdict(float)
    duplicates = consent_changes = consent_users = conflicts = links = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name, labels, value = sample.name, sample.labels, sample.value
            if name == "pipeline_events_in_total":
                events_in[labels.get("source", "")] += value
            elif name == "pipeline_events_out_total":
                events_out[labels.get("topic", "")] += value
            elif name == "pipeline_decisions_total":
                decisions[labels.get("purpose", ""), labels.get("outcome", "")] += value
            elif name == "pipeline_decision_reasons_total":
                reasons[labels.get("reason", "")] += value
            elif name == "pipeline_dlq_total":
                dlq[labels.get("source", ""), labels.get("reason", "")] += value
            elif name == "pipeline_duplicates_total":
                duplicates += value
            elif name == "pipeline_consent_changes_total":
                consent_changes += value
            elif name == "pipeline_consent_table_entries":
                consent_users += value
            elif name == "pipeline_consumer_lag_messages":
                topic = labels.get("topic", "")
                lag[topic.removeprefix(topic_prefix)] += value
            elif name == "pipeline_identity_resolutions_total":
                resolutions[labels.get("match", "")] += value
            elif name == "pipeline_identity_conflicts_total":
                conflicts += value
            elif name == "pipeline_identity_links_total":
                links += value
            elif name == "pipeline_memberships_total":
                memberships[labels.get("outcome", "")] += value
            elif name == "pipeline_membership_changes_total":
                membership_changes[labels.get("reason", "")] += value
    return WorkerMetrics(
        events_in=dict(events_in),
        events_out=dict(events_out),
        decisions=dict(decisions),
        reasons=dict(reasons),
        dlq=dict(dlq),
        duplicates=duplicates,
        consent_changes=consent_changes,
        consent_users=consent_users,
        lag=dict(lag),
        resolutions=dict(resolutions),
        identity_conflicts=conflicts,
        identity_links=links,
        memberships=dict(memberships),
        membership_changes=dict(membership_changes),
    )


def parse_saves(text: str) -> float:
    """Privacy settings saved through the consent API, from the collector's `/metrics` text."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "pipeline_collector_privacy_saves_total"
    )


@dataclass
class Feed:
    """What the demo wrote, by source and by path (straight to Kafka or through the collector)."""

    produced: Counter[str] = field(default_factory=Counter)
    """Raw records by source, and consent records under `consent`."""
    via_collector: Counter[str] = field(default_factory=Counter)
    """Events sent over HTTP, by endpoint."""
    collector_rejected: int = 0
    collector_unavailable: int = 0
    """Events the collector could not take (503 or unreachable), written straight instead."""
    privacy_saves: int = 0
    """Privacy settings saved on the settings pages (the collector's count)."""


@dataclass(frozen=True)
class Frame:
    """Everything one frame of the view shows."""

    elapsed_s: float
    feed: Feed
    worker: WorkerMetrics | None
    previous: WorkerMetrics | None = None
    interval_s: float = 1.0
    status: str = ""
    """What the demo is doing: starting, running, draining."""


def _rate(frame: Frame, current: float, before: float | None) -> str:
    if before is None or frame.interval_s <= 0:
        return ""
    return f"{max(0.0, current - before) / frame.interval_s:,.0f}/s"


def _n(value: float) -> str:
    return f"{value:,.0f}"


def _inputs(frame: Frame) -> Table:
    table = Table(title="inputs", title_justify="left", expand=False)
    table.add_column("source")
    table.add_column("produced", justify="right")
    table.add_column("via HTTP", justify="right")
    table.add_column("consumed", justify="right")
    table.add_column("rate", justify="right")
    worker, previous = frame.worker, frame.previous
    via = frame.feed.via_collector
    via_source = {
        "tag": via["/v1/events tag"] + via["/v1/tag"],
        "sdk": via["/v1/events sdk"],
        "widget": via["/v1/widget"],
        "audience": via["customer_lists"] + via["users"],
    }
    for source in INPUT_SOURCES:
        consumed = worker.events_in.get(source, 0.0) if worker else 0.0
        before = previous.events_in.get(source, 0.0) if previous else None
        table.add_row(
            source,
            _n(frame.feed.produced[source]),
            _n(via_source[source]),
            _n(consumed),
            _rate(frame, consumed, before),
        )
    consent = worker.consent_changes if worker else 0.0
    table.add_row(
        "consent",
        _n(frame.feed.produced["consent"]),
        "",
        _n(consent),
        _rate(frame, consent, previous.consent_changes if previous else None),
    )
    links = worker.identity_links if worker else 0.0
    table.add_row(
        "identity links",
        _n(frame.feed.produced["identity"]),
        "",
        _n(links),
        _rate(frame, links, previous.identity_links if previous else None),
    )
    return table


def _identities(frame: Frame) -> Table:
    table = Table(title="identity: how events found their subject", title_justify="left")
    table.add_column("match")
    table.add_column("events", justify="right")
    table.add_column("share", justify="right")
    table.add_column("what", style="dim")
    resolutions = frame.worker.resolutions if frame.worker else {}
    total = sum(resolutions.values())
    for match, what in MATCHES:
        value = resolutions.get(match, 0.0)
        share = f"{value / total:.0%}" if total else ""
        table.add_row(match, _n(value), share, what)
    conflicts = frame.worker.identity_conflicts if frame.worker else 0.0
    table.add_row("conflicts", _n(conflicts), "", "two keys linked to different users")
    return table


def _memberships(frame: Frame) -> Table:
    table = Table(title="customer lists: what each member upload did", title_justify="left")
    table.add_column("membership")
    table.add_column("records", justify="right")
    table.add_column("what", style="dim")
    worker = frame.worker
    outcomes = worker.memberships if worker else {}
    for outcome, what in MEMBERSHIPS:
        table.add_row(outcome, _n(outcomes.get(outcome, 0.0)), what)
    changes = worker.membership_changes if worker else {}
    for reason, what in MEMBERSHIP_CHANGES:
        table.add_row(reason, _n(changes.get(reason, 0.0)), what, style="bold")
    return table


def _outputs(frame: Frame) -> Table:
    table = Table(title="outputs per stream", title_justify="left")
    table.add_column("stream")
    table.add_column("records", justify="right")
    table.add_column("rate", justify="right")
    table.add_column("what", style="dim")
    worker, previous = frame.worker, frame.previous
    for topic, label, what in STREAMS:
        value = worker.events_out.get(topic, 0.0) if worker else 0.0
        before = previous.events_out.get(topic, 0.0) if previous else None
        table.add_row(label, _n(value), _rate(frame, value, before), what)
    return table


def _purposes(frame: Frame) -> Table:
    table = Table(title="decisions by purpose", title_justify="left")
    table.add_column("purpose")
    table.add_column("allow / identified", justify="right", style="green")
    table.add_column("deny / deidentified", justify="right", style="red")
    decisions = frame.worker.decisions if frame.worker else {}
    for purpose in PURPOSES:
        allowed = sum(v for (p, o), v in decisions.items() if p == purpose and o in ALLOWING)
        denied = sum(v for (p, o), v in decisions.items() if p == purpose and o not in ALLOWING)
        table.add_row(purpose, _n(allowed), _n(denied))
    return table


def _reasons(frame: Frame, limit: int) -> Table:
    table = Table(title="decisions by reason (rules that applied)", title_justify="left")
    table.add_column("reason")
    table.add_column("events", justify="right")
    table.add_column("denies")
    reasons = frame.worker.reasons if frame.worker else {}
    for reason, value in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]:
        known = rule(reason)
        denies = "?" if known is None else ", ".join(p for p in PURPOSES if p in known.denies)
        table.add_row(reason, _n(value), denies or "nothing (exception)")
    if not reasons:
        table.add_row("(none yet)", "", "")
    return table


def _dlq(frame: Frame) -> Table:
    table = Table(title="DLQ by reason", title_justify="left")
    table.add_column("source")
    table.add_column("reason")
    table.add_column("records", justify="right")
    table.add_column("meaning")
    dlq = frame.worker.dlq if frame.worker else {}
    for (source, reason), value in sorted(dlq.items(), key=lambda kv: (-kv[1], kv[0])):
        table.add_row(source, reason, _n(value), dlq_words(reason))
    if not dlq:
        table.add_row("(none yet)", "", "", "")
    return table


def _lag(frame: Frame) -> Table:
    table = Table(title="consumer lag", title_justify="left")
    table.add_column("topic")
    table.add_column("records behind", justify="right")
    lag = frame.worker.lag if frame.worker else {}
    for topic, value in sorted(lag.items()):
        table.add_row(topic, _n(value))
    if not lag:
        table.add_row("(no partitions yet)", "")
    return table


def _header(frame: Frame) -> Text:
    feed = frame.feed
    worker = frame.worker
    first = [
        f"{frame.elapsed_s:4.0f}s",
        frame.status,
        f"produced {_n(sum(feed.produced[s] for s in SOURCES))} events",
        f"{_n(sum(feed.via_collector.values()))} of them through the collector",
        f"privacy settings saved {_n(feed.privacy_saves)}",
    ]
    second = []
    if worker is not None:
        second.append(f"duplicates audited {_n(worker.duplicates)}")
        second.append(f"consent table entries {_n(worker.consent_users)}")
    else:
        second.append("waiting for the worker's metrics")
    if feed.collector_unavailable:
        second.append(
            f"{_n(feed.collector_unavailable)} sent straight to Kafka (collector not ready)"
        )
    if feed.collector_rejected:
        second.append(f"collector rejected {_n(feed.collector_rejected)}")
    text = Text("  |  ".join(p for p in first if p), style="bold")
    text.append("\n" + "  |  ".join(second), style="dim")
    return text


WIDE: Final = 150
"""Columns from which the view puts its tables side by side."""


def render(frame: Frame, *, width: int = WIDE, reasons: int = 12) -> RenderableType:
    """One frame of the live view; two columns of tables when `width` allows."""
    left = Group(_inputs(frame), _outputs(frame), _purposes(frame))
    right = Group(
        _identities(frame), _memberships(frame), _reasons(frame, reasons), _dlq(frame), _lag(frame)
    )
    if width < WIDE:
        return Group(_header(frame), left, right)
    grid = Table.grid(padding=(0, 2))
    grid.add_row(left, right)
    return Group(_header(frame), grid)


def plain_line(frame: Frame) -> str:
    """The frame in one line, for output that is not a terminal."""
    feed, worker = frame.feed, frame.worker
    produced = " ".join(f"{s}={feed.produced[s]}" for s in INPUT_SOURCES)
    line = f"[{frame.elapsed_s:5.0f}s] {frame.status}: produced {produced}"
    line += f" consent={feed.produced['consent']} http={sum(feed.via_collector.values())}"
    line += f" saves={feed.privacy_saves}"
    if worker is None:
        return line + " | worker: no metrics yet"
    consumed = " ".join(f"{s}={worker.events_in.get(s, 0):.0f}" for s in INPUT_SOURCES)
    outputs = " ".join(
        f"{label}={worker.events_out.get(topic, 0):.0f}" for topic, label, _ in STREAMS
    )
    top = sorted(worker.reasons.items(), key=lambda kv: -kv[1])[:3]
    reasons = ",".join(f"{r}={v:.0f}" for r, v in top) or "-"
    matches = " ".join(f"{m}={worker.resolutions.get(m, 0):.0f}" for m, _ in MATCHES)
    lists = " ".join(
        f"{name}={source.get(name, 0):.0f}"
        for source, name in (
            (worker.memberships, "added"),
            (worker.memberships, "denied"),
            (worker.membership_changes, "consent.revoked"),
            (worker.membership_changes, "consent.granted"),
        )
    )
    return (
        f"{line} | consumed {consumed} | out {outputs} | identity {matches} | lists {lists}"
        f" | top reasons {reasons}"
        f" | dlq={sum(worker.dlq.values()):.0f} dup={worker.duplicates:.0f}"
        f" lag={worker.total_lag:.0f}"
    )


def final_report(
    frame: Frame, report: ProduceReport | None, *, width: int = WIDE
) -> RenderableType:
    """The closing summary: the last frame, the ledger check, and what was generated."""
    parts: list[RenderableType] = [
        Text("final report", style="bold underline"),
        render(frame, width=width, reasons=40),
    ]
    worker = frame.worker
    if worker is not None:
        audited = worker.events_out.get(catalogue.AUDIT.name, 0.0)
        dead = sum(v for (source, _), v in worker.dlq.items() if source != "consent")
        balanced = audited + dead == worker.total_in
        parts.append(
            Text(
                f"ledger: {_n(worker.total_in)} raw records consumed -> {_n(audited)} audit "
                f"+ {_n(dead)} DLQ records"
                + (" (every input accounted for)" if balanced else " (worker still catching up)"),
                style="green" if balanced else "yellow",
            )
        )
    if report is not None:
        parts.append(generated_table(report))
    return Group(*parts)


def generated_table(report: ProduceReport) -> RenderableType:
    """What the generator wrote, by kind, with the seed that reproduces it."""
    title = Text(
        f"generated: {_n(report.raw_records)} raw records in {report.elapsed_s:.1f}s "
        f"({report.rate:,.0f}/s), seed {report.seed}",
        style="bold",
    )
    table = Table()
    table.add_column("kind")
    table.add_column("records", justify="right")
    for kind, value in sorted(report.counts.items()):
        table.add_row(kind, _n(value))
    for topic, value in sorted(report.topics.items()):
        table.add_row(f"topic {topic}", _n(value), style="dim")
    for error, value in sorted(report.failures.items()):
        table.add_row(f"delivery failed: {error}", _n(value), style="red")
    return Group(title, table)
