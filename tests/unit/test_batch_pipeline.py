"""Batches in flight at once (app/batching.py's Pipeline) with fakes: an ack never comes before
its batch is done, acks keep the order batches were taken in, a batch that escapes with an
error acks nothing after it, writes wait their turn, and the sales agent's later total wins."""
from __future__ import annotations

import asyncio
from decimal import Decimal
from functools import partial
from types import SimpleNamespace
from typing import Any, AsyncIterator, Sequence

import orjson
import pytest

from agents import sales
from app import batching
from app.batching import Pipeline, Progress


def event(offset: int, value: bytes = b"ok") -> Any:
    return SimpleNamespace(message=SimpleNamespace(topic="in", partition=offset % 2, offset=offset, value=value,
                                                   timestamp=1.0, key=b"k"))


def batch(k: int, size: int = 2) -> list[Any]:
    """Batch k: offsets k*size .. k*size+size-1."""
    return [event(k * size + i) for i in range(size)]


class Stream:
    """Records acks in the shared log."""

    def __init__(self, log: list[tuple[str, int]], batches: Sequence[list[Any]] = ()) -> None:
        self.log = log
        self.batches = list(batches)

    async def ack(self, e: Any) -> bool:
        self.log.append(("ack", e.message.offset))
        return True

    async def noack_take(self, size: int, within: float) -> AsyncIterator[list[Any]]:
        for b in self.batches:
            yield b
        await asyncio.Event().wait()          # a stream never ends by itself


class Gated:
    """A handle in two steps, as the sales agent's: a CPU step ("parse"), then, after
    `my_turn()`, a write ("store") that waits until the test opens that batch's gate."""

    def __init__(self, log: list[tuple[str, int]], turns: bool = True) -> None:
        self.log = log
        self.turns = turns
        self.gates: dict[int, asyncio.Event] = {}

    def gate(self, first_offset: int) -> asyncio.Event:
        return self.gates.setdefault(first_offset, asyncio.Event())

    async def __call__(self, events: Sequence[Any]) -> None:
        first = events[0].message.offset
        self.log.append(("parse", first))
        if self.turns:
            await batching.my_turn()
        await self.gate(first).wait()
        self.log.append(("store", first))


async def no_isolate(e: Any, err: Any) -> None:
    raise AssertionError(f"nothing is isolated here: {e.message.offset} {err}")


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def acks(log: list[tuple[str, int]]) -> list[int]:
    return [offset for what, offset in log if what == "ack"]


def test_the_next_batch_is_parsed_while_the_one_before_stores_and_nothing_is_acked_before_its_store() -> None:
    async def scenario() -> None:
        log: list[tuple[str, int]] = []
        handle = Gated(log)
        pipe = Pipeline("sales", Stream(log), handle, no_isolate, Progress(), depth=2)  # type: ignore[arg-type]
        await pipe.add(batch(0))                       # one in flight: add returns, the loop takes more
        adding = asyncio.ensure_future(pipe.add(batch(1)))
        await settle()
        assert not adding.done()                       # two in flight: the loop waits for the oldest
        assert log == [("parse", 0), ("parse", 2)]     # batch 1 parsed; its store waits its turn
        handle.gate(2).set()                           # batch 1's write may go, but not before batch 0's
        await settle()
        assert ("store", 2) not in log and acks(log) == []
        handle.gate(0).set()
        await adding
        await pipe.drain()
        assert log.index(("store", 0)) < log.index(("ack", 0)) < log.index(("store", 2)) < log.index(("ack", 2))
        assert acks(log) == [0, 1, 2, 3]
    asyncio.run(scenario())


def test_acks_keep_the_order_taken_when_a_later_batch_finishes_first() -> None:
    async def scenario() -> None:
        log: list[tuple[str, int]] = []
        handle = Gated(log, turns=False)               # writes that need no turn: they may overtake
        pipe = Pipeline("clicks", Stream(log), handle, no_isolate, Progress(), depth=3)  # type: ignore[arg-type]
        await pipe.add(batch(0))
        await pipe.add(batch(1))
        handle.gate(2).set()
        await settle()
        assert ("store", 2) in log and ("store", 0) not in log
        assert acks(log) == []                          # batch 1 is done, batch 0 is not: nothing acked
        handle.gate(0).set()
        await pipe.drain()
        assert acks(log) == [0, 1, 2, 3]
    asyncio.run(scenario())


class Bug(BaseException):
    """Escapes `process` (which isolates every Exception), as a bug in the loop would."""


def test_a_batch_that_escapes_with_an_error_acks_nothing_after_it_and_the_agent_is_marked_dead() -> None:
    log: list[tuple[str, int]] = []

    async def handle(events: Sequence[Any]) -> None:
        first = events[0].message.offset
        log.append(("parse", first))
        await batching.my_turn()
        if first == 2:
            await asyncio.sleep(0.01)
            raise Bug("in batch 1")
        log.append(("store", first))

    progress = Progress()

    async def ready() -> None:
        return None

    app = SimpleNamespace(resources=SimpleNamespace(ready=ready, progress=progress), rebalancing=False)
    stream = Stream(log, [batch(0), batch(1), batch(2), batch(3)])
    with pytest.raises(Bug):
        asyncio.run(batching.run(app, "sales", stream, handle, no_isolate, size=2,  # type: ignore[arg-type]
                                 within=0.1, fill=True, in_flight=3))
    assert acks(log) == [0, 1]                         # batch 0 only: nothing of batch 1 or later
    assert ("store", 4) not in log and ("store", 6) not in log     # later batches did not write
    assert "sales" in progress.dead and progress.unfinished() == []


def test_depth_one_processes_acks_and_only_then_takes_the_next() -> None:
    async def scenario() -> None:
        log: list[tuple[str, int]] = []
        handle = Gated(log)
        pipe = Pipeline("sales", Stream(log), handle, no_isolate, Progress(), depth=1)  # type: ignore[arg-type]
        adding = asyncio.ensure_future(pipe.add(batch(0)))
        await settle()
        assert not adding.done() and acks(log) == []
        handle.gate(0).set()
        await adding
        assert acks(log) == [0, 1]
    asyncio.run(scenario())


def test_cancelled_batches_in_flight_are_not_acked() -> None:
    async def scenario() -> None:
        log: list[tuple[str, int]] = []
        handle = Gated(log)
        pipe = Pipeline("sales", Stream(log), handle, no_isolate, Progress(), depth=2)  # type: ignore[arg-type]
        await pipe.add(batch(0))
        await settle()
        pipe.cancel()
        await settle()
        handle.gate(0).set()
        await settle()
        assert acks(log) == [] and ("store", 0) not in log
    asyncio.run(scenario())


def test_my_turn_outside_a_pipeline_returns_at_once() -> None:
    asyncio.run(asyncio.wait_for(batching.my_turn(), 1))


def test_progress_lists_every_batch_an_agent_has_in_flight() -> None:
    progress = Progress(clock=lambda: 5.0)
    with progress.batch("sales", [event(0)]):
        with progress.batch("sales", [event(1)]):
            assert {u.partition for u in progress.unfinished()} == {0, 1}
        assert {u.partition for u in progress.unfinished()} == {0}
    assert progress.unfinished() == []


def order(number: int, price: str) -> bytes:
    return orjson.dumps({"order_number": number, "items": [{"product_id": "p", "quantity": 1, "unit_price": price}]})


def test_sales_a_later_total_of_the_same_order_wins_even_when_the_earlier_upsert_is_slow() -> None:
    table: dict[int, Decimal] = {}
    calls: list[list[int]] = []

    async def save(rows: Sequence[tuple[int, Decimal]]) -> int:
        calls.append([n for n, _ in rows])
        if 1 in dict(rows) and dict(rows)[1] == Decimal("1.00"):
            await asyncio.sleep(0.05)                  # the first batch's upsert is slow
        table.update(rows)
        return len(rows)

    async def send(rejected: Any) -> None:
        raise AssertionError("no dead letters here")

    async def scenario() -> None:
        log: list[tuple[str, int]] = []
        handle = partial(sales.handle_batch, save=save, send=send)
        pipe = Pipeline("sales", Stream(log), handle, no_isolate, Progress(), depth=2)  # type: ignore[arg-type]
        await pipe.add([event(0, order(1, "1.00")), event(1, order(2, "2.00"))])
        await pipe.add([event(2, order(1, "9.00"))])      # a correction of order 1
        await pipe.drain()
        assert acks(log) == [0, 1, 2]
    asyncio.run(scenario())
    assert calls == [[1, 2], [1]]
    assert table == {1: Decimal("9.00"), 2: Decimal("2.00")}


def test_the_last_batch_is_acked_without_waiting_for_a_next_one() -> None:
    """An idle stream brings no next batch: the acks of the batches in flight must not wait for it."""
    async def scenario() -> None:
        log: list[tuple[str, int]] = []
        handle = Gated(log)
        pipe = Pipeline("sales", Stream(log), handle, no_isolate, Progress(), depth=4)  # type: ignore[arg-type]
        await pipe.add(batch(0))
        await pipe.add(batch(1))
        handle.gate(0).set()
        handle.gate(2).set()
        await settle()
        assert acks(log) == [0, 1, 2, 3]               # the loop never came back, yet all is acked
    asyncio.run(scenario())
