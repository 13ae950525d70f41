"""The one settings object: read from the environment and `.env` by `main()` only."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from pipeline.catalogue import Topic
from pipeline.core.policy import PolicyConfig
from pipeline.errors import ConfigError


class Settings(BaseSettings):
    """Worker, topic and policy settings; environment variables use the `PIPELINE_` prefix."""

    model_config = SettingsConfigDict(
        env_prefix="PIPELINE_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        populate_by_name=True,
    )

    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092",
        validation_alias=AliasChoices(
            "KAFKA_BOOTSTRAP_SERVERS", "PIPELINE_KAFKA_BOOTSTRAP_SERVERS"
        ),
        description="Comma-separated host:port list of the Kafka cluster.",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="How every Kafka client connects to the cluster."
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        default="SCRAM-SHA-512", description="SASL mechanism (SASL_PLAINTEXT, SASL_SSL)."
    )
    kafka_sasl_username: str | None = Field(default=None, min_length=1, max_length=256)
    kafka_sasl_password: SecretStr | None = Field(default=None, description="SASL password.")
    kafka_ssl_cafile: Path | None = Field(
        default=None, description="CA bundle (PEM) that signed the brokers' certificates."
    )
    kafka_ssl_certfile: Path | None = Field(
        default=None, description="Client certificate (PEM) for brokers that require one."
    )
    kafka_ssl_keyfile: Path | None = Field(
        default=None, description="Private key (PEM) of the client certificate."
    )
    kafka_ssl_key_password: SecretStr | None = Field(
        default=None, description="Password of an encrypted client key."
    )
    kafka_ssl_check_hostname: bool = Field(
        default=True, description="Check that a broker's certificate names the host."
    )
    app_id: str = Field(default="consent-pipeline", min_length=1, max_length=200)
    topic_prefix: str = Field(default="", max_length=100, pattern=r"^[A-Za-z0-9._-]*$")
    topic_partitions: int = Field(default=6, ge=1, le=10_000)
    topic_replication: int = Field(default=1, ge=1, le=10)
    raw_retention_days: int = Field(default=7, ge=1)
    output_retention_days: int = Field(default=7, ge=1)
    audit_retention_days: int = Field(default=90, ge=1)
    dlq_retention_days: int = Field(default=30, ge=1)
    internal_retention_hours: int = Field(
        default=24, ge=1, description="Retention of the internal topics between the stages."
    )
    sharing_countries: Annotated[list[str], NoDecode] = Field(
        default=["US"], description="ISO 3166-1 alpha-2 countries where partner sharing is on."
    )
    gpc_enabled: bool = Field(default=True, description="Honour Global Privacy Control.")
    policy_version: str = "v1"
    hmac_key: SecretStr | None = Field(
        default=None, description="Secret key of the HMAC user_key (at least 32 bytes)."
    )
    trust_key: SecretStr | None = Field(
        default=None,
        description="Secret with which trusted producers sign raw records that name a user_id "
        "(at least 32 bytes); see pipeline.core.trust.",
    )
    hmac_key_id: str = Field(
        default="k1", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$"
    )
    worker_id: str | None = Field(
        default=None,
        max_length=100,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="Stable, unique name of this worker (transactional id); default host-port.",
    )
    max_event_bytes: int = Field(default=64 * 1024, ge=1024, le=1024 * 1024)
    dedup_window_hours: int = Field(default=48, ge=1)
    aggregate_k: int = Field(default=10, ge=1)
    aggregate_grace_seconds: int = Field(default=600, ge=0)
    batch_max_records: int = Field(default=2000, ge=1, le=100_000)
    poll_timeout_ms: int = Field(default=50, ge=1, le=10_000)
    barrier_timeout_seconds: float = Field(
        default=15.0,
        gt=0,
        description="How long a batch may wait for its table inputs (consent changes, identity "
        "links) to be caught up before it is aborted and retried.",
    )
    transaction_timeout_seconds: float = Field(
        default=30.0,
        ge=10,
        le=900,
        description="How long the transaction coordinator lets a batch's transaction stay "
        "open before it aborts it (the broker's transaction.max.timeout.ms must allow it); "
        "a batch still running 5 s before is aborted by the worker itself.",
    )
    rejoin_timeout_seconds: float = Field(
        default=300.0,
        gt=0,
        description="How long a worker may stay out of its consumer group (dropped, unable "
        "to rejoin) before it exits for its process manager to start it again.",
    )
    pii_canaries: Annotated[list[str], NoDecode] = Field(
        default=[],
        description="Comma-separated synthetic identifiers that must never reach "
        "de-identified, measurement, aggregate or audit records; hits are counted.",
    )
    store: Literal["rocksdb", "memory"] = "rocksdb"
    rocksdb_memory_mb: int = Field(
        default=128,
        ge=16,
        le=64 * 1024,
        description="One budget for all RocksDB stores of a worker: block cache, with the "
        "write buffers charged to it.",
    )
    data_dir: Path = Path(".local/state")
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=6066, ge=1, le=65535)
    web_canonical_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^/?#\s]+/?$",
        description="How other workers and the collector reach this worker's web server "
        "(default http://<web host, or the host name when it listens everywhere>:<web port>); "
        "announced to the consumer group, as Faust's canonical_url.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    collector_host: str = Field(default="127.0.0.1", description="Where the collector listens.")
    collector_port: int = Field(default=6067, ge=1, le=65535)
    collector_max_body_bytes: int = Field(
        default=1024 * 1024, ge=1024, le=64 * 1024 * 1024, description="Largest request body."
    )
    collector_max_events: int = Field(
        default=1000, ge=1, le=100_000, description="Most events in one POST batch."
    )
    collector_max_members: int = Field(
        default=10_000,
        ge=1,
        le=100_000,
        description="Most customer-list members in one list call (Meta's documented limit).",
    )
    collector_delivery_timeout_seconds: float = Field(
        default=10.0, gt=0, le=300, description="How long a request waits for Kafka's acks."
    )
    collector_retry_after_seconds: int = Field(
        default=5, ge=1, le=3600, description="Retry-After of a 503 while Kafka is unavailable."
    )
    advertisers_file: Path | None = Field(
        default=None,
        description="The advertiser registry (YAML): each advertiser's ids and the SHA-256 of "
        "its tokens; `consent-pipeline advertisers` edits it. The collector requires it.",
    )
    collector_rate_limit_per_second: float = Field(
        default=50.0,
        gt=0,
        le=1_000_000,
        description="API calls each advertiser may make per second, on average, across every "
        "collector replica (see PIPELINE_COLLECTOR_PEERS); beyond it 429.",
    )
    collector_rate_limit_burst: int = Field(
        default=200,
        ge=1,
        le=10_000_000,
        description="API calls an advertiser may make at once, across every collector replica.",
    )
    collector_peers: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        pattern=r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$",
        description="A DNS name resolving to every ready collector replica (a headless "
        "Service): each replica enforces its share of the rate limit, the limit divided by "
        "the addresses found, looked up every few seconds. Unset: one replica.",
    )
    collector_registry_reload_seconds: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="How often the collector looks for changes to the advertiser registry.",
    )
    collector_worker_urls: Annotated[list[str], NoDecode] = Field(
        default=[],
        description="Comma-separated web URLs of workers the consent API asks what the "
        "consent table holds (any worker forwards to the one that owns the person's "
        "partition), e.g. the workers' Service; tried in order.",
    )
    collector_privacy_page: bool = Field(
        default=False,
        description="Serve the privacy settings page at /account/privacy. It calls the consent "
        "API with a trusted token given in its URL: for demos and tests, never for the public.",
    )
    collector_worker_timeout_seconds: float = Field(
        default=5.0, gt=0, le=120, description="How long the consent API waits for a worker."
    )
    collector_optout_cookie: str = Field(
        default="optout",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Name of the web opt-out cookie the beacon reads (value 1 or true).",
    )

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _servers_have_ports(cls, value: str) -> str:
        servers = [s.strip() for s in value.split(",") if s.strip()]
        if not servers or any(":" not in s for s in servers):
            raise ValueError("expected a comma-separated list of host:port")
        return ",".join(servers)

    @model_validator(mode="after")
    def _kafka_security_is_complete(self) -> Self:
        if self.kafka_security_protocol.startswith("SASL_") and (
            self.kafka_sasl_username is None or self.kafka_sasl_password is None
        ):
            raise ValueError(
                "PIPELINE_KAFKA_SASL_USERNAME and PIPELINE_KAFKA_SASL_PASSWORD are required "
                "with a SASL security protocol"
            )
        if self.kafka_ssl_keyfile is not None and self.kafka_ssl_certfile is None:
            raise ValueError("PIPELINE_KAFKA_SSL_KEYFILE needs PIPELINE_KAFKA_SSL_CERTFILE")
        return self

    @model_validator(mode="after")
    def _barrier_fits_in_a_transaction(self) -> Self:
        if self.barrier_timeout_seconds > self.transaction_timeout_seconds - 10:
            raise ValueError(
                "PIPELINE_BARRIER_TIMEOUT_SECONDS must be at least 10 s shorter than "
                "PIPELINE_TRANSACTION_TIMEOUT_SECONDS: a batch waits for its barrier inside "
                "its transaction"
            )
        return self

    @field_validator("sharing_countries", "pii_canaries", "collector_worker_urls", mode="before")
    @classmethod
    def _list_from_csv(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("collector_worker_urls")
    @classmethod
    def _worker_urls_are_urls(cls, value: list[str]) -> list[str]:
        urls = [url.rstrip("/") for url in value]
        if not all(re.fullmatch(r"https?://[^/?#\s]+", url) for url in urls):
            raise ValueError("expected comma-separated http(s)://host:port URLs")
        return urls

    @field_validator("sharing_countries")
    @classmethod
    def _countries_are_alpha2(cls, value: list[str]) -> list[str]:
        value = [c.upper() for c in value]
        if not all(len(c) == 2 and c.isascii() and c.isalpha() for c in value):
            raise ValueError("expected ISO 3166-1 alpha-2 country codes, comma-separated")
        return [c.upper() for c in value]

    def policy(self) -> PolicyConfig:
        """The policy configuration these settings describe."""
        return PolicyConfig(
            sharing_countries=frozenset(self.sharing_countries),
            gpc_enabled=self.gpc_enabled,
            policy_version=self.policy_version,
        )

    @field_validator("trust_key", mode="before")
    @classmethod
    def _empty_trust_key_is_unset(cls, value: object) -> object:
        # Compose and Kubernetes pass an unset optional secret as an empty variable.
        return None if value == "" else value

    @field_validator("hmac_key", "trust_key")
    @classmethod
    def _key_is_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode()) < 32:
            raise ValueError("must be at least 32 bytes")
        return value

    def require_hmac_key(self) -> bytes:
        """The HMAC key, which a worker cannot run without.

        Raises:
            ConfigError: PIPELINE_HMAC_KEY is not set.
        """
        if self.hmac_key is None:
            raise ConfigError("PIPELINE_HMAC_KEY is required (a secret of at least 32 bytes)")
        return self.hmac_key.get_secret_value().encode()

    @property
    def canonical_url(self) -> str:
        """How to reach this worker's web server from another process."""
        if self.web_canonical_url is not None:
            return self.web_canonical_url.rstrip("/")
        host = self.web_host
        if host in ("", "0.0.0.0", "::"):
            host = socket.gethostname()
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.web_port}"

    @property
    def instance_name(self) -> str:
        """This worker's stable name: `worker_id`, or host and web port."""
        return self.worker_id or f"{socket.gethostname()}-{self.web_port}"

    def topic(self, topic: Topic) -> str:
        """The full name of a catalogue topic: the configured prefix, then its name."""
        return f"{self.topic_prefix}{topic.name.format(app_id=self.app_id)}"

    def to_env(self) -> dict[str, str]:
        """These settings as `PIPELINE_*` environment variables, for a child process."""
        values = self.model_dump(mode="json")
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                values[name] = value.get_secret_value()
        return {
            f"PIPELINE_{name.upper()}": _env_value(value)
            for name, value in values.items()
            if value is not None
        }

    @property
    def broker_urls(self) -> list[str]:
        """Bootstrap servers in Faust's URL form."""
        return [f"kafka://{s}" for s in self.kafka_bootstrap_servers.split(",")]


def _env_value(value: object) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)
