"""Start a worker on a backlog and check that every input record reaches a sink or the DLQ.

The reproduction tool for the faust-streaming start-up bug described in app/stalls.py: N
events are produced into a fresh input topic, then one `faust -A app.main worker` starts
(optionally with the group's offsets committed at 0 first, as bench/pipeline.py's rewind
does), and once the sinks stop growing, the source offsets named in the sinks' headers are
compared with the input partitions' offsets. `--warm` first runs a whole pass, stops that
worker, rewinds the group and checks the second start, which recovers a filled table
changelog first: the benchmark's warm pass, where the bug struck most.

Each run also counts the input records that reached a sink more than once (`repeated`): on a
plain start (one worker, nothing to replay) every repeat happened within that worker's life
(issue 13, item 3). `--rebalance S` starts two workers, SIGKILLs one S seconds after both are
ready and lets the other take all partitions over (issue 13, item 2: a hole the watchdog had to
rewind); its repeats include the dead worker's uncommitted work, replayed as promised. `--join S`
scales out instead: a second worker joins S seconds after the first is ready, both go on (a
graceful rebalance: what the first had processed and acked should not be replayed). The
figures end with one summary line: rewinds and repeated records per start.

    .venv/bin/python -m bench.backlog_start --events 60000 [--rewound | --warm | --rebalance 3] [--runs 3]
    .venv/bin/python -m bench.backlog_start --join 3                                       # scale out

`--rebalance` runs its workers with APP_KAFKA_SESSION_TIMEOUT_S=8 unless it is set: with the default
30 s the survivor takes the dead worker's partitions over only after the settle below (15 s without a
new sink record) has ended the run, and their backlog counts as missing.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from app.adapters.cql import Cql
from app.settings import Settings
from devtools.kafka import delete_topics
from devtools.processes import stack_lock
from devtools.stores import create_database, drop_database, drop_keyspace, seed_accounts
from bench.pipeline import (Worker, close_offsets, create_topics, end_offsets, free_port, produce, read_since,
                            rewind_group, stack_env)
from app.commands.samples.transactions import samples
from models.transaction import CATEGORIES


async def settle(settings: Settings, sinks: list[str]) -> None:
    """Until the sinks stop growing (15 s without a new record, 300 s at most)."""
    last, still, t0 = -1, 0, time.monotonic()
    while still < 3 and time.monotonic() - t0 < 300:
        await asyncio.sleep(5)
        got = sum((await end_offsets(settings.kafka_brokers, sinks)).values())
        still = still + 1 if got == last else 0
        last = got


REBALANCE_SESSION_TIMEOUT_S = 8


@dataclass(frozen=True)
class Outcome:
    missing: int      # input records in no sink
    repeated: int     # input records in a sink more than once (extra copies)
    rewinds: int      # watchdog rewinds in the (surviving) worker's log


async def once(events: int, rewound: bool, warm: bool, kill: float = 0.0, rebalance: float = 0.0,
               keep_logs: bool = False, join: float = 0.0) -> Outcome:
    with stack_lock():
        return await _once(events, rewound, warm, kill, rebalance, keep_logs, join)


async def _once(events: int, rewound: bool, warm: bool, kill: float, rebalance: float, keep_logs: bool,
                join: float = 0.0) -> Outcome:
    run = uuid.uuid4().hex[:8]
    base = stack_env()
    admin = base["APP_POSTGRES_DSN"].rsplit("/", 1)[0]
    db, tmp = f"backlog_{run}", Path(f"/tmp/backlog-{run}")
    await create_database(base["APP_POSTGRES_DSN"], db)
    env = {**os.environ, **base, "APP_POSTGRES_DSN": f"{admin}/{db}", "APP_ENV": "test",
           "APP_ID": f"backlog-{run}", "APP_TOPIC_PREFIX": f"k{run}.", "APP_CQL_KEYSPACE": f"k{run}",
           "APP_DATA_DIR": str(tmp / "data"), "APP_WEB_PORT": str(free_port())}
    if rebalance:     # the takeover waits for the dead member's session to expire: within the settle's quiet
        env.setdefault("APP_KAFKA_SESSION_TIMEOUT_S", str(REBALANCE_SESSION_TIMEOUT_S))
    settings = Settings.load(env)
    cql = Cql(settings)
    worker = doomed = joiner = None
    try:
        await seed_accounts(settings, 1000, migrate=True)
        await cql.migrate()
        src = settings.topic("transactions.raw")
        await create_topics(settings.kafka_brokers, [src])
        data = samples(events, bad_ratio=0, accounts=1000, seed=7)
        await produce(settings.kafka_brokers, src, [(s.key, s.value) for s in data])
        tmp.mkdir(parents=True, exist_ok=True)
        sinks = [settings.sink_topic(c) for c in CATEGORIES] + [settings.topic(settings.dlq_topic)]
        since: dict = {}
        if warm:
            first = Worker(env, tmp / "first.log", "uvloop").start()
            await first.wait_ready()
            await settle(settings, sinks)
            first.stop()
            since = await end_offsets(settings.kafka_brokers, sinks)
        if rewound or warm:
            await rewind_group(settings.kafka_brokers, settings.id, src)
        if kill:
            first = Worker(env, tmp / "worker.log", "uvloop").start()
            await first.wait_ready()
            await asyncio.sleep(kill)
            first.kill()
        if rebalance:
            doomed = Worker({**env, "APP_WEB_PORT": str(free_port())}, tmp / "doomed.log", "uvloop").start()
        worker = Worker(env, tmp / "worker.log", "uvloop").start()
        await worker.wait_ready()
        if rebalance:
            assert doomed is not None
            await doomed.wait_ready()
            await asyncio.sleep(rebalance)
            doomed.kill()
        if join:
            await asyncio.sleep(join)
            joiner = Worker({**env, "APP_WEB_PORT": str(free_port())}, tmp / "joiner.log", "uvloop").start()
            await joiner.wait_ready()
        await settle(settings, sinks)
        records = await read_since(settings.kafka_brokers, since, await end_offsets(settings.kafka_brokers, sinks))
        copies = collections.Counter((int(h["source-partition"]), int(h["source-offset"]))
                                     for h in (dict(r.headers) for r in records)
                                     if h.get("source-topic") == src.encode())
        seen = set(copies)
        repeated = sum(n - 1 for n in copies.values())
        ends = await end_offsets(settings.kafka_brokers, [src])
        missing = {tp.partition: sum((tp.partition, o) not in seen for o in range(end)) for tp, end in ends.items()}
        rewinds = (tmp / "worker.log").read_text(errors="replace").count("seeking back")
        if any(missing.values()) or rewinds or repeated or keep_logs:
            kept = Path("/tmp/backlog-logs") / run
            kept.mkdir(parents=True, exist_ok=True)
            for f in tmp.glob("*.log"):
                shutil.copy(f, kept / f.name)
        print(f"run {run}: {len(records):,} sink records, {len(seen):,} distinct of {events:,}; "
              f"missing per partition {dict(sorted(missing.items()))}; watchdog rewinds {rewinds}; "
              f"repeated {repeated:,}", flush=True)
        return Outcome(sum(missing.values()), repeated, rewinds)
    finally:
        if worker is not None:
            worker.stop()
        if doomed is not None:
            doomed.kill()
        if joiner is not None:
            joiner.stop()
        await _clean_up(settings, cql, run)
        shutil.rmtree(tmp, ignore_errors=True)


async def _clean_up(settings: Settings, cql: Cql, run: str) -> None:
    """Drop what one run made; a server too busy to answer leaves it behind (said), and the
    series goes on: one slow DROP KEYSPACE must not end twenty starts."""
    steps = [("keyspace", lambda: asyncio.to_thread(drop_keyspace, settings)), ("CQL session", cql.close),
             ("database", lambda: drop_database(settings.postgres_dsn)),
             ("topics", lambda: delete_topics(settings.kafka_brokers, [f"k{run}.", f"backlog-{run}-"]))]
    for what, step in steps:
        try:
            await step()
        except Exception as exc:      # noqa: BLE001 - the run's figures are already printed
            print(f"run {run}: clean-up of its {what} failed ({type(exc).__name__}: {exc}); left behind", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=60_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--rewound", action="store_true", help="commit the group's offsets at 0 before the start")
    p.add_argument("--warm", action="store_true", help="a first whole pass, then a rewound second start")
    p.add_argument("--kill", type=float, default=0.0, metavar="S",
                   help="SIGKILL the worker S seconds after it is ready, then start another at once")
    p.add_argument("--rebalance", type=float, default=0.0, metavar="S",
                   help="two workers; SIGKILL one S seconds after both are ready, the other takes over")
    p.add_argument("--join", type=float, default=0.0, metavar="S",
                   help="a second worker joins S seconds after the first is ready; both go on")
    p.add_argument("--keep-logs", action="store_true", help="copy every run's logs to /tmp/backlog-logs, clean or not")
    args = p.parse_args()

    async def runs() -> int:
        try:
            outcomes = [await once(args.events, args.rewound, args.warm, args.kill, args.rebalance, args.keep_logs,
                                       args.join)
                        for _ in range(args.runs)]
        finally:
            await close_offsets()
        n = len(outcomes)
        print(f"{n} starts: missing {sum(o.missing for o in outcomes):,}; watchdog rewinds "
              f"{sum(o.rewinds for o in outcomes)} in {sum(bool(o.rewinds) for o in outcomes)} starts "
              f"({sum(o.rewinds for o in outcomes) / n:.2f} per start); repeated records "
              f"{sum(o.repeated for o in outcomes):,} in {sum(bool(o.repeated) for o in outcomes)} starts "
              f"({sum(o.repeated for o in outcomes) / n:,.0f} per start)", flush=True)
        return sum(o.missing for o in outcomes)

    raise SystemExit(1 if asyncio.run(runs()) else 0)


if __name__ == "__main__":
    main()
