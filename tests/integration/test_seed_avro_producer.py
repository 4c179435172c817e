"""The seed's own Avro producer (shared/seeds/004, "producer.py") against a worker with its
normal settings: confluent-kafka, the seed's UserClick schema string as written, SASL_SSL
with SCRAM-SHA-512 to the stack's TLS listener. The worker reads over plaintext as usual.

That schema puts "logicalType" beside "type" in the timestamp field, where Avro ignores it:
the value is a plain long of epoch milliseconds, which the clicks agent must store as the
click's time (it used to dead-letter every one as invalid_timestamp)."""
from __future__ import annotations

import time
import uuid
from typing import Any, Callable

import pytest
from confluent_kafka import KafkaError, Message, SerializingProducer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer

from models.avro_schemas import SEED_USER_CLICK
from tests.integration.clicks import dead_letters, history, millis
from devtools.processes import wait_until

CLICKS = 5


def kafka_config(scram_tls: dict[str, str]) -> dict[str, str]:
    """The seed's producer_config, Kafka part; plus the local CA (MSK's is a public one)."""
    return {
        "bootstrap.servers": scram_tls["APP_KAFKA_BROKERS"].split("://", 1)[1],
        "security.protocol": "SASL_SSL",
        "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": scram_tls["APP_KAFKA_SASL_USERNAME"],
        "sasl.password": scram_tls["APP_KAFKA_SASL_PASSWORD"],
        "ssl.ca.location": scram_tls["APP_KAFKA_SSL_CAFILE"],
    }


def seed_clicks() -> list[dict[str, Any]]:
    """What the seed's main() produces: a fresh user id, page i, the time in epoch millis."""
    return [{"user_id": str(uuid.uuid4()), "url": f"https://example.com/page/{i}",
             "timestamp": int(time.time() * 1000) + i} for i in range(CLICKS)]


def produce_with_serializing_producer(settings: Any, scram_tls: dict[str, str], topic: str,
                                      clicks: list[dict[str, Any]], report: Callable[..., None]) -> None:
    registry = SchemaRegistryClient({"url": settings.schema_registry_url})
    producer = SerializingProducer({**kafka_config(scram_tls),
                                    "value.serializer": AvroSerializer(registry, SEED_USER_CLICK)})
    for click in clicks:
        producer.produce(topic=topic, value=click, on_delivery=report)
    assert producer.flush(60) == 0


def produce_with_avro_producer(settings: Any, scram_tls: dict[str, str], topic: str,
                               clicks: list[dict[str, Any]], report: Callable[..., None]) -> None:
    """The legacy API exactly as the seed calls it. The seed's config also has
    schema.registry.basic.auth.user.info (Confluent Cloud); the local registry has no
    auth, and this client refuses that key anyway unless basic.auth.credentials.source
    is USER_INFO (ValueError: Unrecognized configuration properties)."""
    from confluent_kafka import avro
    from confluent_kafka.avro import AvroProducer

    value_schema = avro.loads(SEED_USER_CLICK)
    producer_config = {**kafka_config(scram_tls), "schema.registry.url": settings.schema_registry_url}
    with pytest.warns(DeprecationWarning, match="AvroProducer has been deprecated"):
        avro_producer = AvroProducer(producer_config, default_value_schema=value_schema)
    for click in clicks:
        avro_producer.produce(topic=topic, value=click, callback=report)
    assert avro_producer.flush(60) == 0


@pytest.mark.parametrize("produce", [produce_with_serializing_producer, produce_with_avro_producer],
                         ids=["SerializingProducer+AvroSerializer", "legacy AvroProducer"])
def test_the_seeds_avro_producer_over_sasl_ssl_gets_its_clicks_stored(
        produce: Callable[..., None], workers: Any, settings: Any, scram_tls: dict[str, str],
        event_loop_run: Any) -> None:
    assert settings.kafka_security_protocol == "PLAINTEXT", "the worker runs with its normal settings"
    workers().start()
    topic = settings.topic(settings.clicks_topic)
    clicks = seed_clicks()
    delivered: list[tuple[str, int]] = []
    failed: list[KafkaError] = []

    def report(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            failed.append(err)
        else:
            delivered.append((str(msg.topic()), int.from_bytes((msg.value() or b"")[1:5], "big")))  # schema id

    produce(settings, scram_tls, topic, clicks, report)
    assert failed == [] and len(delivered) == CLICKS
    assert {t for t, _ in delivered} == {topic}

    async def scenario() -> None:
        async def all_handled() -> bool:   # stored or dead-lettered: a refusal fails fast, with its reason
            return len(history(settings)) + len(await dead_letters(settings)) >= CLICKS
        await wait_until(all_handled, 90, f"{CLICKS} clicks stored or dead-lettered")
        assert [(d["reason"], d["error"]) for d in await dead_letters(settings)] == []
        rows = history(settings)
        assert {(r.user_id, millis(r.clicked_at), r.url) for r in rows} == \
            {(c["user_id"], c["timestamp"], c["url"]) for c in clicks}, "each click at its own epoch millis"
        assert len({r.schema_id for r in rows}) == 1 and {r.source_topic for r in rows} == {topic}
        assert {schema_id for _, schema_id in delivered} == {r.schema_id for r in rows}

    event_loop_run(scenario())
