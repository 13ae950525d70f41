"""Prometheus metrics of the collector: one object, given its registry, fixed label sets.

Labels come from closed sets only: the dialect (`native`, `widget`, `tag`, `pinterest`,
`meta`, `pinterest_tag`, `meta_pixel`, and the list calls `pinterest_lists`,
`meta_audiences`), an outcome, a reject reason (the DLQ reasons,
or `dialect` for what the platform's own rules refuse). Never a token, an advertiser or
account id, an event id, an email or an address.
"""

from __future__ import annotations

from typing import Final, Literal, TypeAlias, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

Dialect: TypeAlias = Literal[
    "native",
    "widget",
    "tag",
    "pinterest",
    "meta",
    "pinterest_tag",
    "meta_pixel",
    "pinterest_lists",
    "meta_audiences",
]
DIALECTS: Final[tuple[Dialect, ...]] = get_args(Dialect)
RequestOutcome: TypeAlias = Literal[
    "ok",
    "partial",
    "test",
    "bad_request",
    "unauthorized",
    "forbidden",
    "rate_limited",
    "too_large",
    "unavailable",
    "unregistered",
    "error",
]
EventOutcome: TypeAlias = Literal["accepted", "rejected", "test"]

REQUEST_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class CollectorMetrics:
    """Every metric the collector exports on `/metrics`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "pipeline_collector_requests_total",
            "HTTP requests by dialect and outcome.",
            ["dialect", "outcome"],
            registry=registry,
        )
        self.events = Counter(
            "pipeline_collector_events_total",
            "Events in requests: accepted (acknowledged by Kafka), rejected, or test-only.",
            ["dialect", "outcome"],
            registry=registry,
        )
        self.rejects = Counter(
            "pipeline_collector_rejects_total",
            "Rejected events by dialect and reason.",
            ["dialect", "reason"],
            registry=registry,
        )
        self.unregistered_beacons = Counter(
            "pipeline_collector_unregistered_beacons_total",
            "Pixel beacons for a tag, pixel or advertiser the registry does not know: "
            "answered, not written.",
            ["dialect"],
            registry=registry,
        )
        self.rate_limited = Counter(
            "pipeline_collector_rate_limited_total",
            "API calls refused with 429 by the per-advertiser rate limit.",
            ["dialect"],
            registry=registry,
        )
        self.request_seconds = Histogram(
            "pipeline_collector_request_seconds",
            "Time to answer a request, Kafka's acknowledgements included.",
            ["dialect"],
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        self.kafka_available = Gauge(
            "pipeline_collector_kafka_available",
            "1 when the collector can hand events to Kafka, else 0.",
            registry=registry,
        )
        self.advertisers = Gauge(
            "pipeline_collector_registry_advertisers",
            "Advertisers in the loaded registry.",
            registry=registry,
        )
        self.replicas = Gauge(
            "pipeline_collector_replicas",
            "Collector replicas sharing the rate limit (PIPELINE_COLLECTOR_PEERS; 1 when unset).",
            registry=registry,
        )
        self.replicas.set(1)
        self.registry_reloads = Counter(
            "pipeline_collector_registry_reloads_total",
            "Registry reloads after the file changed: ok, or failed (the old one stays).",
            ["outcome"],
            registry=registry,
        )
        for outcome in ("ok", "failed"):
            self.registry_reloads.labels(outcome)
        for dialect in DIALECTS:
            self.request_seconds.labels(dialect)
            self.unregistered_beacons.labels(dialect)
            self.rate_limited.labels(dialect)
