"""Topics for a run, and producing to them: the Kafka side of the harness."""
from __future__ import annotations

import asyncio
import time
from typing import Any, Iterable, Optional, Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import RecordMetadata

from app.kafka_tools import bootstrap
from models.transaction import CATEGORIES

# (key, value), or (key, value, partition): the partition of that record alone.
Record = Sequence[Any]


def output_topics(settings: Any) -> list[str]:
    """Every topic a transaction can end in: the sinks and the dead-letter topic."""
    return [settings.sink_topic(c) for c in CATEGORIES] + [settings.topic(settings.dlq_topic)]


async def create_topics(brokers: str, names: Iterable[str], partitions: int, replicas: int = 1) -> None:
    """Create topics as a worker would declare them, e.g. for a backlog sent before it starts."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap(brokers))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, partitions, replicas) for n in names])
    finally:
        await admin.close()


async def delete_topics(brokers: str, prefixes: Sequence[str]) -> int:
    """Delete every topic whose name starts with one of `prefixes`; returns how many."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap(brokers))
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(tuple(prefixes))]
        if names:
            await admin.delete_topics(names)
        return len(names)
    finally:
        await admin.close()


async def produce(brokers: str, topic: str, records: Iterable[Record], *, partition: Optional[int] = None,
                  pace: Optional[tuple[int, float]] = None, rate: Optional[float] = None,
                  **options: Any) -> list[RecordMetadata]:
    """Send the records in order (to `partition` unless a record names its own) and wait
    until every one is acknowledged; their metadata, in order. `pace=(n, s)` sleeps s
    seconds after every n; `rate`: events/s, paced in steps of 10 ms. `options` go to the
    producer (security settings, sizes); acks="all" and linger_ms=5 unless they say otherwise."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap(brokers), **{"acks": "all", "linger_ms": 5, **options})
    await producer.start()
    try:
        futures = []
        start = time.monotonic()
        for i, (key, value, *where) in enumerate(records):
            if rate and i % max(1, int(rate / 100)) == 0:
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            futures.append(await producer.send(topic, value, key=key, partition=where[0] if where else partition))
            if pace and (i + 1) % pace[0] == 0:
                await asyncio.sleep(pace[1])
        await producer.flush()
        return list(await asyncio.gather(*futures))
    finally:
        await producer.stop()
