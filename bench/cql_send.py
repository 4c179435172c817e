"""Client CPU of one history write request, two ways, alternated on the local stack: the app's
rounds (app/adapters/cql.py `_Round`) through the driver's `execute_async` (a ResponseFuture per
request: `driver`) or through `_Direct` (the app's path: `direct`). (A first version also timed the
bare `send_msg` of a pooled connection, the floor of the approach: 0.33x the driver's; git history.)

    .venv/bin/python -m bench.cql_send [--events 40000] [--rounds 3]
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from typing import Any


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
        cpu: dict[str, list[float]] = {"driver": [], "direct": []}
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
                await through_the_driver(cql, encoder, chunks, direct=way == "direct")
                used, wall = time.process_time() - c0, time.perf_counter() - t0
                cpu[way].append(used / args.events * 1e6)
                print(f"round {round_ + 1} {way:8s} {requests:,} requests of {size} rows: "
                      f"{used / requests * 1e6:6.1f} µs CPU per request, {used / args.events * 1e6:5.1f} µs CPU "
                      f"per event, {args.events / wall:7,.0f} events/s", flush=True)
        driver, direct = statistics.median(cpu["driver"]), statistics.median(cpu["direct"])
        print(f"medians, µs CPU per event (client, both history tables; row encoding not included): driver "
              f"{driver:.1f}, direct {direct:.1f}; direct / driver {direct / driver:.2f}x", flush=True)
    finally:
        await cql.close()
        drop_keyspace(settings)


if __name__ == "__main__":
    asyncio.run(main())
