"""The sales agent's batch step with fake PostgreSQL and broker: retries, refusals, cancellation."""
from __future__ import annotations

import asyncio
from functools import partial
from decimal import Decimal
from types import SimpleNamespace
from typing import Any, Sequence

import orjson
import pytest

from agents import sales
from app import batching
from domain.errors import PermanentError, Reason, Stage, TransientError


def event(offset: int, value: bytes) -> Any:
    message = SimpleNamespace(topic="sales.orders", partition=0, offset=offset, timestamp=1.0, key=b"k",
                              value=value)
    return SimpleNamespace(message=message)


def order(number: int, price: str = "1.00") -> bytes:
    item = {"product_id": "p", "quantity": 2, "unit_price": price}
    return orjson.dumps({"order_number": number, "items": [item]})


class FakeDatabase:
    def __init__(self, outages: int = 0, refuse: frozenset[int] = frozenset()) -> None:
        self.outages = outages
        self.refuse = refuse
        self.calls: list[list[tuple[int, Decimal]]] = []
        self.table: dict[int, Decimal] = {}

    async def save(self, rows: Sequence[tuple[int, Decimal]]) -> int:
        self.calls.append(list(rows))
        if self.outages:
            self.outages -= 1
            raise TransientError("PostgreSQL: ConnectionRefusedError")
        if any(n in self.refuse for n, _ in rows):
            raise PermanentError(Stage.STORE, Reason.REJECTED_BY_DATABASE, "numeric field overflow")
        self.table.update(rows)
        return len(rows)


class FakeDeadLetters:
    def __init__(self) -> None:
        self.sent: list[tuple[int, Reason]] = []

    async def send(self, rejected: Any) -> None:
        self.sent.extend((e.message.offset, err.reason) for e, err in rejected)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_one_upsert_per_batch_bad_orders_dead_lettered_rest_saved() -> None:
    db, dlq = FakeDatabase(), FakeDeadLetters()
    events = [event(0, order(1)), event(1, b"{oops"), event(2, order(2, "-1")), event(3, order(1, "3.00")),
              event(4, order(3))]
    run(sales.handle_batch(events, save=db.save, send=dlq.send))
    assert db.calls == [[(1, Decimal("6.00")), (3, Decimal("2.00"))]]      # one round trip, last one wins
    assert dlq.sent == [(1, Reason.UNDECODABLE), (2, Reason.INVALID_PRICE)]


def test_outage_is_retried_until_saved(monkeypatch: pytest.MonkeyPatch,
                                       caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr("app.retry.asyncio.sleep", _no_sleep)
    db, dlq = FakeDatabase(outages=5), FakeDeadLetters()
    with caplog.at_level("WARNING"):
        run(sales.handle_batch([event(0, order(1))], save=db.save, send=dlq.send))
    assert len(db.calls) == 6
    assert db.table == {1: Decimal("2.00")}
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages          # one when it goes away, one when it is back
    assert "unavailable" in messages[0] and "available again" in messages[1]


def test_a_refused_batch_is_split_and_only_the_refused_order_dead_lettered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("app.batching.asyncio.sleep", _no_sleep)
    db, dlq = FakeDatabase(refuse=frozenset({2})), FakeDeadLetters()

    async def isolate(e: Any, err: PermanentError) -> None:
        await dlq.send([(e, err)])

    events = [event(n, order(n + 1)) for n in range(7)]
    run(batching.process("sales", events, partial(sales.handle_batch, save=db.save, send=dlq.send), isolate))
    assert db.table == {n: Decimal("2.00") for n in (1, 3, 4, 5, 6, 7)}
    assert dlq.sent == [(1, Reason.REJECTED_BY_DATABASE)]
    assert len(db.calls) <= 2 * len(events), "bounded: at most 2n attempts"


def test_an_order_that_cannot_be_converted_to_utc_is_dead_lettered_not_raised() -> None:
    db, dlq = FakeDatabase(), FakeDeadLetters()
    bad = orjson.dumps({"order_number": 5, "ordered_at": "9999-12-31T23:30:00-01:00",
                        "items": [{"product_id": "p", "quantity": 1, "unit_price": "1.00"}]})
    run(sales.handle_batch([event(0, order(1)), event(1, bad)], save=db.save, send=dlq.send))
    assert db.table == {1: Decimal("2.00")}
    assert dlq.sent == [(1, Reason.TIMESTAMP_OUT_OF_RANGE)]


def test_cancelled_during_an_outage_raises_so_the_batch_is_not_acked() -> None:
    db, dlq = FakeDatabase(outages=10**9), FakeDeadLetters()

    async def scenario() -> None:
        task = asyncio.ensure_future(sales.handle_batch([event(0, order(1))], save=db.save, send=dlq.send))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(scenario())
    assert db.table == {} and dlq.sent == []


_real_sleep = asyncio.sleep


async def _no_sleep(_: float) -> None:
    await _real_sleep(0)
