"""The account cache's change feed (issue 16): change lag under load, and the pipeline's cost with the
feed on and off, in one run on the local stack (scripts/stack up, Connect included).

    .venv/bin/python -m bench.cache_changes [--changes 1000] [--rate 1000] [--change-rate 100]

Two passes, each with its own database (1,000 demo accounts), topic prefix, consumer group and
worker: CDC off (TTL only) and CDC on (its own Debezium connector and slot, devtools/connect.py).
Each pass warms the cache (every account looked up once), then produces transactions at --rate
events/s while it updates --changes accounts' status in PostgreSQL at --change-rate per second
(one transaction each), and waits for every event's output. The same events and updates in both
passes.

Change lag: commit time in PostgreSQL (the change record's source.ts_ms) to the moment the worker
applied it (the `changed_at` its accounts-cache entry carries, read back from the table's
changelog topic), joined on the LSN; both clocks are this machine's. Cost: the worker's CPU
(utime+stime from /proc) over the loaded part of the pass, per event; the ratio of the two passes
is the figure to trust on a shared machine (absolute figures move with the neighbours' load).
--rounds passes per mode, alternating which mode goes first; medians reported. Prints its
figures; --out writes them to a file too (bench/results/issue16-cache-changes.txt).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import asyncpg
import orjson

from app.commands.samples.transactions import raw_event, samples
from app.kafka_tools import message_counts, read_all
from app.settings import Settings
from devtools import connect, kafka
from devtools.kafka import delete_topics
from devtools.processes import Worker, free_port, stack_env, stack_lock, wait_until
from devtools.stores import create_database, drop_database, drop_keyspace, seed_accounts

ACCOUNTS = 1000


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def outputs(settings: Settings) -> int:
    return sum((await message_counts(settings.kafka_brokers, kafka.output_topics(settings))).values())


async def updates(dsn: str, changes: list[tuple[str, str]], rate: float) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        start = time.monotonic()
        for i, (account, status) in enumerate(changes):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await conn.execute("UPDATE accounts SET status = $1 WHERE account_id = $2", status, account)
    finally:
        await conn.close()


async def change_lags(settings: Settings) -> list[float]:
    """Applied (changelog entry's changed_at) minus committed (change record's source.ts_ms), per LSN."""
    committed: dict[int, float] = {}
    for record in await read_all(settings.kafka_brokers, settings.change_topic("accounts"), timeout_s=30):
        source = orjson.loads(record.value)["source"]
        committed[source["lsn"]] = source["ts_ms"] / 1000.0
    applied: dict[int, float] = {}
    for record in await read_all(settings.kafka_brokers, f"{settings.id}-accounts-cache-changelog", timeout_s=30):
        entry = orjson.loads(record.value) if record.value else None
        lsn = ((entry or {}).get("positions") or {}).get("accounts")
        if lsn in committed and lsn not in applied:
            applied[lsn] = float(entry["changed_at"])     # type: ignore[index]
    return [applied[lsn] - committed[lsn] for lsn in applied]


async def one_pass(cdc: bool, args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    run = uuid.uuid4().hex[:8]
    stack = stack_env()
    dsn = await create_database(stack["APP_POSTGRES_DSN"], f"b{run}")
    env = {**stack, "APP_POSTGRES_DSN": dsn, "APP_ENV": "test", "APP_ID": f"bench-{run}",
           "APP_TOPIC_PREFIX": f"b{run}.", "APP_CQL_KEYSPACE": f"b{run}", "APP_WEB_PORT": str(free_port()),
           "APP_DATA_DIR": str(log_dir / f"data-{run}"),
           "APP_CACHE_CHANGES": "on" if cdc else "off"}
    settings = Settings.load(env)
    worker: Optional[Worker] = None
    try:
        await seed_accounts(settings, ACCOUNTS, migrate=True)
        if cdc:
            await connect.register(settings)
            env["APP_CACHE_CHANGES_SLOT"] = connect.names(settings)[1]
        worker = Worker(env, log_dir / f"worker-{'on' if cdc else 'off'}.log").start()
        topic = settings.topic(settings.input_topics[0])
        rng, now = random.Random(1), datetime.now(timezone.utc)
        warmup = [(a.encode(), orjson.dumps(raw_event(rng, a, now))) for a in (f"acc-{n:06d}" for n in range(ACCOUNTS))]
        await kafka.produce(settings.kafka_brokers, topic, warmup)
        await wait_until(lambda: _at_least(settings, len(warmup)), 120, "the warm-up events", 1.0)
        load = samples(args.events, accounts=ACCOUNTS, seed=2)
        rng = random.Random(3)
        changes = [(f"acc-{rng.randrange(ACCOUNTS):06d}", "blocked" if i % 2 == 0 else "active")
                   for i in range(args.changes)]
        cpu0, t0 = cpu_s(worker.pid), time.monotonic()
        await asyncio.gather(
            kafka.produce(settings.kafka_brokers, topic, [(s.key, s.value) for s in load], rate=args.rate),
            updates(dsn, changes, args.change_rate))
        await wait_until(lambda: _at_least(settings, len(warmup) + len(load)), 300, "the loaded events", 0.5)
        cpu, wall = cpu_s(worker.pid) - cpu0, time.monotonic() - t0
        result: dict[str, Any] = {"events": len(load), "cpu_us_per_event": cpu / len(load) * 1e6,
                                  "wall_s": wall}
        if cdc:
            async def all_applied() -> bool:
                return len(await change_lags(settings)) >= len(changes)
            try:
                await wait_until(all_applied, 60, "every change in the changelog", 2.0)
            except TimeoutError:
                pass                  # reported: "N changes" below says how many arrived
            lags = await change_lags(settings)
            result["lags_s"] = lags
        # Throughput: a backlog of the same size produced at once, drained while updates go on.
        backlog = samples(args.events, accounts=ACCOUNTS, seed=4)
        more = [(f"acc-{rng.randrange(ACCOUNTS):06d}", "active") for _ in range(args.changes // 4)]
        cpu0, t0 = cpu_s(worker.pid), time.monotonic()
        done = len(warmup) + len(load) + len(backlog)
        await asyncio.gather(kafka.produce(settings.kafka_brokers, topic, [(s.key, s.value) for s in backlog]),
                             updates(dsn, more, args.change_rate))
        await wait_until(lambda: _at_least(settings, done), 300, "the backlog", 0.2)
        cpu, wall = cpu_s(worker.pid) - cpu0, time.monotonic() - t0
        result.update(backlog_per_s=len(backlog) / wall, backlog_cpu_us=cpu / len(backlog) * 1e6)
        return result
    finally:
        if worker is not None:
            worker.stop()
        if cdc:
            await connect.unregister(settings)
        drop_keyspace(settings)
        await delete_topics(settings.kafka_brokers, [settings.topic_prefix, settings.id + "-"])
        await drop_database(dsn)


async def _at_least(settings: Settings, n: int) -> bool:
    return await outputs(settings) >= n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="transactions in the loaded part")
    parser.add_argument("--rate", type=float, default=1000.0, help="transactions per second")
    parser.add_argument("--changes", type=int, default=1000, help="account updates in PostgreSQL")
    parser.add_argument("--change-rate", type=float, default=100.0, help="updates per second")
    parser.add_argument("--rounds", type=int, default=2, help="passes per mode, alternating which goes first")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    log_dir = Path("var") / "bench-cache-changes"
    log_dir.mkdir(parents=True, exist_ok=True)
    passes: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    with stack_lock():
        for i in range(args.rounds):          # off, on, on, off, ...: neither mode always goes first
            for cdc in ((False, True) if i % 2 == 0 else (True, False)):
                passes[cdc].append(asyncio.run(one_pass(cdc, args, log_dir)))
    # Medians over the rounds; the change lags of every CDC pass pooled.
    off = {k: statistics.median(p[k] for p in passes[False]) for k in passes[False][0]}
    on = {k: statistics.median(p[k] for p in passes[True]) for k in ("cpu_us_per_event", "wall_s",
                                                                     "backlog_per_s", "backlog_cpu_us")}
    lags = [lag for p in passes[True] for lag in p["lags_s"]]
    on.update(lags=len(lags), p50=statistics.median(lags), p99=quantile(lags, 0.99), max=max(lags))
    args.changes *= args.rounds
    load = os.getloadavg()
    lines = [
        f"# bench/cache_changes.py, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average "
        f"{load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}",
        f"# medians of {args.rounds} passes per mode; {args.events} transactions at {args.rate:.0f}/s "
        f"while {args.changes // args.rounds} account updates at "
        f"{args.change_rate:.0f}/s, 1,000 accounts, warm cache, one worker",
        f"change lag (commit in PostgreSQL -> applied in accounts-cache), {on['lags']} of {args.changes} changes: "
        f"p50 {on['p50'] * 1000:.0f} ms, p99 {on['p99'] * 1000:.0f} ms, max {on['max'] * 1000:.0f} ms",
        f"worker CPU per event, CDC off: {off['cpu_us_per_event']:.0f} us; CDC on: {on['cpu_us_per_event']:.0f} us; "
        f"ratio on/off {on['cpu_us_per_event'] / off['cpu_us_per_event']:.2f}",
        f"wall time of the loaded part (paced at {args.rate:.0f}/s, so a floor of {args.events / args.rate:.0f} s): "
        f"off {off['wall_s']:.1f} s, on {on['wall_s']:.1f} s",
        f"backlog of {args.events} drained (updates going on): off {off['backlog_per_s']:.0f} events/s, "
        f"{off['backlog_cpu_us']:.0f} us CPU/event; on {on['backlog_per_s']:.0f} events/s, "
        f"{on['backlog_cpu_us']:.0f} us CPU/event; throughput ratio on/off "
        f"{on['backlog_per_s'] / off['backlog_per_s']:.2f}",
    ]
    print("\n".join(lines))
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
