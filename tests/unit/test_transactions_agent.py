"""The transactions agent's batch step with fake collaborators: one query per batch of misses,
history for good events only, outputs per category, dead letters with their reason, and the
isolation of an event whose enrichment raises what nobody foresaw."""
from __future__ import annotations

import asyncio
import dataclasses
from functools import partial
from types import SimpleNamespace
from typing import Any, Optional, Sequence

import orjson
import pytest

from agents import transactions
from app import batching
from app.outputs import Outputs
from app.settings import Settings
from domain.errors import PermanentError, Reason, Stage, TransientError
from app.commands.samples.transactions import samples
from domain.transactions import decode


class Accounts:
    def __init__(self, known: int, outages: int = 0) -> None:
        self.known, self.outages = known, outages
        self.queries: list[list[str]] = []

    async def get_accounts(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        self.queries.append(list(ids))
        if self.outages:
            self.outages -= 1
            raise TransientError("PostgreSQL: ConnectionRefusedError")
        return {i: {"customer_id": 1, "name": "Ana", "document": "***", "segment": "retail", "risk_score": 5,
                    "status": "active", "opened_at": None} for i in ids if int(i[4:]) < self.known}


class History:
    def __init__(self) -> None:
        self.rows: list[Any] = []

    async def record_history(self, rows: Sequence[Any]) -> None:
        self.rows.extend(rows)


class NoAvro:
    async def prefetch(self, values: Sequence[Optional[bytes]]) -> None:
        return None

    def decode(self, raw: bytes) -> Any:
        raise AssertionError("no Avro in these tests")


class Broker:
    def __init__(self) -> None:
        self.sent: list[tuple[str, int, bytes]] = []     # topic, source offset, value

    async def send(self, topic: str, key: Optional[bytes], value: Optional[bytes], headers: Any) -> Any:
        self.sent.append((topic, int(dict(headers)["source-offset"]), value or b""))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def event(offset: int, value: bytes) -> Any:
    return SimpleNamespace(message=SimpleNamespace(topic="transactions.raw", partition=0, offset=offset,
                                                   timestamp=1.7e9, key=b"k", value=value, headers=[]))


def deps(accounts: Accounts, cache: Optional[dict[str, Any]] = None) -> tuple[transactions.Collaborators, Broker,
                                                                                History]:
    broker, history = Broker(), History()
    outputs = Outputs(broker.send, dead_letter_topic="dlq", max_bytes=1_048_576)
    collaborators = transactions.Collaborators({} if cache is None else cache, accounts, history, NoAvro(), outputs,
                                               Settings(), lambda category: f"sink.{category}")
    return collaborators, broker, history


@pytest.fixture(autouse=True)
def _fast(no_backoff: None) -> None:
    """No real backoff in these tests."""


def test_a_batch_enriches_forwards_and_dead_letters_with_one_query_for_its_misses() -> None:
    data = samples(60, bad_ratio=0.2, accounts=120, seed=5)
    d, broker, history = deps(Accounts(known=100))
    events = [event(i, s.value) for i, s in enumerate(data)]
    asyncio.run(transactions.process_batch(events, deps=d))
    assert len(d.accounts.queries) == 1                     # type: ignore[attr-defined]
    by_offset = {offset: topic for topic, offset, _ in broker.sent}
    assert sorted(by_offset) == list(range(60)), "every event has exactly one output"
    for i, s in enumerate(data):
        unknown = s.expected_reason is None and int(s.key[4:]) >= 100
        bad = s.expected_reason is not None or unknown
        assert (by_offset[i] == "dlq") == bad, (i, s.expected_reason)
    assert {r.source_offset for r in history.rows} == {i for i, t in by_offset.items() if t != "dlq"}

    # The same batch again: the cache answers, no query.
    asyncio.run(transactions.process_batch(events, deps=d))
    assert len(d.accounts.queries) == 1                     # type: ignore[attr-defined]


def test_an_outage_of_postgres_waits_and_dead_letters_nothing() -> None:
    data = samples(10, bad_ratio=0.0, accounts=100, seed=6)
    d, broker, _ = deps(Accounts(known=100, outages=3))
    asyncio.run(transactions.process_batch([event(i, s.value) for i, s in enumerate(data)], deps=d))
    assert len(d.accounts.queries) == 4                     # type: ignore[attr-defined]
    assert all(topic.startswith("sink.") for topic, _, _ in broker.sent) and len(broker.sent) == 10


def test_an_event_whose_enrichment_raises_is_isolated_as_internal_error() -> None:
    class Poisoned(dict):                                   # type: ignore[type-arg]
        """A stored entry that no longer decodes; `get` reads through `__getitem__`, as a faust
        Table's (a Mapping) does."""
        def __getitem__(self, key: str) -> Any:
            if key == "acc-000007":
                raise OverflowError("date value out of range")
            return super().__getitem__(key)

        def get(self, key: str, default: Any = None) -> Any:
            try:
                return self[key]
            except KeyError:
                return default

    data = [s for s in samples(40, bad_ratio=0.0, accounts=100, seed=7)]
    data[3] = dataclasses.replace(data[3], value=orjson.dumps({**decode(data[3].value), "accountId": "acc-000007"}))
    d, broker, _ = deps(Accounts(known=100), cache=Poisoned())
    events = [event(i, s.value) for i, s in enumerate(data)]
    isolated: list[tuple[int, PermanentError]] = []

    async def isolate(e: Any, err: PermanentError) -> None:
        isolated.append((e.message.offset, err))
        await transactions.dead_letter(e, err, deps=d)

    asyncio.run(batching.process("transactions", events, partial(transactions.process_batch, deps=d), isolate))
    letters = [orjson.loads(v) for topic, _, v in broker.sent if topic == "dlq"]
    assert [(letter["source_offset"], letter["reason"], letter["stage"]) for letter in letters] == \
        [(3, Reason.INTERNAL_ERROR.value, "enrich")]
    assert "OverflowError: date value out of range" in letters[0]["error"]
    assert {o for t, o, _ in broker.sent if t != "dlq"} == set(range(40)) - {3}


def test_a_history_write_the_server_refuses_is_traced_to_its_event_and_the_rest_go_through() -> None:
    data = samples(16, bad_ratio=0.0, accounts=100, seed=8)
    refused_id = data[11].event_id

    class Refusing(History):
        async def record_history(self, rows: Sequence[Any]) -> None:
            if any(r.event_id == refused_id for r in rows):
                raise PermanentError(Stage.STORE, Reason.REJECTED_BY_DATABASE, "the CQL server refused the write")
            await super().record_history(rows)

    d, broker, _ = deps(Accounts(known=100))
    d = dataclasses.replace(d, history=Refusing())

    async def isolate(e: Any, err: PermanentError) -> None:
        await transactions.dead_letter(e, err, deps=d)

    events = [event(i, s.value) for i, s in enumerate(data)]
    asyncio.run(batching.process("transactions", events, partial(transactions.process_batch, deps=d), isolate))
    dead = [orjson.loads(v) for topic, _, v in broker.sent if topic == "dlq"]
    assert [(x["source_offset"], x["reason"]) for x in dead] == [(11, "rejected_by_database")]
    assert {r.event_id for r in d.history.rows} == {s.event_id for s in data} - {refused_id}  # type: ignore[attr-defined]
