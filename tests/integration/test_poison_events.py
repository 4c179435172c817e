"""One bad event never stops a pipeline: each unusual input that once stalled or was lost
ends as a dead letter with its reason, and events sent after it on the same partition and on
another come out within 10 s, with no restart. Oversized dead letters keep their bytes in
the store and replay them exactly."""
from __future__ import annotations

import asyncio
import hashlib
import time
from decimal import Decimal
from typing import Any, Optional

import orjson

from app.adapters.registry import SchemaRegistry
from app.avro import AvroCodec
from app.kafka_tools import read_all
from app.commands.samples.clicks import sample_clicks
from app.commands.samples.transactions import samples
from domain.transactions import decode
from models.avro_schemas import USER_CLICK
from tests.integration.clicks import history as click_history
from tests.integration.pipeline import cql_rows, forwarded, stored_dead_letters
from devtools.kafka import produce
from devtools.processes import wait_until
from tests.integration.test_sales import sales_table
from tests.integration.web import http, wait_ready

TOKEN = "poison-replay-token"
BIG = 900_000          # a legal Kafka value; its dead letter in base64 is not
WITHIN_S = 10.0


async def send(settings: Any, topic: str, records: list[tuple[int, Optional[bytes], bytes]]) -> float:
    """(partition, key, value) records, in order; returns when the last one was acknowledged."""
    await produce(settings.kafka_brokers, topic, [(key, value, partition) for partition, key, value in records],
                  linger_ms=0, max_request_size=2 * 1024 * 1024)
    return time.monotonic()


def letters_by_offset(settings: Any, topic: str) -> dict[tuple[int, int], Any]:
    return {(r.source_partition, r.source_offset): r for r in stored_dead_letters(settings) if r.source_topic == topic}


def raw_transaction(**changes: Any) -> bytes:
    good = samples(1, bad_ratio=0.0, accounts=1000, seed=501)[0]
    return orjson.dumps({**decode(good.value), **changes})


def test_poison_transactions_are_dead_lettered_and_the_partitions_go_on(workers: Any, settings: Any, accounts: int,
                                                                       event_loop_run: Any) -> None:
    worker = workers(APP_REPLAY_TOKEN=TOKEN).start()
    topic = settings.topic(settings.input_topics[0])
    warm = samples(20, bad_ratio=0.0, accounts=1000, seed=502)
    event_loop_run(send(settings, topic, [(0, s.key, s.value) for s in warm]))
    event_loop_run(wait_until(lambda: _forwarded(settings, {s.event_id for s in warm}), 60, "the warm-up events"))

    poison = {
        "timestamp_out_of_range": raw_transaction(occurredAt="0001-01-01T00:00:00+01:00"),
        "timestamp_out_of_range ": raw_transaction(occurredAt="9999-12-31T23:30:00-01:00"),
        "implausible_timestamp": raw_transaction(occurredAt="1970-01-02T00:00:00Z"),
        "control_character": raw_transaction(accountId="acc-00\u00000001"),
        "field_too_large": raw_transaction(description="x" * BIG),
    }
    big_but_valid = orjson.loads(raw_transaction(eventId="big-but-valid", notes="y" * BIG))
    after = samples(40, bad_ratio=0.0, accounts=1000, seed=503)
    records = [(0, b"acc-000001", value) for value in poison.values()]
    records += [(0, b"acc-000002", orjson.dumps(big_but_valid))]
    records += [(0, s.key, s.value) for s in after[:20]] + [(1, s.key, s.value) for s in after[20:]]
    sent_at = event_loop_run(send(settings, topic, records))
    expected = {s.event_id for s in after} | {"big-but-valid"}
    event_loop_run(wait_until(lambda: _forwarded(settings, expected), WITHIN_S, "the events behind the poison"))
    assert time.monotonic() - sent_at <= WITHIN_S + 1

    event_loop_run(wait_until(lambda: len(letters_by_offset(settings, topic)) >= len(poison), 30,
                              "every poison event's dead letter stored"))
    letters = letters_by_offset(settings, topic)
    assert sorted(r.reason for r in letters.values()) == sorted(k.strip() for k in poison)
    [big] = [r for r in letters.values() if r.reason == "field_too_large"]
    assert big.value_b64 is None, "the original bytes are kept apart, not in the letter"
    [payload] = cql_rows(settings, "SELECT value, value_sha256 FROM {ks}.dead_letter_payloads")
    original = poison["field_too_large"]
    assert payload.value == original and payload.value_sha256 == hashlib.sha256(original).hexdigest()
    assert http(worker, "/health").status == 200
    wait_ready(worker, event_loop_run, timeout=10)

    # Replay sends back the exact original bytes of the oversized letter.
    auth = {"Authorization": f"Bearer {TOKEN}"}
    reply = http(worker, "/dead-letters/replay?reason=field_too_large", "POST", auth)
    assert reply.status == 200 and reply.json()["replayed"] == 1, reply.text

    async def replayed() -> list[Any]:
        return [r for r in await read_all(settings.kafka_brokers, topic)
                if any(name == "replay-of" for name, _ in r.headers)]

    event_loop_run(wait_until(lambda: _nonempty(replayed()), 30, "the replayed record"))
    [record] = event_loop_run(replayed())
    assert hashlib.sha256(record.value).hexdigest() == hashlib.sha256(original).hexdigest()


def test_poison_sales_orders_are_dead_lettered_and_the_rest_saved(workers: Any, settings: Any,
                                                                 event_loop_run: Any) -> None:
    workers().start()
    topic = settings.topic(settings.sales_topic)

    def order(number: int, **extra: Any) -> bytes:
        return orjson.dumps({"order_number": number, "items": [{"product_id": "p", "quantity": 2,
                                                               "unit_price": "1.50"}], **extra})

    event_loop_run(send(settings, topic, [(0, b"1", order(1))]))
    event_loop_run(wait_until(lambda: _has_orders(settings, {1}), 60, "the warm-up order"))
    poison = {
        "timestamp_out_of_range": order(100, ordered_at="9999-12-31T23:30:00-01:00"),
        "timestamp_out_of_range ": order(101, ordered_at="0001-01-01T00:00:00+01:00"),
        "control_character": order(102, customer_id="c\u0000"),
        "field_too_large": order(103, customer_id="c" * BIG),
    }
    records = [(0, b"p", value) for value in poison.values()]
    records += [(0, str(n).encode(), order(n)) for n in range(200, 210)]
    records += [(1, str(n).encode(), order(n)) for n in range(300, 310)]
    event_loop_run(send(settings, topic, records))
    expected = set(range(200, 210)) | set(range(300, 310))
    event_loop_run(wait_until(lambda: _has_orders(settings, expected), WITHIN_S, "the orders behind the poison"))
    table = event_loop_run(sales_table(settings))
    assert not set(table) & {100, 101, 102, 103}, "no poison order saved"
    assert table[200] == Decimal("3.00")

    event_loop_run(wait_until(lambda: len(letters_by_offset(settings, topic)) >= len(poison), 30,
                              "every poison order's dead letter stored"))
    letters = letters_by_offset(settings, topic)
    assert sorted(r.reason for r in letters.values()) == sorted(k.strip() for k in poison)
    # The sales agent's letters carry their source position now, like the other agents'.
    dlq = event_loop_run(read_all(settings.kafka_brokers, settings.topic(settings.dlq_topic)))
    assert all(dict(r.headers).get("source-topic") == topic.encode() for r in dlq)


def test_an_oversized_non_avro_click_is_dead_lettered_and_later_clicks_stored(workers: Any, settings: Any,
                                                                            event_loop_run: Any) -> None:
    workers().start()
    topic = settings.topic(settings.clicks_topic)
    data = sample_clicks(30, users=10, urls=3, seed=7)

    async def encoded() -> list[bytes]:
        registry = SchemaRegistry(settings)
        try:
            codec = AvroCodec(registry, USER_CLICK)
            await codec.use_schema(topic, auto_register=True)
            return [codec.encode(d) for d in data]
        finally:
            await registry.close()

    values = event_loop_run(encoded())
    event_loop_run(send(settings, topic, [(0, b"u", values[0])]))
    event_loop_run(wait_until(lambda: len(click_history(settings)) >= 1, 60, "the warm-up click"))
    huge = b"{" + b"z" * BIG + b"}"
    records = [(0, b"u", huge)] + [(0, b"u", v) for v in values[1:15]] + [(1, b"u", v) for v in values[15:]]
    event_loop_run(send(settings, topic, records))
    distinct = len({(d["user_id"], d["timestamp"], d["url"]) for d in data})
    event_loop_run(wait_until(lambda: len(click_history(settings)) >= distinct, WITHIN_S,
                              "the clicks behind the oversized value"))
    event_loop_run(wait_until(lambda: len(letters_by_offset(settings, topic)) >= 1, 30, "its dead letter"))
    [letter] = letters_by_offset(settings, topic).values()
    assert letter.reason == "bad_magic_byte" and letter.value_b64 is None
    [payload] = cql_rows(settings, "SELECT value FROM {ks}.dead_letter_payloads")
    assert payload.value == huge


async def _forwarded(settings: Any, event_ids: set[str]) -> bool:
    return event_ids <= set(await forwarded(settings))


async def _has_orders(settings: Any, numbers: set[int]) -> bool:
    return numbers <= set(await sales_table(settings))


async def _nonempty(pending: "asyncio.Future[list[Any]] | Any") -> bool:
    return bool(await pending)
