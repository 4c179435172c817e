"""Client CPU of the history writes, the app's two ways, alternated on the local stack: its
HistoryStore.record_history (rows encoded, sent in UNLOGGED batches, every answer awaited) with
the direct writes (app/adapters/cql.py `EncodedBatch` sent by `_Direct`: `direct`) or with
APP_CQL_DIRECT_WRITES=false (the driver's BatchStatement of bound rows, `execute_async` and its
ResponseFuture per request: `driver`). Row encoding is included: it is part of either way.

    .venv/bin/python -m bench.cql_send [--events 40000] [--rounds 3]
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

from app.adapters.cql import Cql
from app.adapters.history import HistoryStore
from app.settings import Settings
from bench.cql_writes import rows
from bench.pipeline import stack_env
from devtools.stores import drop_keyspace

CHUNK = 500          # rows per record_history call, as the agent's batch


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--events", type=int, default=40_000)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    env = {**stack_env(), "APP_ENV": "test", "APP_CQL_KEYSPACE": f"bsend{uuid.uuid4().hex[:8]}"}
    ways = {way: Cql(Settings.load({**env, "APP_CQL_DIRECT_WRITES": str(way == "direct").lower()}))
            for way in ("driver", "direct")}
    settings = ways["direct"].settings
    await ways["direct"].migrate()
    try:
        stores = {way: HistoryStore(cql) for way, cql in ways.items()}
        for way, cql in ways.items():
            await stores[way].record_history(rows(8, seed=0))          # connected and prepared
            assert cql.sends_encoded_batches == (way == "direct"), way
        size = settings.cql_batch_rows
        cpu: dict[str, list[float]] = {way: [] for way in ways}
        for round_ in range(args.rounds):
            for way, store in stores.items():
                data = rows(args.events, seed=round_ * 10 + len(way))
                c0, t0 = time.process_time(), time.perf_counter()
                for i in range(0, len(data), CHUNK):
                    await store.record_history(data[i:i + CHUNK])
                used, wall = time.process_time() - c0, time.perf_counter() - t0
                requests = 2 * sum(-(-min(CHUNK, len(data) - i) // size) for i in range(0, len(data), CHUNK))
                cpu[way].append(used / args.events * 1e6)
                print(f"round {round_ + 1} {way:8s} {requests:,} requests of {size} rows: "
                      f"{used / requests * 1e6:6.1f} µs CPU per request, {used / args.events * 1e6:5.1f} µs CPU "
                      f"per event, {args.events / wall:7,.0f} events/s", flush=True)
        driver, direct = statistics.median(cpu["driver"]), statistics.median(cpu["direct"])
        print(f"medians, µs CPU per event (client, both history tables, row encoding included): driver "
              f"{driver:.1f}, direct {direct:.1f}; direct / driver {direct / driver:.2f}x", flush=True)
    finally:
        for cql in ways.values():
            await cql.close()
        drop_keyspace(settings)


if __name__ == "__main__":
    asyncio.run(main())
