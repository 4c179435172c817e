"""app/adapters/producer.py against aiokafka's own producer, accumulator and cluster metadata
(the producer not started: no broker needed; the metadata given as a broker's response)."""
from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError
from aiokafka.protocol.metadata import MetadataResponse_v0
from aiokafka.record.default_records import DefaultRecordBatch
from aiokafka.structs import TopicPartition

from app.adapters.producer import Appender, Producer, Queued
from app.tuning import key_partitioner

KEYS = [f"acc-{i:06d}".encode() for i in range(300)] + [None] * 20
HEADERS = [("source-topic", b"in"), ("source-partition", b"3"), ("source-offset", b"41")]


def aiokafka_producer(**kwargs: Any) -> AIOKafkaProducer:
    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1", linger_ms=60_000, partitioner=key_partitioner,
                                **kwargs)
    metadata(producer, {"sink": {p: 0 for p in range(8)}})
    return producer


def metadata(producer: AIOKafkaProducer, topics: dict[str, dict[int, int]]) -> None:
    """The cluster metadata as a broker's answer says it: topic -> partition -> leader (-1: none)."""
    producer.client.cluster.update_metadata(MetadataResponse_v0(
        brokers=[(0, "127.0.0.1", 1)],
        topics=[(0, topic, [(0, p, leader, [0], [0]) for p, leader in partitions.items()])
                for topic, partitions in topics.items()]))


def records(producer: AIOKafkaProducer) -> dict[TopicPartition, list[tuple[Any, bytes]]]:
    """What the accumulator holds: (key, value) per partition, in order."""
    out: dict[TopicPartition, list[tuple[Any, bytes]]] = {}
    for tp, batches in producer._message_accumulator._batches.items():
        for batch in batches:
            built = batch._builder._builder.build()      # the batch's bytes, read back as the broker would
            out.setdefault(tp, []).extend((r.key, r.value) for r in DefaultRecordBatch(bytes(built)))
    return out


def test_appended_records_go_where_send_puts_them_in_the_same_batches() -> None:
    async def run() -> None:
        by_send, by_append = aiokafka_producer(), aiokafka_producer()
        send_futures = [await by_send.send("sink", f"v{i}".encode(), key=k, headers=HEADERS)
                        for i, k in enumerate(KEYS) if k is not None]
        producer = Producer(SimpleNamespace(producer=SimpleNamespace(_producer=by_append)))
        append_futures = [await producer.send("sink", k, f"v{i}".encode(), HEADERS)
                          for i, k in enumerate(KEYS) if k is not None]
        assert records(by_append) == records(by_send)
        assert all(isinstance(f, asyncio.Future) and not f.done() for f in send_futures + append_futures)
        # all but the first record of each partition appended without `send` (it opens the batch)
        appender = producer._appender
        assert appender is not None and appender.producer is by_append
        fresh = aiokafka_producer()
        assert Appender(fresh).append("sink", b"acc-000001", b"v", HEADERS) is None, "no open batch: send it"
    asyncio.run(run())


def test_records_without_key_go_to_an_available_partition() -> None:
    async def run() -> None:
        producer = aiokafka_producer()
        metadata(producer, {"sink": {0: 0, 1: -1, 2: -1}})
        for _ in range(3):
            await producer.send("sink", b"opens", key=None, headers=HEADERS)
        appender = Appender(producer)
        assert {appender.append("sink", None, b"v", HEADERS) is not None for _ in range(30)} == {True}
        assert set(records(producer)) == {TopicPartition("sink", 0)}
    asyncio.run(run())


def test_new_metadata_is_followed() -> None:
    async def run() -> None:
        producer = aiokafka_producer()
        appender = Appender(producer)
        for p in range(8):
            await producer._message_accumulator.add_message(TopicPartition("sink", p), b"k", b"open", timeout=1)
        key = b"acc-000007"
        before = appender.append("sink", key, b"v", HEADERS)
        metadata(producer, {"sink": {p: 0 for p in range(3)}})      # the topic now seen with 3 partitions
        await producer.send("sink", b"opens", key=key, headers=HEADERS)
        assert appender.append("sink", key, b"v", HEADERS) is not None
        mine = {tp for tp, rs in records(producer).items() if (key, b"v") in rs}
        assert before is not None and len(mine) == 2, "the partition of 8, then the one of 3"
        assert TopicPartition("sink", key_partitioner(key, [0, 1, 2], [0, 1, 2])) in mine
        assert appender.append("unknown-topic", key, b"v", HEADERS) is None, "metadata to fetch: send it"
    asyncio.run(run())


def test_what_send_refuses_or_waits_for_is_left_to_send() -> None:
    async def run() -> None:
        producer = aiokafka_producer(max_request_size=2000, max_batch_size=1000)
        appender = Appender(producer)
        await producer.send("sink", b"opens", key=b"acc-000001", headers=HEADERS)
        with pytest.raises(MessageSizeTooLargeError):
            appender.append("sink", b"acc-000001", b"x" * 3000, HEADERS)
        while appender.append("sink", b"acc-000001", b"y" * 100, HEADERS) is not None:
            pass                                   # the open batch is full: None, `send` waits for room
        producer._message_accumulator._closed = True
        assert appender.append("sink", b"acc-000002", b"v", HEADERS) is None, "closing: send raises ProducerClosed"
    asyncio.run(run())


def test_a_producer_this_was_not_written_for_is_left_to_send() -> None:
    async def run() -> None:
        plain = aiokafka_producer()
        assert Appender.of(plain) is not None
        assert Appender.of(plain, version="0.15.0") is None
        assert Appender.of(aiokafka_producer(value_serializer=lambda v: v)) is None
        assert Appender.of(aiokafka_producer(transactional_id="t", enable_idempotence=True)) is None
    asyncio.run(run())


def test_a_queued_record_awaits_to_its_delivery_future() -> None:
    async def run() -> None:
        future = asyncio.get_running_loop().create_future()
        assert await Queued(future) is future and not future.done()
    asyncio.run(run())


def test_faust_sends_when_its_aiokafka_producer_is_not_running() -> None:
    sent: list[tuple[Any, ...]] = []

    async def send(*args: Any) -> str:
        sent.append(args)
        return "delivery"

    producer = Producer(SimpleNamespace(producer=SimpleNamespace(send=send)))
    assert asyncio.run(producer.send("sink", b"k", b"v", HEADERS)) == "delivery"
    assert sent == [("sink", b"k", b"v", None, None, HEADERS)]


def test_send_now_ends_the_linger_of_aiokafkas_open_batches() -> None:
    async def run() -> None:
        producer = aiokafka_producer()
        accumulator = producer._message_accumulator
        tps = [TopicPartition("sink", p) for p in range(3)]
        for tp in tps:
            await accumulator.add_message(tp, b"k", b"v", timeout=1)
        waiter = accumulator._waiter_future
        assert all(accumulator._batches[tp][0].remaining_linger() for tp in tps), "lingering"
        Producer(SimpleNamespace(producer=SimpleNamespace(_producer=producer))).send_now()
        assert all(accumulator._batches[tp][0].remaining_linger() is None for tp in tps), "ready to send"
        assert waiter.done(), "the sender woken"
        await accumulator.add_message(tps[0], b"k2", b"v2", timeout=1)
        assert len(accumulator._batches[tps[0]]) == 1, "a record queued before the sender takes the batch joins it"
        assert accumulator._batches[tps[0]][0].record_count == 2
        Producer(SimpleNamespace(producer=SimpleNamespace())).send_now()      # not started: no-op
    asyncio.run(run())


def test_a_producer_this_was_not_written_for_is_checked_once(monkeypatch: pytest.MonkeyPatch,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    async def run() -> None:
        plain = aiokafka_producer()
        await plain.send("sink", b"opens", key=b"acc-000001", headers=HEADERS)
        producer = Producer(SimpleNamespace(producer=SimpleNamespace(_producer=plain)))
        for _ in range(20):
            await producer.send("sink", b"acc-000001", b"v", HEADERS)
        assert producer._appender is None
        tp = TopicPartition("sink", key_partitioner(b"acc-000001", list(range(8)), list(range(8))))
        assert records(plain)[tp].count((b"acc-000001", b"v")) == 20, "all sent, through send"
    monkeypatch.setattr(Appender, "WRITTEN_FOR", "0.0.0")
    with caplog.at_level("WARNING", logger="app.adapters.producer"):
        asyncio.run(run())
    assert sum("not 0.0.0" in r.getMessage() for r in caplog.records) == 1, "one warning, not one per record"
