"""TLS and SASL_SSL/SCRAM against a local broker with those listeners; secrets never printed.

The broker runs on `TEST_KAFKA_PORT + 200` (its controller, TLS and SASL_SSL listeners on
the next three ports) with throwaway certificates, and is removed afterwards.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

import pipeline.runtime.engine
from pipeline import catalogue
from pipeline.kafka.admin import create_topics
from pipeline.kafka.config import client_options
from pipeline.settings import Settings
from schemas import codec
from tests.conftest import REPO, TEST_KAFKA_PORT
from tests.integration.conftest import WorkerProcess, free_port
from tests.integration.tls import SCRAM_USER, Tls, TlsBroker, make_pki

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is needed for the PKI"),
    pytest.mark.skipif(
        bool(os.environ.get("KAFKA_BOOTSTRAP_SERVERS")),
        reason="runs its own local TLS broker; not with an external cluster",
    ),
]

KEY_PASSWORD = f"client-key-{uuid.uuid4().hex}"
SCRAM_PASSWORD = f"scram-{uuid.uuid4().hex}"
TLS_PORT = int(os.environ.get("TEST_TLS_KAFKA_PORT", str(int(TEST_KAFKA_PORT) + 200)))


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    tls = make_pki(tmp_path_factory.mktemp("pki"), KEY_PASSWORD, SCRAM_PASSWORD)
    home = Path(os.environ.get("KAFKA_HOME_DIR", REPO / ".local" / "kafka"))
    broker = TlsBroker(TLS_PORT, tls, home)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def mutual_tls(broker: TlsBroker, **overrides: object) -> Settings:
    tls: Tls = broker.tls
    values: dict[str, object] = {
        "kafka_bootstrap_servers": broker.ssl,
        "kafka_security_protocol": "SSL",
        "kafka_ssl_cafile": tls.ca,
        "kafka_ssl_certfile": tls.client_cert,
        "kafka_ssl_keyfile": tls.client_key,
        "kafka_ssl_key_password": tls.client_key_password,
    }
    values.update(overrides)
    return Settings.model_validate(values)


def scram(broker: TlsBroker, *, password: str = SCRAM_PASSWORD, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "kafka_bootstrap_servers": broker.sasl_ssl,
        "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_mechanism": "SCRAM-SHA-512",
        "kafka_sasl_username": SCRAM_USER,
        "kafka_sasl_password": password,
        "kafka_ssl_cafile": broker.tls.ca,
    }
    values.update(overrides)
    return Settings.model_validate(values)


async def round_trip(settings: Settings) -> bytes | None:
    """Create a topic, write a record and read it back, all through `client_options`."""
    topic = f"tls-{uuid.uuid4().hex[:8]}"
    options = client_options(settings)
    admin = AIOKafkaAdminClient(**options)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(**options, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        await (await producer.send(topic, b"over tls", key=b"k"))
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(**options, isolation_level="read_committed")
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        record = await asyncio.wait_for(consumer.getone(), 30)
        value: bytes | None = record.value
        return value
    finally:
        await consumer.stop()


def test_mutual_tls_with_an_encrypted_client_key(tls_broker: TlsBroker) -> None:
    assert asyncio.run(round_trip(mutual_tls(tls_broker))) == b"over tls"


def test_sasl_ssl_with_scram(tls_broker: TlsBroker) -> None:
    assert asyncio.run(round_trip(scram(tls_broker))) == b"over tls"


async def _connect(settings: Settings) -> None:
    producer = AIOKafkaProducer(**client_options(settings), request_timeout_ms=5000)
    try:
        await producer.start()
        await producer.partitions_for("__no_such_topic__")
    finally:
        await producer.stop()


def test_a_client_without_a_certificate_is_refused(tls_broker: TlsBroker) -> None:
    settings = mutual_tls(
        tls_broker, kafka_ssl_certfile=None, kafka_ssl_keyfile=None, kafka_ssl_key_password=None
    )
    with pytest.raises((KafkaError, OSError, TimeoutError)):
        asyncio.run(asyncio.wait_for(_connect(settings), 40))


def test_a_wrong_scram_password_is_refused_and_never_echoed(
    tls_broker: TlsBroker, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = f"wrong-{uuid.uuid4().hex}"
    with pytest.raises((KafkaError, OSError, TimeoutError)) as failure:
        asyncio.run(asyncio.wait_for(_connect(scram(tls_broker, password=wrong)), 40))
    assert wrong not in str(failure.value)
    assert wrong not in caplog.text


@pytest.mark.skipif(
    "client_options" not in inspect.getsource(pipeline.runtime.engine),
    reason="the engine does not build its Kafka clients with pipeline.kafka.config yet",
)
def test_a_worker_runs_over_sasl_ssl_and_never_logs_its_secrets(
    tls_broker: TlsBroker, tmp_path: Path
) -> None:
    prefix = f"sec-{uuid.uuid4().hex[:8]}."
    common: dict[str, object] = {
        "app_id": f"sec-{uuid.uuid4().hex[:8]}",
        "topic_prefix": prefix,
        "topic_partitions": 1,
        "store": "memory",
        "data_dir": tmp_path / "state",
        "hmac_key": "security-test-hmac-key-0123456789abcdef",
        "web_port": free_port(),
        "poll_timeout_ms": 20,
    }
    plain = Settings.model_validate({"kafka_bootstrap_servers": tls_broker.plaintext, **common})
    asyncio.run(create_topics(plain))
    settings = Settings.model_validate({**scram(tls_broker).model_dump(), **common})
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    try:
        worker.wait_ready()
        user = "sec-user-1"
        change = {
            "user_id": user,
            "changed_at": int(time.time() * 1000),
            "settings": {"personalization": True},
            "profile": {"country": "US", "birth_year": 1980},
        }
        event = {
            "event_id": "sec-e1",
            "event_name": "lead",
            "event_time": int(time.time()) - 5,
            "action_source": "web",
            "advertiser_id": "adv-sec",
            "user_id": user,
        }
        asyncio.run(_produce_and_read(settings, user, change, event))
    finally:
        worker.stop()
    output = worker.output()
    assert SCRAM_PASSWORD not in output
    assert KEY_PASSWORD not in output
    assert settings.require_hmac_key().decode() not in output


async def _produce_and_read(
    settings: Settings, user: str, change: dict[str, object], event: dict[str, object]
) -> None:
    options = client_options(settings)
    producer = AIOKafkaProducer(**options, acks="all")
    await producer.start()
    try:
        await (
            await producer.send(
                settings.topic(catalogue.CONSENT_CHANGES), codec.dumps(change), key=user.encode()
            )
        )
        await (
            await producer.send(
                settings.topic(catalogue.RAW_TAG), codec.dumps(event), key=user.encode()
            )
        )
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(**options, isolation_level="read_committed")
    await consumer.start()
    try:
        tp = TopicPartition(settings.topic(catalogue.AUDIT), 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        record = await asyncio.wait_for(consumer.getone(), 60)
        assert codec.loads(record.value or b"")["event_id"] == "sec-e1"
    finally:
        await consumer.stop()
