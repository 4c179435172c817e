"""Producing samples and reading every place an event can end up, for the pipeline tests."""
from __future__ import annotations

import asyncio
import base64
import collections
from typing import Any, Iterable, Optional

import orjson
from aiokafka import AIOKafkaProducer
from cassandra.cluster import Cluster

from app.kafka_tools import bootstrap, message_counts, read_all
from domain.errors import Reason
from app.commands.samples.transactions import Sample
from models.transaction import CATEGORIES


def expected_reason(sample: Sample, known_accounts: int) -> Optional[Reason]:
    """The reason the pipeline must give: the sample's own, or unknown_account."""
    if sample.expected_reason is not None:
        return sample.expected_reason
    return Reason.UNKNOWN_ACCOUNT if int(sample.key.decode()[4:]) >= known_accounts else None


async def produce(settings: Any, samples: Iterable[Sample], pace: Optional[tuple[int, float]] = None,
                  topic: Optional[str] = None) -> None:
    """Send samples keyed by account id; `pace=(n, s)` sleeps s seconds after every n."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap(settings.kafka_brokers), acks="all",
                                linger_ms=5)
    await producer.start()
    try:
        name = topic or settings.topic(settings.input_topics[0])
        for i, s in enumerate(samples, 1):
            await producer.send(name, s.value, key=s.key)
            if pace and i % pace[0] == 0:
                await asyncio.sleep(pace[1])
        await producer.flush()
    finally:
        await producer.stop()


def output_topics(settings: Any) -> list[str]:
    return [settings.sink_topic(c) for c in CATEGORIES] + [settings.topic(settings.dlq_topic)]


async def output_count(settings: Any) -> int:
    return sum((await message_counts(settings.kafka_brokers, output_topics(settings))).values())


async def forwarded(settings: Any) -> collections.Counter[str]:
    """How many times each event id is in the sink topics (checking its category's topic)."""
    seen: collections.Counter[str] = collections.Counter()
    for category in CATEGORIES:
        for record in await read_all(settings.kafka_brokers, settings.sink_topic(category)):
            body = orjson.loads(record.value)
            assert body["category"] == category
            assert record.key == body["account_id"].encode()
            assert dict(record.headers)["source-topic"].startswith(settings.topic_prefix.encode())
            seen[body["event_id"]] += 1
    return seen


async def dead_letter_topic(settings: Any) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in await read_all(settings.kafka_brokers,
                                                          settings.topic(settings.dlq_topic))]


def cql_rows(settings: Any, query: str) -> list[Any]:
    cluster = Cluster(list(settings.cql_hosts), port=settings.cql_port, protocol_version=4)
    try:
        return list(cluster.connect().execute(query.format(ks=settings.cql_keyspace), timeout=60))
    finally:
        cluster.shutdown()


def history_counts(settings: Any) -> tuple[collections.Counter[str], collections.Counter[str]]:
    """Rows per event id in history_by_event and in history_by_account."""
    by_event = collections.Counter(r.event_id for r in cql_rows(settings, "SELECT event_id FROM {ks}.history_by_event"))
    by_account = collections.Counter(r.event_id for r in cql_rows(
        settings, "SELECT event_id FROM {ks}.history_by_account"))
    return by_event, by_account


def stored_dead_letters(settings: Any) -> list[Any]:
    return cql_rows(settings, "SELECT * FROM {ks}.dead_letters")


def original_value(row: Any) -> bytes:
    return base64.b64decode(row.value_b64)


async def account_queries(settings: Any) -> int:
    """Calls of the accounts enrichment query in this test's database (pg_stat_statements)."""
    from app.adapters.postgres import Postgres

    pg = Postgres(settings)
    try:
        return await pg.enrichment_query_calls()
    finally:
        await pg.close()


async def seed_accounts(settings: Any, count: int) -> None:
    """Demo accounts acc-000000..acc-<count-1> in the test's database (existing ids kept)."""
    from app.adapters.postgres import Postgres

    pg = Postgres(settings)
    try:
        await pg.seed_demo_accounts(count)
    finally:
        await pg.close()
