"""Client CPU of one history write request, three ways, alternated on the local stack: the app's
rounds (app/adapters/cql.py `_Round`) through the driver's `execute_async` (a ResponseFuture per
request: `driver`) or through `_Direct` (the app's path: `direct`), and the same UNLOGGED BATCH
messages handed to a pooled connection's `send_msg` with nothing else (`send_msg`: no routing,
no timeout, no classification of errors, the floor of the approach).

    .venv/bin/python -m bench.cql_send [--events 40000] [--rounds 3]
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time
import uuid
from typing import Any

from cassandra import ConsistencyLevel
from cassandra.protocol import BatchMessage, ResultMessage
from cassandra.query import BatchType

from app.adapters.cql import Cql, _Round
from app.adapters.history import HistoryEncoder
from app.adapters.rows import HISTORY_BY_ACCOUNT, HISTORY_BY_EVENT
from app.settings import Settings
from bench.cql_writes import rows
from bench.pipeline import stack_env
from devtools.stores import drop_keyspace

CHUNK = 500          # rows per record_history call, as the agent's batch


async def through_the_driver(cql: Cql, encoder: HistoryEncoder, chunks: list[list[tuple[Any, list[Any]]]],
                             direct: bool) -> None:
    """The app's rounds, with `_Direct` (as Cql.execute_all sends them) or without it."""
    session, loop = await cql.session(), asyncio.get_running_loop()
    for calls in chunks:
        batches = [(encoder.batch(statement, values), ()) for statement, values in calls]
        errors = await _Round(session, batches, cql.settings.cql_concurrency, loop,
                              cql._direct if direct else None).run(cql.settings.cql_timeout_s)
        if errors:
            raise errors[0]


async def through_send_msg(cql: Cql, chunks: list[list[tuple[Any, list[Any]]]], window: int) -> None:
    session = await cql.session()
    pool = next(iter(session._pools.values()))
    for calls in chunks:
        await _send_all(pool, session.client_protocol_handler, calls, window)


async def _send_all(pool: Any, handler: Any, calls: list[tuple[Any, list[Any]]], window: int) -> None:
    """Each call's batch sent, `window` in flight, the next sent from the answer of the last."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    left, lock, errors, pending = [len(calls)], threading.Lock(), [], iter(calls)

    def send() -> None:
        call = next(pending, None)
        if call is None:
            return
        statement, values = call
        message = BatchMessage(BatchType.UNLOGGED, [(True, statement.query_id, v) for v in values],
                               ConsistencyLevel.LOCAL_ONE)
        connection, request_id = pool.borrow_connection(timeout=2.0)

        def answered(response: Any) -> None:
            pool.return_connection(connection)
            if not isinstance(response, ResultMessage):
                errors.append(response)
            with lock:
                left[0] -= 1
                last = left[0] == 0
            if last:
                loop.call_soon_threadsafe(done.set_result, None)
            else:
                send()
        connection.send_msg(message, request_id, cb=answered, encoder=handler.encode_message,
                            decoder=handler.decode_message, result_metadata=None)

    for _ in range(min(window, len(calls))):
        send()
    await done
    if errors:
        raise RuntimeError(f"the CQL server refused a write: {errors[0]!r}")


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--events", type=int, default=40_000)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    settings = Settings.load({**stack_env(), "APP_ENV": "test", "APP_CQL_KEYSPACE": f"bsend{uuid.uuid4().hex[:8]}"})
    cql = Cql(settings)
    await cql.migrate()
    try:
        by_account = await cql.prepare(HISTORY_BY_ACCOUNT.insert(cql.keyspace))
        by_event = await cql.prepare(HISTORY_BY_EVENT.insert(cql.keyspace))
        encoder = HistoryEncoder.of(by_account, by_event)
        assert encoder is not None
        size = settings.cql_batch_rows
        cpu: dict[str, list[float]] = {"driver": [], "direct": [], "send_msg": []}
        for round_ in range(args.rounds):
            for way in cpu:
                data = rows(args.events, seed=round_ * 10 + len(way))
                chunks = []
                for i in range(0, len(data), CHUNK):
                    calls: list[tuple[Any, list[Any]]] = []
                    for statement, values in encoder.encode(data[i:i + CHUNK]):
                        calls.extend((statement, values[j:j + size]) for j in range(0, len(values), size))
                    chunks.append(calls)
                requests = sum(len(c) for c in chunks)
                c0, t0 = time.process_time(), time.perf_counter()
                if way in ("driver", "direct"):
                    await through_the_driver(cql, encoder, chunks, direct=way == "direct")
                else:
                    await through_send_msg(cql, chunks, settings.cql_concurrency)
                used, wall = time.process_time() - c0, time.perf_counter() - t0
                cpu[way].append(used / args.events * 1e6)
                print(f"round {round_ + 1} {way:8s} {requests:,} requests of {size} rows: "
                      f"{used / requests * 1e6:6.1f} µs CPU per request, {used / args.events * 1e6:5.1f} µs CPU "
                      f"per event, {args.events / wall:7,.0f} events/s", flush=True)
        driver, direct, bare = (statistics.median(cpu[way]) for way in ("driver", "direct", "send_msg"))
        print(f"medians, µs CPU per event (client, both history tables; row encoding not included): driver "
              f"{driver:.1f}, direct {direct:.1f}, send_msg {bare:.1f}; direct / driver {direct / driver:.2f}x, "
              f"send_msg / driver {bare / driver:.2f}x", flush=True)
    finally:
        await cql.close()
        drop_keyspace(settings)


if __name__ == "__main__":
    asyncio.run(main())
