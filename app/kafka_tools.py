"""Small Kafka helpers: counting and reading topics outside the worker (reports, the lag probe;
the tests and benchmarks too), and a partition's end as the worker's consumer last heard it."""
from __future__ import annotations

from typing import Any, Iterable, Optional

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition


def highwater(consumer: Any, tp: Any) -> Optional[int]:
    """The broker's end of a partition as faust's consumer last heard it (a fetch response's
    high watermark); None when no fetch has answered for it yet."""
    try:
        high = consumer.highwater(tp)
    except Exception:  # noqa: BLE001 - no figure yet: the callers' rules without it
        return None
    return high if isinstance(high, int) else None


def bootstrap(brokers: str) -> str:
    """faust's kafka://h1:p1;h2:p2 form to aiokafka's h1:p1,h2:p2."""
    return ",".join(part.split("://", 1)[-1] for part in brokers.replace(";", ",").split(","))


async def message_counts(brokers: str, topics: Iterable[str], **auth: Any) -> dict[str, int]:
    """Messages currently in each topic (end offset minus beginning offset, all partitions).
    `auth`: aiokafka security options (app.kafka_security.aiokafka_auth)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap(brokers), enable_auto_commit=False, **auth)
    await consumer.start()
    try:
        counts = {}
        for topic in topics:
            partitions = consumer.partitions_for_topic(topic) or set()
            if not partitions:
                await consumer._client.force_metadata_update()
                partitions = consumer.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in partitions]
            if not tps:
                counts[topic] = 0
                continue
            ends = await consumer.end_offsets(tps)
            starts = await consumer.beginning_offsets(tps)
            counts[topic] = sum(ends[tp] - starts[tp] for tp in tps)
        return counts
    finally:
        await consumer.stop()


async def read_all(brokers: str, topic: str, timeout_s: float = 10.0, **auth: Any) -> list[ConsumerRecord]:
    """Every message now in `topic`, from the beginning to the end offsets seen at the start."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap(brokers), enable_auto_commit=False,
                                auto_offset_reset="earliest", **auth)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not tps:
            return []
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        remaining = {tp for tp in tps if ends[tp] > 0}
        out: list[ConsumerRecord] = []
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=int(timeout_s * 1000))
            if not batch:
                raise TimeoutError(f"{topic}: no data within {timeout_s}s, expected up to {ends}")
            for tp, records in batch.items():
                out.extend(records)
                if records and records[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
        return out
    finally:
        await consumer.stop()
