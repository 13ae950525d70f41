"""A local broker with TLS and SASL_SSL/SCRAM listeners, and throwaway certificates for it.

`openssl` makes a CA, a broker certificate for 127.0.0.1 and a client certificate whose key
is encrypted; `deploy/local/kafka.sh` starts the broker with extra listeners:

- `PLAINTEXT` on `port` (the script's readiness check, and topic set-up);
- `SSL` on `port + 2`, client certificates required (mutual TLS);
- `SASL_SSL` on `port + 3`, SCRAM-SHA-512, with one user created at format time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import KAFKA_SH

SCRAM_USER = "chaos-client"
DAYS = "2"


@dataclass(frozen=True)
class Tls:
    """Files and secrets of one throwaway PKI (test values, never real secrets)."""

    directory: Path
    ca: Path
    client_cert: Path
    client_key: Path
    client_key_password: str
    scram_password: str


def make_pki(directory: Path, client_key_password: str, scram_password: str) -> Tls:
    """A CA, a broker certificate (127.0.0.1, localhost) and an encrypted client certificate."""
    directory.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    (directory / "broker.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n"
    )
    (directory / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", DAYS, "-subj", "/CN=consent-pipeline test CA",
    )  # fmt: skip
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "broker.key", "-out", "broker.csr",
        "-subj", "/CN=localhost",
    )  # fmt: skip
    openssl(
        "x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "broker.pem", "-days", DAYS, "-extfile", "broker.ext",
    )  # fmt: skip
    openssl(
        "req", "-newkey", "rsa:2048", "-keyout", "client.key", "-out", "client.csr",
        "-subj", "/CN=consent-pipeline test client", "-passout", f"pass:{client_key_password}",
    )  # fmt: skip
    openssl(
        "x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "client.pem", "-days", DAYS, "-extfile", "client.ext",
    )  # fmt: skip
    keystore = directory / "broker-keystore.pem"
    keystore.write_text(
        (directory / "broker.key").read_text()
        + (directory / "broker.pem").read_text()
        + (directory / "ca.pem").read_text()
    )
    return Tls(
        directory,
        directory / "ca.pem",
        directory / "client.pem",
        directory / "client.key",
        client_key_password,
        scram_password,
    )


class TlsBroker:
    """`kafka.sh` on `port` with SSL and SASL_SSL listeners; `stop()` removes its data."""

    def __init__(self, port: int, tls: Tls, home: Path) -> None:
        self.port = port
        self.tls = tls
        self.home = home
        properties = tls.directory / "listeners.properties"
        p = port
        properties.write_text(
            f"listeners=PLAINTEXT://127.0.0.1:{p},CONTROLLER://127.0.0.1:{p + 1},"
            f"SSL://127.0.0.1:{p + 2},SASL_SSL://127.0.0.1:{p + 3}\n"
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{p},SSL://127.0.0.1:{p + 2},"
            f"SASL_SSL://127.0.0.1:{p + 3}\n"
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,"
            "SSL:SSL,SASL_SSL:SASL_SSL\n"
            "ssl.keystore.type=PEM\n"
            f"ssl.keystore.location={tls.directory / 'broker-keystore.pem'}\n"
            "ssl.truststore.type=PEM\n"
            f"ssl.truststore.location={tls.ca}\n"
            "listener.name.ssl.ssl.client.auth=required\n"
            "sasl.enabled.mechanisms=SCRAM-SHA-512\n"
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;\n"
        )
        self.env = {
            **os.environ,
            "KAFKA_PORT": str(port),
            "KAFKA_HOME_DIR": str(home),
            "KAFKA_EXTRA_PROPERTIES": str(properties),
            "KAFKA_FORMAT_ARGS": (
                f"--add-scram SCRAM-SHA-512=[name={SCRAM_USER},password={tls.scram_password}]"
            ),
        }

    @property
    def plaintext(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def ssl(self) -> str:
        return f"127.0.0.1:{self.port + 2}"

    @property
    def sasl_ssl(self) -> str:
        return f"127.0.0.1:{self.port + 3}"

    def _wipe(self) -> None:
        for name in (f"data-{self.port}", f"logs-{self.port}"):
            shutil.rmtree(self.home / name, ignore_errors=True)

    def start(self) -> None:
        subprocess.run([str(KAFKA_SH), "down"], env=self.env, check=True, capture_output=True)
        self._wipe()
        subprocess.run([str(KAFKA_SH), "up"], env=self.env, check=True)

    def stop(self) -> None:
        subprocess.run([str(KAFKA_SH), "down"], env=self.env, check=False, capture_output=True)
        self._wipe()

    def server_log(self) -> str:
        path = self.home / f"logs-{self.port}" / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""
