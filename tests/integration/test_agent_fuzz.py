"""Fuzzing the agents' batch processing against the real stack (PostgreSQL, the CQL server,
the registry, the broker): arbitrary values and real events with fields replaced by strings,
numbers, extreme dates, control characters and huge strings go through the transactions and
sales batch steps and app/batching.py; every batch completes, and every event ends either
forwarded (or saved) or dead-lettered, with a reason code."""
from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from functools import partial
from types import SimpleNamespace
from typing import Any, Iterator, Optional

import pytest
from aiokafka import AIOKafkaProducer
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from agents import sales, transactions
from app import batching
from app.adapters.cql import Cql
from app.adapters.dead_letter_store import DeadLetterStore
from app.adapters.history import HistoryStore
from app.adapters.postgres import Postgres
from app.adapters.registry import SchemaRegistry
from app.avro import AvroCodec
from app.kafka_tools import bootstrap
from devtools.kafka import create_topics
from app.outputs import Headers, Outputs
from domain.errors import PermanentError
from domain.sales import parse_order
from app.commands.samples.transactions import samples
from domain.transactions import FIELD_MAP, decode
from models.avro_schemas import RAW_TRANSACTION
from models.transaction import CATEGORIES

EXTREME_DATES = ["0001-01-01T00:00:00+01:00", "9999-12-31T23:30:00-01:00", "1969-12-31T23:59:59Z",
                 "2999-01-01T00:00:00Z", "2026-02-30T10:00:00Z", "2026-11-22T10:00:00", 2**63, -1, 0]
strings = st.one_of(st.text(max_size=40), st.text(alphabet=st.characters(max_codepoint=0x1f), max_size=5),
                    st.sampled_from(["acc-00\x000001", "\ud800", "x" * 300, "y" * 120_000, ""]))
values = st.one_of(strings, st.integers(min_value=-2**70, max_value=2**70), st.floats(allow_nan=True),
                   st.booleans(), st.none(), st.sampled_from(EXTREME_DATES),
                   st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
REAL = [decode(s.value) for s in samples(50, bad_ratio=0.0, accounts=1000, seed=777)]


def as_json(value: Any) -> bytes:
    """The standard library's encoder: it writes what orjson refuses (lone surrogates, integers
    beyond 64 bits), as an upstream producer in another language might."""
    return json.dumps(value, default=str).encode()


def mutated_event() -> st.SearchStrategy[bytes]:
    names = sorted(set(FIELD_MAP.values()) | set(REAL[0]))
    return st.builds(lambda base, changes: as_json({**base, **changes}),
                     st.sampled_from(REAL), st.dictionaries(st.sampled_from(names), values, max_size=4))


raw_values = st.one_of(mutated_event(), st.binary(max_size=200), st.builds(as_json, values),
                       st.just(b"\x00\x00\x00\x00\x01garbage"))
FUZZ = hypothesis_settings(max_examples=30, deadline=None, derandomize=True,
                           suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                                  HealthCheck.data_too_large])


class RecordingBroker:
    """A real producer whose sends are also noted by source offset."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer
        self.sent: dict[int, list[str]] = {}

    async def send(self, topic: str, key: Optional[bytes], value: Optional[bytes], headers: Headers) -> Any:
        future = await self.producer.send(topic, value, key=key, headers=headers)
        self.sent.setdefault(int(dict(headers)["source-offset"]), []).append(topic)
        return future


@pytest.fixture
def real(settings: Any, accounts: int, event_loop_run: Any) -> Iterator[SimpleNamespace]:
    async def start() -> SimpleNamespace:
        topics = [settings.sink_topic(c) for c in CATEGORIES] + [settings.topic(settings.dlq_topic)]
        await create_topics(settings.kafka_brokers, topics, 1)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap(settings.kafka_brokers), acks="all",
                                    max_request_size=settings.kafka_max_request_bytes)
        await producer.start()
        cql = Cql(settings)
        await cql.migrate()
        registry = SchemaRegistry(settings)
        return SimpleNamespace(producer=producer, cql=cql, postgres=Postgres(settings), registry=registry,
                               broker=RecordingBroker(producer), avro=AvroCodec(registry, RAW_TRANSACTION))

    parts = event_loop_run(start())
    parts.outputs = Outputs(parts.broker.send, dead_letter_topic=settings.topic(settings.dlq_topic),
                            max_bytes=settings.max_output_bytes, payloads=DeadLetterStore(parts.cql))
    yield parts

    async def stop() -> None:
        await parts.producer.stop()
        await parts.cql.close()
        await parts.postgres.close()
        await parts.registry.close()
    event_loop_run(stop())


def events_of(raws: list[bytes], topic: str) -> list[Any]:
    return [SimpleNamespace(message=SimpleNamespace(topic=topic, partition=0, offset=i, timestamp=1.7e9,
                                                    key=b"acc-000001", value=raw, headers=[]))
            for i, raw in enumerate(raws)]


def isolated_into(outputs: Outputs) -> Any:
    async def isolate(event: Any, error: PermanentError) -> None:
        await outputs.delivered([await outputs.dead_letter(event.message, error)])
    return isolate


def test_transactions_batches_always_complete_and_every_event_ends_somewhere(
        real: SimpleNamespace, settings: Any, event_loop_run: Any) -> None:
    deps = transactions.Collaborators({}, real.postgres, HistoryStore(real.cql), real.avro, real.outputs, settings,
                                      settings.sink_topic)
    dlq = settings.topic(settings.dlq_topic)

    @FUZZ
    @given(st.lists(raw_values, min_size=1, max_size=12))
    def check(raws: list[bytes]) -> None:
        real.broker.sent.clear()
        events = events_of(raws, settings.topic("transactions.raw"))
        handle = partial(transactions.process_batch, deps=deps)
        event_loop_run(asyncio.wait_for(batching.process("transactions", events, handle,
                                                         isolated_into(real.outputs)), 60))
        for event in events:
            out = real.broker.sent.get(event.message.offset)
            assert out, f"event {event.message.offset} ended nowhere: {event.message.value[:200]!r}"
            assert all(topic == dlq or topic in {settings.sink_topic(c) for c in CATEGORIES} for topic in out)

    check()


def test_sales_batches_always_complete_and_every_order_is_saved_or_dead_lettered(
        real: SimpleNamespace, settings: Any, event_loop_run: Any) -> None:
    order_fields = st.fixed_dictionaries({}, optional={
        "order_number": st.one_of(st.integers(min_value=-5, max_value=2**33), values),
        "customer_id": values, "ordered_at": values,
        "items": st.one_of(values, st.lists(st.fixed_dictionaries({}, optional={
            "product_id": values, "quantity": st.one_of(st.integers(-2, 2**40), values),
            "unit_price": st.one_of(st.decimals(allow_nan=False, places=3).map(str), values)}), max_size=3)),
    })
    orders = st.one_of(order_fields.map(as_json), st.binary(max_size=100))

    @FUZZ
    @given(st.lists(orders, min_size=1, max_size=12))
    def check(raws: list[bytes]) -> None:
        real.broker.sent.clear()
        saved: list[tuple[int, Decimal]] = []

        async def save(rows: Any) -> int:
            count = await real.postgres.save_order_totals(rows)
            saved.extend(rows)
            return count

        async def send(rejected: Any) -> None:
            await real.outputs.delivered([await real.outputs.dead_letter(e.message, err) for e, err in rejected])

        events = events_of(raws, settings.topic(settings.sales_topic))
        event_loop_run(asyncio.wait_for(batching.process(
            "sales", events, partial(sales.handle_batch, save=save, send=send), isolated_into(real.outputs)), 60))
        saved_numbers = {n for n, _ in saved}
        for event in events:
            if event.message.offset in real.broker.sent:
                continue                       # dead-lettered
            number = parse_order(event.message.value).order_number   # not dead-lettered: must be valid
            assert number in saved_numbers, f"order at {event.message.offset} ended nowhere"

    check()
