"""History writes: the app's per-row writes (app.adapters.cql.Cql.record_history: two
execute_async per event, one asyncio future and one call_soon_threadsafe each) against
UNLOGGED BATCHes of rows, on the local stack. Client CPU (this process) and server CPU (the
CQL server's pid) per event; the evidence behind the first proposal of issue 7's benchmark.

    .venv/bin/python -m bench.cql_writes [--events 20000] [--batch 25]
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
from typing import Any

from cassandra.query import BatchStatement, BatchType

from app.adapters.cql import Cql
from app.settings import Settings
from bench.pipeline import ROOT, proc_cpu, self_cpu, stack_env


def rows(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    now = datetime.now(timezone.utc)
    return [{"account_id": f"acc-{rng.randrange(1000):06d}",
             "occurred_at": now - timedelta(seconds=rng.randrange(3600)),
             "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)), "category": "payment",
             "amount": Decimal("12.34"), "currency": "BRL", "end_to_end_id": "E0000", "counterparty_key": "k",
             "channel": "API", "customer_name": "Cliente 1", "segment": "retail", "risk_score": 1,
             "source_topic": "t", "source_partition": 0, "source_offset": i, "processed_at": now}
            for i in range(n)]


async def batched(cql: Cql, data: list[dict[str, Any]], size: int) -> None:
    """The proposal: the same two inserts per row, sent as UNLOGGED BATCHes of `size` rows
    (each batch one request), at most cql_concurrency batches in flight."""
    await cql.record_history(data[:1])                      # prepares both statements
    by_account, by_event = list(cql._prepared.values())[:2]
    batches = []
    for i in range(0, len(data), size):
        for stmt, cols in ((by_account, ("account_id", "occurred_at", "event_id", "category", "amount", "currency",
                                         "end_to_end_id", "counterparty_key", "channel", "customer_name",
                                         "segment", "risk_score", "source_topic", "source_partition",
                                         "source_offset", "processed_at")),
                           (by_event, ("event_id", "account_id", "occurred_at", "category", "amount",
                                       "source_topic", "source_partition", "source_offset", "processed_at"))):
            b = BatchStatement(batch_type=BatchType.UNLOGGED)
            for r in data[i:i + size]:
                b.add(stmt, tuple(r[c] for c in cols))
            batches.append(b)
    await asyncio.gather(*(cql.execute(b) for b in batches))


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--events", type=int, default=20_000)
    p.add_argument("--batch", type=int, default=25)
    p.add_argument("--chunk", type=int, default=500, help="rows per record_history call (the agent's batch)")
    args = p.parse_args()
    run = uuid.uuid4().hex[:8]
    settings = Settings.load({**stack_env(), "APP_ENV": "test", "APP_CQL_KEYSPACE": f"bcql{run}"})
    server = int((ROOT / ".stack" / "run" / "cassandra.pid").read_text().split()[0])
    cql = Cql(settings)
    await cql.migrate()
    try:
        for name in ("per-row (app)", f"unlogged batch of {args.batch}", "per-row (app)",
                     f"unlogged batch of {args.batch}"):
            data = rows(args.events, seed=hash(name) & 0xffff)
            c0, s0, t0 = self_cpu(), proc_cpu(server), time.perf_counter()
            for i in range(0, len(data), args.chunk):
                chunk = data[i:i + args.chunk]
                if name.startswith("per-row"):
                    await cql.record_history(chunk)
                else:
                    await batched(cql, chunk, args.batch)
            wall = time.perf_counter() - t0
            print(f"{name:24s} {args.events / wall:8,.0f} events/s  client {(self_cpu() - c0) / args.events * 1e6:6.0f}"
                  f"  server {(proc_cpu(server) - s0) / args.events * 1e6:6.0f} CPU µs/event", flush=True)
    finally:
        await cql.drop_keyspace()
        await cql.close()


if __name__ == "__main__":
    os.chdir(ROOT)
    asyncio.run(main())
