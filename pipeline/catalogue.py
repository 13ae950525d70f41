"""The topic catalogue: every topic the product reads or writes, declared once.

Each entry names a topic (before the configured prefix), its role, what its key is, how
it is partitioned, the pydantic model of its values, its retention and whether it is
compacted. Everything that touches a topic reads it from here: the admin (creation,
co-partitioning), the stages, the collector, the producer library, the synthetic
traffic, the live view, the fault suite and the published contracts (`schemas/json/`,
`schemas/asyncapi.yaml`, generated from this module and the models).

Names of changelog topics depend on the application id (`<app_id>.<table>-changelog`,
like Faust's and Kafka Streams'); `changelog(table)` builds their entries.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal, TypeAlias

from pydantic import BaseModel

from pipeline.core.route import Destination
from schemas.audience import AudienceMember
from schemas.consent import ConsentChange
from schemas.events import RecordSource, SdkEvent, Source, TagEvent, WidgetEvent
from schemas.identity import IdentityLink
from schemas.internal import Hop
from schemas.outputs import (
    ActivityRecord,
    AggregateRecord,
    AudienceRecord,
    AuditRecord,
    DeidentifiedRecord,
    DlqRecord,
    MeasurementRecord,
    PartnerShareRecord,
)

Role: TypeAlias = Literal["input", "output", "internal", "changelog"]
Partitioning: TypeAlias = Literal["any", "murmur2", "table"]
Retention: TypeAlias = Literal["raw", "internal", "output", "audit", "dlq", "compacted"]

MURMUR2_NOTE: Final = "Kafka's default partitioner: murmur2 of the key, as the Java client"


@dataclass(frozen=True, slots=True, eq=False)
class Topic:
    """One topic as the product uses it: each is one object of this catalogue, compared
    and hashed by identity (the engine looks one up per record forwarded)."""

    name: str
    """The logical name; the configured prefix goes before it (`Settings.topic`)."""
    role: Role
    summary: str
    key: str
    """What the record key is."""
    partitioning: Partitioning
    """`any`: producers choose; `murmur2`: by the key, as Kafka's default partitioner;
    `table`: as the table's partitions (a changelog record goes to its store's partition)."""
    value: type[BaseModel] | None
    """The model of the values; None for a changelog's stored bytes (`pipeline.core.stored`)
    and for internal topics, which carry a raw record's value unchanged."""
    retention: Retention
    """Which retention setting applies (`compacted`: kept per key, never by age)."""
    source: RecordSource | None = None
    """For raw input topics: which collector's records it carries."""
    destination: Destination | None = None
    """For output topics: the routing destination that writes it."""
    append_time: bool = False
    """Records carry the broker's append time (`LogAppendTime`): inputs, so that
    "acknowledged before produced" compares them on one clock."""
    headers: type[BaseModel] | None = None
    """The model of the `pipeline-hop` header an internal topic's records carry."""

    @property
    def compacted(self) -> bool:
        return self.retention == "compacted"


def _raw(source: RecordSource, model: type[BaseModel], summary: str) -> Topic:
    return Topic(
        name=f"raw.{source}",
        role="input",
        summary=summary,
        key="any (the pipeline re-keys what it reads)",
        partitioning="any",
        value=model,
        retention="raw",
        source=source,
        append_time=True,
    )


def _output(
    destination: Destination,
    name: str,
    model: type[BaseModel],
    summary: str,
    key: str,
    retention: Retention = "output",
) -> Topic:
    return Topic(
        name=name,
        role="output",
        summary=summary,
        key=key,
        partitioning="murmur2",
        value=model,
        retention=retention,
        destination=destination,
    )


RAW_TAG: Final = _raw("tag", TagEvent, "Tag and web Conversions-API events.")
RAW_SDK: Final = _raw("sdk", SdkEvent, "App SDK and server Conversions-API events.")
RAW_WIDGET: Final = _raw("widget", WidgetEvent, "Save button and widget events.")
RAW_AUDIENCE: Final = _raw(
    "audience",
    AudienceMember,
    "Advertisers' customer-list changes, one record per list member.",
)
CONSENT_CHANGES: Final = Topic(
    name="consent.changes",
    role="input",
    summary="Account settings, profile, device and deletion changes, one user per key.",
    key="user_id",
    partitioning="murmur2",
    value=ConsentChange,
    retention="compacted",
    append_time=True,
)

PERSONALIZATION: Final = _output(
    "personalization",
    "activity.personalization",
    ActivityRecord,
    "Identified events allowed for recommendations.",
    "user_id",
)
ADS: Final = _output(
    "ads",
    "activity.ads",
    ActivityRecord,
    "Identified events allowed for ad ranking.",
    "user_id",
)
MEASUREMENT: Final = _output(
    "measurement",
    "activity.measurement",
    MeasurementRecord,
    "Pseudonymous events (keyed HMAC user key) for ad-effectiveness measurement.",
    "user_key (HMAC of the user id)",
)
PARTNER_SHARE: Final = _output(
    "partner_share",
    "activity.partner_share",
    PartnerShareRecord,
    "Events eligible for third-party partners, with hashed contact points.",
    "user_id",
)
DEIDENTIFIED: Final = _output(
    "deidentified",
    "activity.deidentified",
    DeidentifiedRecord,
    "Every valid event stripped of every identifier.",
    "aggregation cell: hour|advertiser|event|action source|country",
)
AGGREGATES: Final = _output(
    "aggregates",
    "aggregates.deidentified",
    AggregateRecord,
    "Hourly k-anonymous counts over de-identified events.",
    "hour|advertiser|event",
)
AUDIENCES: Final = _output(
    "audiences",
    "activity.audiences",
    AudienceRecord,
    "Customer-list memberships that consent allows, and their withdrawal .",
    "user_id",
)
AUDIT: Final = _output(
    "audit",
    "decisions.audit",
    AuditRecord,
    "One record per processed input: outcomes, reasons, versions; no raw PII.",
    "user_key (HMAC of the subject key)",
    retention="audit",
)
DLQ: Final = _output(
    "dlq",
    "dlq",
    DlqRecord,
    "Every input that could not be processed, with its reason and original bytes.",
    "the input's key",
    retention="dlq",
)

IDENTITY_LINKS: Final = Topic(
    name="identity.links",
    role="input",
    summary="Which user each match key (hashed email, phone, advertising id, click id, "
    "widget session) belongs to; a tombstone or deleted: true unlinks.",
    key="match_key",
    partitioning="murmur2",
    value=IdentityLink,
    retention="compacted",
    append_time=True,
)


def _internal(name: str, key: str, summary: str) -> Topic:
    return Topic(
        name=f"{{app_id}}.{name}",
        role="internal",
        summary=summary,
        key=key,
        partitioning="murmur2",
        value=None,
        retention="internal",
        append_time=True,
        headers=Hop,
    )


BY_EVENT: Final = _internal(
    "by-event",
    "advertiser_id, 0x1f, event_id",
    "Valid raw events re-keyed by (advertiser, event id), so every copy is deduplicated "
    "in one place wherever it was produced.",
)
BY_MATCH_KEY: Final = _internal(
    "by-match-key",
    "the match key looked up next",
    "Events on their way through the identity table, to the partition of each match key "
    "in turn (like Kafka Streams' foreign-key join subscriptions).",
)
BY_SUBJECT: Final = _internal(
    "by-subject",
    "the subject key: the resolved user_id, else anon:<device, cookie or event id>",
    "Resolved events re-keyed by their subject, co-partitioned with consent.changes "
    "for the decision.",
)


def hop_name(topic: Topic) -> str:
    """The metric label of an internal topic: its name without the app id."""
    return topic.name.rpartition(".")[2]


INPUTS: Final = (RAW_TAG, RAW_SDK, RAW_WIDGET, RAW_AUDIENCE, CONSENT_CHANGES, IDENTITY_LINKS)
INTERNAL: Final = (BY_EVENT, BY_MATCH_KEY, BY_SUBJECT)
RAW: Final[Mapping[RecordSource, Topic]] = MappingProxyType(
    {topic.source: topic for topic in INPUTS if topic.source is not None}
)
"""The raw input topic of each source (customer lists included)."""
RAW_EVENTS: Final[Mapping[Source, Topic]] = MappingProxyType(
    {"tag": RAW_TAG, "sdk": RAW_SDK, "widget": RAW_WIDGET}
)
"""The raw input topic of each event source."""
OUTPUTS: Final = (
    PERSONALIZATION,
    ADS,
    MEASUREMENT,
    PARTNER_SHARE,
    DEIDENTIFIED,
    AGGREGATES,
    AUDIENCES,
    AUDIT,
    DLQ,
)
BY_DESTINATION: Final[Mapping[Destination, Topic]] = MappingProxyType(
    {topic.destination: topic for topic in OUTPUTS if topic.destination is not None}
)
"""The output topic of each routing destination."""

TableName: TypeAlias = Literal["consent", "dedup", "aggregates", "identity", "memberships"]
TABLES: Final[Mapping[TableName, str]] = MappingProxyType(
    {
        "consent": "Each user's consent state and recent-change history (decision stage).",
        "dedup": "Where each (advertiser, event id) was first read, for 48 h (dedup stage).",
        "aggregates": "Open hourly aggregation cells (decision stage).",
        "identity": "Each match key's linked user and its recent changes (identity stage).",
        "memberships": "Each user's customer-list memberships and their state (decision stage).",
    }
)
"""The worker's changelogged tables."""


def changelog(table: TableName) -> Topic:
    """The changelog topic of a table; its name holds `{app_id}` (see `topic_name`)."""
    return Topic(
        name=f"{{app_id}}.{table}-changelog",
        role="changelog",
        summary=f"Changelog of the `{table}` table: {TABLES[table]}",
        key="the table key (stored bytes, see pipeline.core.stored)",
        partitioning="table",
        value=None,
        retention="compacted",
    )


CHANGELOGS: Final = tuple(changelog(table) for table in TABLES)


COPARTITIONED: Final = (*INTERNAL, CONSENT_CHANGES, IDENTITY_LINKS, *CHANGELOGS)
"""Topics that must all have the same partition count: a table's partition p and the
partition p of the topics its stage reads live on one worker. Raw topics may differ."""


def every_topic() -> Iterator[Topic]:
    """Every topic of the catalogue: inputs, outputs, internal and changelog topics."""
    yield from INPUTS
    yield from OUTPUTS
    yield from INTERNAL
    yield from CHANGELOGS


def by_name(name: str) -> Topic:
    """The entry of a logical topic name (a changelog's with `{app_id}` in it).

    Raises:
        KeyError: no such topic.
    """
    for topic in every_topic():
        if topic.name == name:
            return topic
    raise KeyError(name)
