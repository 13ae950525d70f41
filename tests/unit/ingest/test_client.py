"""The producer library: the pipeline's own validation, hashing before send, keys, delivery."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError

from pipeline import catalogue
from pipeline.core.parse import ParseLimits
from pipeline.core.trust import TRUST_HEADER, trust_signature
from pipeline.errors import DeliveryError, KafkaUnavailable
from pipeline.ingest.client import (
    Accepted,
    EventProducer,
    Prepared,
    Rejected,
    prepare_consent_change,
    prepare_event,
)
from pipeline.settings import Settings
from schemas import codec, normalize
from tests.unit.factories import NOW, sdk_event, tag_event, widget_event

RAW_EMAIL = "  Jane.Doe@Example.COM "
RAW_PHONE = "+1 (555) 010-0199"


def prepared(result: Prepared | Rejected) -> Prepared:
    assert isinstance(result, Prepared), result
    return result


def test_raw_emails_and_phones_are_hashed_before_the_event_leaves_the_process() -> None:
    event = tag_event(user_data={"em": [RAW_EMAIL], "ph": [RAW_PHONE]})

    out = prepared(prepare_event("tag", event, now=NOW))

    document = codec.loads(out.value)
    assert document["user_data"]["em"] == [normalize.sha256_hex("jane.doe@example.com")]
    assert document["user_data"]["ph"] == [normalize.sha256_hex("15550100199")]
    assert b"Jane" not in out.value
    assert b"555" not in out.value
    assert event["user_data"]["em"] == [RAW_EMAIL], "the caller's event is not changed"


@pytest.mark.parametrize(
    ("source", "event", "key"),
    [
        ("tag", tag_event(), b"user-1"),
        ("tag", tag_event(user_id=...), b"anon:cookie-1"),
        ("sdk", sdk_event(user_id=...), b"anon:device-1"),
        ("widget", widget_event(user_id=..., browser=...), b"anon:evt-3"),
    ],
)
def test_records_are_keyed_by_the_subject_key(
    source: Any, event: dict[str, Any], key: bytes
) -> None:
    out = prepared(prepare_event(source, event, now=NOW))

    assert out.key == key
    assert out.topic is catalogue.RAW[source]


@pytest.mark.parametrize(
    ("event", "reason", "detail"),
    [
        (tag_event(advertiser_id=...), "schema_violation", "advertiser_id: missing"),
        (tag_event(event_name="secret-value"), "schema_violation", "event_name: literal_error"),
        (tag_event(user_data={"em": ["secret-value"]}), "schema_violation", "user_data.em.0"),
        (tag_event(event_time=NOW - 8 * 86400), "too_old", "event_time: too_old"),
        (tag_event(event_time=NOW + 7200), "in_future", "event_time: in_future"),
        ("secret-value", "schema_violation", "body: model_type"),
        (tag_event(custom_data={"content_ids": {"secret-value"}}), "schema_violation", "body"),
    ],
)
def test_an_invalid_event_is_rejected_naming_the_field_never_the_value(
    event: object, reason: str, detail: str
) -> None:
    result = prepare_event("tag", event, now=NOW)

    assert isinstance(result, Rejected)
    assert result.reason == reason
    assert result.detail.startswith(detail)
    assert "secret" not in result.detail


def test_an_oversized_event_is_rejected() -> None:
    event = tag_event(event_source_url="https://shop.example.com/" + "x" * 3000)

    result = prepare_event("tag", event, now=NOW, limits=ParseLimits(max_bytes=2048))

    assert isinstance(result, Rejected)
    assert result.reason == "oversized"


def test_a_consent_change_is_keyed_by_its_user() -> None:
    change = {"user_id": "user-9", "changed_at": 1, "settings": {"personalization": False}}

    out = prepared(prepare_consent_change(change, now=NOW))

    assert (out.topic, out.key) == (catalogue.CONSENT_CHANGES, b"user-9")
    rejected = prepare_consent_change({"changed_at": 1}, now=NOW)
    assert isinstance(rejected, Rejected)
    assert rejected.detail == "user_id: missing"


class FakeKafka:
    """Stands in for AIOKafkaProducer: records what is sent; delivery is scripted."""

    def __init__(self) -> None:
        self.config: dict[str, Any] = {}
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self.headers: list[list[tuple[str, bytes]] | None] = []
        self.futures: list[asyncio.Future[Any]] = []
        self.start_error: Exception | None = None
        self.fail_with: Exception | None = None
        self.hold = False

    async def start(self) -> None:
        if self.start_error is not None:
            raise self.start_error

    async def stop(self) -> None:
        pass

    async def flush(self) -> None:
        pass

    async def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.sent.append((topic, key, value))
        self.headers.append(headers)
        self.futures.append(future)
        if self.fail_with is not None:
            future.set_exception(self.fail_with)
        elif not self.hold:
            future.set_result(None)
        return future


def producer(**settings: Any) -> tuple[EventProducer, FakeKafka]:
    kafka = FakeKafka()

    def factory(**config: Any) -> FakeKafka:
        kafka.config = config
        return kafka

    made = EventProducer(
        Settings.model_validate({"topic_prefix": "p.", **settings}),
        clock=lambda: NOW,
        kafka_factory=factory,
    )
    return made, kafka


async def test_send_writes_the_normalized_event_with_acks_all_and_idempotence() -> None:
    made, kafka = producer()
    async with made:
        result = await made.send("tag", tag_event(user_data={"em": [RAW_EMAIL]}))
        assert isinstance(result, Accepted)
        await result.delivered()
        assert await made.flush() == []

    assert kafka.config["acks"] == "all"
    assert kafka.config["enable_idempotence"] is True
    [(topic, key, value)] = kafka.sent
    assert (topic, key) == ("p." + catalogue.RAW_TAG.name, b"user-1")
    assert b"Example" not in value


async def test_a_rejected_event_is_not_sent() -> None:
    made, kafka = producer()
    async with made:
        result = await made.send("tag", tag_event(event_name="nope"))

    assert isinstance(result, Rejected)
    assert kafka.sent == []


async def test_delivery_failures_are_reported_to_the_caller() -> None:
    made, kafka = producer()
    async with made:
        kafka.fail_with = KafkaTimeoutError()
        result = await made.send("sdk", sdk_event())
        assert isinstance(result, Accepted)
        with pytest.raises(DeliveryError, match="KafkaTimeoutError"):
            await result.delivered()
        failures = await made.flush()

    assert [(f.event_id, f.topic, f.error) for f in failures] == [
        ("evt-2", catalogue.RAW_SDK.name, "KafkaTimeoutError")
    ]


async def test_deliver_reports_records_not_acknowledged_in_time() -> None:
    made, kafka = producer()
    async with made:
        kafka.hold = True
        ready = prepared(made.prepare("tag", tag_event()))
        outcomes = await made.deliver([ready], within_s=0.05)

    [failure] = outcomes
    assert failure is not None
    assert failure.error == "Timeout"


async def test_an_unreachable_cluster_or_a_stopped_producer_is_kafka_unavailable() -> None:
    made, kafka = producer()
    kafka.start_error = KafkaConnectionError("no broker")
    with pytest.raises(KafkaUnavailable, match="cannot reach Kafka"):
        await made.start()
    assert not made.started
    with pytest.raises(KafkaUnavailable, match="not started"):
        await made.send("tag", tag_event())


async def test_a_signed_record_carries_the_trust_header_over_its_exact_value() -> None:
    key = b"k" * 32
    made, kafka = producer()
    record = prepared(prepare_event("tag", tag_event(), now=NOW))
    async with made:
        await made.deliver([record.signed(key), record], within_s=1)

    assert record.user_id == "user-1"
    assert kafka.headers == [[(TRUST_HEADER, trust_signature(key, record.value))], None]
