"""Sales rows/s into PostgreSQL, measured alone: a backlog of orders, one worker, first -> last upsert.

bench/pipeline.py's sales phase runs inside its `extras` (after the whole txpipe pipeline) and
produces while the worker consumes; this one produces every order first into a fresh topic
(fresh database, topic prefix and keyspace per run), then starts one `faust -A app.main worker`
and waits for every order number's row. Figures per run:

- rows/s between the first and the last upsert (`processed_at` is the upsert's transaction
  time), as the pipeline bench computes it, and upserts / rows per upsert;
- from the worker's /metrics: the time spent inside `save_order_totals` (sum of the
  histogram) against that span, i.e. how much of the span the upserts themselves fill, and
  the batches the agent took;
- the worker's CPU seconds per second from the first row seen to the last (1.0: one core busy),
  and its CPU µs per row in that window: on a shared machine the worker often gets less than a
  core, and CPU per row is the steadier figure;
- `--upserts-only`: the same rows upserted straight from this process through the adapter
  (100 rows per upsert, serial and `--inflight` at a time), no Kafka, no faust: the database's
  own ceiling on this machine right now.

Run it from each worktree in turn (it times the code beside it), alternating:

    .venv/bin/python -m bench.sales_rate --orders 40000 --runs 3
"""
from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from app.adapters.cql import Cql
from app.adapters.postgres import Postgres
from app.commands.samples.sales import order_samples
from app.settings import Settings
from bench.pipeline import Worker, proc_cpu, close_offsets, create_topics, free_port, produce, stack_env
from bench.backlog_start import _clean_up
from devtools.processes import stack_lock
from devtools.stores import create_database, seed_accounts
from domain.sales import order_totals, parse_order


def scrape(port: int) -> dict[str, float]:
    """The worker's save_order_totals time and sales batches, from /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out = {}
    for name, pattern in (("upsert_s", r'pipeline_postgres_seconds_sum\{[^}]*save_order_totals[^}]*\} (\S+)'),
                          ("upserts", r'pipeline_postgres_seconds_count\{[^}]*save_order_totals[^}]*\} (\S+)'),
                          ("batches", r'pipeline_batch_size_count\{[^}]*agent="sales"[^}]*\} (\S+)')):
        m = re.search(pattern, text)
        out[name] = float(m.group(1)) if m else float("nan")
    return out


async def upserts_only(settings: Settings, orders: list[Any], inflight: int) -> dict[str, float]:
    """The orders' rows, 100 per upsert, straight through the adapter: serial, then `inflight`
    upserts at a time (distinct order numbers per upsert, as partitions give the agent)."""
    rows = order_totals(parse_order(o.value) for o in orders)
    chunks = [rows[i:i + 100] for i in range(0, len(rows), 100)]
    pg = Postgres(settings)
    out = {}
    try:
        for label, width in (("serial", 1), (f"x{inflight}", inflight)):
            conn = await asyncpg.connect(settings.postgres_dsn)
            await conn.execute("TRUNCATE sales")
            await conn.close()
            queue = list(chunks)
            t0 = time.monotonic()

            async def lane(queue: list[list[Any]] = queue) -> None:
                while queue:
                    await pg.save_order_totals(queue.pop())
            await asyncio.gather(*(lane() for _ in range(width)))
            out[label] = len(rows) / (time.monotonic() - t0)
    finally:
        await pg.close()
    return out


async def once(orders_n: int, upserts: bool, inflight: int, extra_env: dict[str, str]) -> dict[str, float]:
    with stack_lock():
        return await _once(orders_n, upserts, inflight, extra_env)


async def _once(orders_n: int, upserts: bool, inflight: int, extra_env: dict[str, str]) -> dict[str, float]:
    run = uuid.uuid4().hex[:8]
    base = stack_env()
    admin = base["APP_POSTGRES_DSN"].rsplit("/", 1)[0]
    db, tmp = f"backlog_{run}", Path(f"/tmp/salesrate-{run}")
    await create_database(base["APP_POSTGRES_DSN"], db)
    port = free_port()
    env = {**os.environ, **base, "APP_POSTGRES_DSN": f"{admin}/{db}", "APP_ENV": "test",
           "APP_ID": f"backlog-{run}", "APP_TOPIC_PREFIX": f"k{run}.", "APP_CQL_KEYSPACE": f"k{run}",
           "APP_DATA_DIR": str(tmp / "data"), "APP_WEB_PORT": str(port), **extra_env}
    settings = Settings.load(env)
    cql = Cql(settings)
    worker = None
    try:
        await seed_accounts(settings, 10, migrate=True)
        await cql.migrate()
        orders = order_samples(orders_n, bad_ratio=0, seed=13)
        expected = len({o.order_number for o in orders})
        r: dict[str, float] = {}
        if upserts:
            r.update(await upserts_only(settings, orders, inflight))
            conn = await asyncpg.connect(settings.postgres_dsn)
            await conn.execute("TRUNCATE sales")
            await conn.close()
        src = settings.topic(settings.sales_topic)
        await create_topics(settings.kafka_brokers, [src])
        await produce(settings.kafka_brokers, src, [(o.key, o.value) for o in orders])
        tmp.mkdir(parents=True, exist_ok=True)
        worker = Worker(env, tmp / "worker.log", "uvloop").start()
        t0 = time.monotonic()
        await worker.wait_ready()
        conn = await asyncpg.connect(settings.postgres_dsn)
        cpu0 = None
        try:
            while (n := await conn.fetchval("SELECT count(*) FROM sales")) < expected:
                if n and cpu0 is None:
                    cpu0, c0, n0 = proc_cpu(worker.pid), time.monotonic(), n
                if time.monotonic() - t0 > 300:
                    raise TimeoutError(f"sales: {n} of {expected} rows")
                await asyncio.sleep(0.2)
            wall = time.monotonic() - t0
            cpu = ((proc_cpu(worker.pid) - cpu0, time.monotonic() - c0, expected - n0) if cpu0 is not None
                   else (float("nan"), 1.0, 1))
            upserted = await conn.fetch("SELECT processed_at, count(*) AS n FROM sales GROUP BY 1 ORDER BY 1")
        finally:
            await conn.close()
        span = (upserted[-1]["processed_at"] - upserted[0]["processed_at"]).total_seconds()
        m = scrape(port)
        rate = (expected - upserted[0]["n"]) / span if span > 0 else float("inf")
        r.update({"rows": expected, "rows_per_s": rate,
                  "span_s": span, "wall_s": wall, "upserts": len(upserted), "rows_per_upsert": expected / len(upserted),
                  "upsert_share": m["upsert_s"] / span if span > 0 else float("nan"),
                  "upsert_ms": 1000 * m["upsert_s"] / m["upserts"], "batches": m["batches"],
                  "worker_cpu_share": cpu[0] / cpu[1], "cpu_us_per_row": 1e6 * cpu[0] / cpu[2],
                  "load_1m": os.getloadavg()[0]})
        print(f"run {run}: " + ", ".join(f"{k} {v:,.3f}" if isinstance(v, float) else f"{k} {v:,}"
                                         for k, v in r.items()), flush=True)
        return r
    finally:
        if worker is not None:
            worker.stop()
        await _clean_up(settings, cql, run)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--orders", type=int, default=40_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--upserts-only", action="store_true",
                   help="also upsert the rows straight through the adapter first (no Kafka, no faust)")
    p.add_argument("--inflight", type=int, default=4, help="upserts at a time for --upserts-only's second figure")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="extra settings of the worker")
    args = p.parse_args()
    extra = dict(item.split("=", 1) for item in args.env)

    async def runs() -> None:
        try:
            results = [await once(args.orders, args.upserts_only, args.inflight, extra) for _ in range(args.runs)]
        finally:
            await close_offsets()
        for key in ("rows_per_s", "cpu_us_per_row", "worker_cpu_share", "upsert_share", "upsert_ms",
                    "rows_per_upsert", "serial", f"x{args.inflight}"):
            values = [r[key] for r in results if key in r]
            if values:
                print(f"median {key}: {statistics.median(values):,.3f} (runs: "
                      f"{', '.join(f'{v:,.1f}' for v in values)})", flush=True)

    asyncio.run(runs())


if __name__ == "__main__":
    main()
