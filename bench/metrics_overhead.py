"""CPU cost per event of the worker, with and without metrics, on the real local stack.

    scripts/stack up
    .venv/bin/python bench/metrics_overhead.py [--events 30000] [--repeats 3] \
        [--variant off:APP_METRICS_ENABLED=false] [--variant on:APP_METRICS_ENABLED=true]

Each run starts a fresh worker (own app id, topics and keyspace; the accounts of the `app`
database, seeded here), lets it settle, measures its idle CPU rate, sends the same fixed
stream (same seed), waits until every event is forwarded or dead-lettered, and reports the
worker's CPU µs per event (user+system of the worker process, idle rate subtracted) and
events/s. Variants run interleaved (off, on, off, on, ...) so that drift on a shared
machine hits them alike; the medians are printed at the end. A variant is a name and
APP_* overrides; FAUST_APP=<module> picks another `-A` module (for experiments).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.kafka_tools import message_counts  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.commands.samples.transactions import samples  # noqa: E402
from devtools import kafka  # noqa: E402
from devtools.processes import FAUST, Worker, free_port, stack_env  # noqa: E402
from devtools.stores import drop_keyspace, seed_accounts  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS     # utime + stime


def run_once(base: dict[str, str], overrides: dict[str, str], data: list, log: Path) -> tuple[float, float]:
    run = uuid.uuid4().hex[:8]
    overrides = dict(overrides)
    module = overrides.pop("FAUST_APP", "app.main")
    env = {**os.environ, **base, "APP_ENV": "test", "APP_ID": f"bench-{run}", "APP_TOPIC_PREFIX": f"b{run}.",
           "APP_CQL_KEYSPACE": f"b{run}", "APP_WEB_PORT": str(free_port()),
           "APP_DATA_DIR": f"/tmp/bench-{run}", **overrides}
    settings = Settings.load(env)
    worker = Worker(env, log, argv=[FAUST, "-A", module, "worker", "-l", "info"])
    try:
        worker.start(120)
        proc = worker.proc
        assert proc is not None
        time.sleep(8)                     # assignment, recovery, first fetches
        idle0, t0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(4)
        idle_rate = (cpu_seconds(proc.pid) - idle0) / (time.monotonic() - t0)
        cpu0, start = cpu_seconds(proc.pid), time.monotonic()
        asyncio.run(kafka.produce(settings.kafka_brokers, settings.topic(settings.input_topics[0]),
                                  [(s.key, s.value) for s in data]))

        async def done() -> bool:
            counts = await message_counts(settings.kafka_brokers, kafka.output_topics(settings))
            return sum(counts.values()) >= len(data)

        while not asyncio.run(done()):
            if time.monotonic() - start > 600 or proc.poll() is not None:
                raise RuntimeError(f"stream not processed; see {log}")
            time.sleep(0.5)
        elapsed = time.monotonic() - start
        cpu = cpu_seconds(proc.pid) - cpu0 - idle_rate * elapsed
        return cpu / len(data) * 1e6, len(data) / elapsed
    finally:
        try:
            worker.stop(30)
        except subprocess.TimeoutExpired:
            pass
        drop_keyspace(settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variant", action="append", default=[],
                        help="name:KEY=VALUE,KEY=VALUE (repeatable)")
    args = parser.parse_args()
    variants = {}
    for spec in args.variant or ["off:APP_METRICS_ENABLED=false", "on:APP_METRICS_ENABLED=true"]:
        name, _, pairs = spec.partition(":")
        variants[name] = dict(p.split("=", 1) for p in pairs.split(",") if p)
    base = stack_env()
    asyncio.run(seed_accounts(Settings.load({**base, "APP_ENV": "test"}), 1000, migrate=True))
    data = samples(args.events, bad_ratio=0.05, accounts=1000, seed=7)
    logs = Path("/tmp") / f"bench-metrics-{uuid.uuid4().hex[:6]}"
    logs.mkdir()
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for i in range(args.repeats):
        for name, overrides in variants.items():
            us, rate = run_once(base, overrides, data, logs / f"{name}-{i}.log")
            results[name].append((us, rate))
            print(f"run {i + 1} {name:>8s}: {us:7.1f} CPU µs/event  {rate:8.0f} events/s", flush=True)
    print(f"\n{args.events} events, 8 partitions, bad ratio 0.05; medians of {args.repeats} (worker logs: {logs})")
    for name, runs in results.items():
        print(f"{name:>8s}: {statistics.median(u for u, _ in runs):7.1f} CPU µs/event  "
              f"{statistics.median(r for _, r in runs):8.0f} events/s")


if __name__ == "__main__":
    main()
