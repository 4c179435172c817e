"""History writes as the agent makes them (app.adapters.history.HistoryStore.record_history, 500 rows
per call, two inserts per row sent as UNLOGGED BATCHes of APP_CQL_BATCH_ROWS rows), for
several batch sizes, each measured twice in alternation on the local stack. Client CPU (this
process) and server CPU (the CQL server's pid) per event: the evidence for the default of
APP_CQL_BATCH_ROWS.

    .venv/bin/python -m bench.cql_writes [--events 20000] [--sizes 1,8,16,32]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from app.adapters.cql import Cql
from app.adapters.history import HistoryStore
from app.adapters.rows import HistoryRow
from app.settings import Settings
from bench.pipeline import ROOT, proc_cpu, self_cpu, stack_env
from devtools.stores import drop_keyspace


def rows(n: int, seed: int) -> list[HistoryRow]:
    rng = random.Random(seed)
    now = datetime.now(timezone.utc)
    return [HistoryRow(account_id=f"acc-{rng.randrange(1000):06d}",
                       occurred_at=now - timedelta(seconds=rng.randrange(3600)),
                       event_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)), category="payment",
                       amount=Decimal("12.34"), currency="BRL", end_to_end_id="E0000", counterparty_key="k",
                       channel="API", customer_name="Cliente 1", segment="retail", risk_score=1,
                       source_topic="t", source_partition=0, source_offset=i, processed_at=now)
            for i in range(n)]


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--events", type=int, default=20_000)
    p.add_argument("--sizes", default="1,8,16,32", help="APP_CQL_BATCH_ROWS values to compare")
    p.add_argument("--chunk", type=int, default=500, help="rows per record_history call (the agent's batch)")
    args = p.parse_args()
    run = uuid.uuid4().hex[:8]
    env = {**stack_env(), "APP_ENV": "test", "APP_CQL_KEYSPACE": f"bcql{run}"}
    server = int((ROOT / ".stack" / "run" / "cassandra.pid").read_text().split()[0])
    sizes = [int(x) for x in args.sizes.split(",")]
    clients = {n: Cql(Settings.load({**env, "APP_CQL_BATCH_ROWS": str(n)})) for n in sizes}
    await clients[sizes[0]].migrate()
    try:
        for round_ in (1, 2):
            for n, cql in clients.items():
                data = rows(args.events, seed=round_ * 1000 + n)
                history = HistoryStore(cql)
                c0, s0, t0 = self_cpu(), proc_cpu(server), time.perf_counter()
                for i in range(0, len(data), args.chunk):
                    await history.record_history(data[i:i + args.chunk])
                wall = time.perf_counter() - t0
                print(f"batches of {n:3d} rows (round {round_})  {args.events / wall:8,.0f} events/s  client "
                      f"{(self_cpu() - c0) / args.events * 1e6:6.0f}  server "
                      f"{(proc_cpu(server) - s0) / args.events * 1e6:6.0f} CPU µs/event", flush=True)
    finally:
        drop_keyspace(clients[sizes[0]].settings)
        for cql in clients.values():
            await cql.close()


if __name__ == "__main__":
    os.chdir(ROOT)
    asyncio.run(main())
