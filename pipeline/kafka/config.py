"""Connection options every Kafka client of the pipeline shares: servers, TLS and SASL.

`client_options(settings)` returns the keyword arguments aiokafka's producer, consumer
and admin client take for the cluster in `settings` (`AIOKafkaConsumer(**client_options(
settings), group_id=...)`). The options carry the secrets in clear, as aiokafka needs
them: never log or print them. The settings themselves keep secrets as `SecretStr`.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from aiokafka.helpers import create_ssl_context

from pipeline.errors import ConfigError, KafkaUnavailable
from pipeline.settings import Settings


def client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for an aiokafka client connecting to the configured cluster.

    Raises:
        ConfigError: a TLS file is missing or unreadable, or the key password is wrong;
            the message names the setting, never a secret.
    """
    protocol = settings.kafka_security_protocol
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "security_protocol": protocol,
    }
    if protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = ssl_context(settings)
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        password = settings.kafka_sasl_password
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = None if password is None else password.get_secret_value()
    return options


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """The TLS context for the brokers: the CA bundle, and a client certificate if set.

    Raises:
        ConfigError: a file is missing or unreadable, or the key cannot be loaded.
    """
    for name in ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile"):
        path: Path | None = getattr(settings, name)
        if path is not None and not path.is_file():
            raise ConfigError(f"PIPELINE_{name.upper()}: no such file")
    key_password = settings.kafka_ssl_key_password
    try:
        context: ssl.SSLContext = create_ssl_context(
            cafile=settings.kafka_ssl_cafile,
            certfile=settings.kafka_ssl_certfile,
            keyfile=settings.kafka_ssl_keyfile,
            password=None if key_password is None else key_password.get_secret_value(),
        )
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"PIPELINE_KAFKA_SSL_*: cannot load the CA, certificate or key ({type(exc).__name__})"
        ) from exc
    context.check_hostname = settings.kafka_ssl_check_hostname
    return context


def unreachable(settings: Settings, exc: BaseException) -> KafkaUnavailable:
    """The error for a cluster no bootstrap server of which answered, naming the setting."""
    return KafkaUnavailable(
        f"cannot reach Kafka at {settings.kafka_bootstrap_servers} ({type(exc).__name__}); "
        "check KAFKA_BOOTSTRAP_SERVERS and that the brokers are up"
    )
