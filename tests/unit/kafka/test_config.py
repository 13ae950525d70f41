"""Kafka security settings: what reaches aiokafka, and that secrets stay secret."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from pydantic import ValidationError

from pipeline.errors import ConfigError
from pipeline.kafka.config import client_options
from pipeline.settings import Settings

PASSWORD = "scram-password-do-not-print"
KEY_PASSWORD = "key-password-do-not-print"


def settings(**values: object) -> Settings:
    return Settings.model_validate({"kafka_bootstrap_servers": "k1:9093,k2:9093", **values})


def test_plaintext_is_the_default_and_needs_nothing_else() -> None:
    assert client_options(settings()) == {
        "bootstrap_servers": "k1:9093,k2:9093",
        "security_protocol": "PLAINTEXT",
    }


def test_sasl_plaintext_passes_mechanism_and_credentials() -> None:
    options = client_options(
        settings(
            kafka_security_protocol="SASL_PLAINTEXT",
            kafka_sasl_mechanism="SCRAM-SHA-256",
            kafka_sasl_username="pipeline",
            kafka_sasl_password=PASSWORD,
        )
    )
    assert options["sasl_mechanism"] == "SCRAM-SHA-256"
    assert options["sasl_plain_username"] == "pipeline"
    assert options["sasl_plain_password"] == PASSWORD
    assert "ssl_context" not in options


def test_sasl_ssl_builds_a_verifying_tls_context(tmp_path: Path) -> None:
    ca = _self_signed(tmp_path)
    options = client_options(
        settings(
            kafka_security_protocol="SASL_SSL",
            kafka_sasl_username="pipeline",
            kafka_sasl_password=PASSWORD,
            kafka_ssl_cafile=ca,
        )
    )
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert options["security_protocol"] == "SASL_SSL"


def test_sasl_without_credentials_is_refused_naming_the_settings() -> None:
    with pytest.raises(ValidationError, match="PIPELINE_KAFKA_SASL_USERNAME"):
        settings(kafka_security_protocol="SASL_SSL")


def test_a_missing_tls_file_is_named_and_no_secret_is_shown(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="PIPELINE_KAFKA_SSL_CAFILE") as failure:
        client_options(
            settings(
                kafka_security_protocol="SSL",
                kafka_ssl_cafile=tmp_path / "missing.pem",
                kafka_ssl_key_password=KEY_PASSWORD,
            )
        )
    assert KEY_PASSWORD not in str(failure.value)


def test_a_key_file_needs_its_certificate() -> None:
    with pytest.raises(ValidationError, match="PIPELINE_KAFKA_SSL_CERTFILE"):
        settings(kafka_security_protocol="SSL", kafka_ssl_keyfile="client.key")


def test_secrets_never_show_in_repr_str_or_json_but_reach_child_processes() -> None:
    s = settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_username="pipeline",
        kafka_sasl_password=PASSWORD,
        kafka_ssl_key_password=KEY_PASSWORD,
        hmac_key="h" * 40,
    )
    for text in (repr(s), str(s), s.model_dump_json(), repr(s.model_dump())):
        assert PASSWORD not in text
        assert KEY_PASSWORD not in text
        assert "h" * 40 not in text
    env = s.to_env()
    assert env["PIPELINE_KAFKA_SASL_PASSWORD"] == PASSWORD
    assert env["PIPELINE_KAFKA_SSL_KEY_PASSWORD"] == KEY_PASSWORD
    assert env["PIPELINE_HMAC_KEY"] == "h" * 40
    assert env["PIPELINE_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"


def test_security_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("PIPELINE_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("PIPELINE_KAFKA_SASL_USERNAME", "pipeline")
    monkeypatch.setenv("PIPELINE_KAFKA_SASL_PASSWORD", PASSWORD)
    s = Settings(_env_file=None)
    assert s.kafka_security_protocol == "SASL_SSL"
    assert s.kafka_sasl_password is not None
    assert s.kafka_sasl_password.get_secret_value() == PASSWORD


def _self_signed(directory: Path) -> Path:
    """A CA bundle the standard library can load: the system's own."""
    cafile = ssl.get_default_verify_paths().cafile
    if cafile is None or not Path(cafile).is_file():
        pytest.skip("no system CA bundle to load")
    return Path(cafile)
