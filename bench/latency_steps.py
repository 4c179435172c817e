"""Where the end-to-end latency of a trickle goes, step by step (issue 14).

    .venv/bin/python -m bench.latency_steps --seconds 15 [--config NAME:VAR=VALUE,VAR=VALUE ...]

One run: a fresh database, keyspace and topic prefix (bench.pipeline's Bench). For each config
(default: one, the worker as configured), a 1-worker pipeline is started with the step probe
(bench/latency_trace, LTRACE), warmed with 1,000 events (the account cache), then one event is
produced every `--interval-ms` (5 ms) for `--seconds`. Each event's steps, from the probe's
stamps and the record timestamps (one machine, one wall clock, ms):

  arrive   input CreateTime (our producer) -> the fetch response holding it reaches aiokafka
  hand over -> faust's consumer takes it from aiokafka's buffer (arrive + hand over = fetch)
  fetch    input CreateTime -> faust's consumer hands the record over
  deliver  -> delivered to the agent's stream (Monitor's time_in)
  batch    -> `batching.batches` hands its batch over
  process  -> the batch is processed (history written, outputs delivered; with APP_BATCH_OVERLAP
           the probe sees the batch come back when the agent takes the next one: not its end)
  (process, split: the history write to the CQL server, the wait for the outputs' delivery)
  total    input CreateTime -> sink CreateTime (set by the worker's producer; what
           bench.pipeline's latency mode measures)

Printed as p50 / p90 / p99 per step, the batch sizes, and the worker's CPU per event over the
trickle; with several configs, each one's phase runs in the same run, one after the other.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from aiokafka import AIOKafkaProducer

from app.kafka_tools import bootstrap
from bench.pipeline import (Bench, Worker, end_offsets, free_port, percentile, proc_cpu, read_since,
                            say, total_since)
from devtools import processes

TRACE = Path(__file__).resolve().parent / "latency_trace"


async def trickle(brokers: str, topic: str, items: Sequence[tuple[bytes, bytes]], interval_s: float) -> float:
    """One record every `interval_s` (no linger); returns the achieved events/s."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap(brokers), acks="all", linger_ms=0)
    await producer.start()
    try:
        futures = []
        start = time.monotonic()
        for i, (key, value) in enumerate(items):
            delay = start + i * interval_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            futures.append(await producer.send(topic, value, key=key))
        await asyncio.gather(*futures)
        return len(items) / (time.monotonic() - start)
    finally:
        await producer.stop()


def spread(values: Sequence[float]) -> str:
    if not values:
        return "-"
    return " / ".join(f"{percentile(values, q):,.1f}" for q in (0.5, 0.9, 0.99))


async def phase(bench: Bench, name: str, extra: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    from app.commands.samples.transactions import samples
    trace = bench.tmp / f"steps-{name}.txt"
    env = {**bench.env, **extra, "APP_WEB_PORT": str(free_port()), "LTRACE": str(trace),
           "PYTHONPATH": os.pathsep.join(p for p in (str(TRACE), os.environ.get("PYTHONPATH", "")) if p)}
    worker = Worker(env, bench.tmp / f"steps-{name}.log", args.loop).start()
    bench.workers.append(worker)
    await worker.wait_ready()
    try:
        warm = samples(1000, bad_ratio=0, accounts=1000, seed=21)
        since = await end_offsets(bench.brokers, bench.sinks)
        await trickle(bench.brokers, bench.lat, [(s.key, s.value) for s in warm], 0.002)
        while total_since(await end_offsets(bench.brokers, bench.sinks), since) < len(warm):
            await asyncio.sleep(0.2)
        trace.write_text("")
        idle0, t_idle = proc_cpu(worker.pid), time.monotonic()
        await asyncio.sleep(5)
        idle_ms_per_s = (proc_cpu(worker.pid) - idle0) / (time.monotonic() - t_idle) * 1000
        count = int(args.seconds * 1000 / args.interval_ms)
        data = samples(count, bad_ratio=0, accounts=1000, seed=22)
        src_since = await end_offsets(bench.brokers, [bench.lat])
        since = await end_offsets(bench.brokers, bench.sinks)
        load0 = os.getloadavg()
        cpu0 = proc_cpu(worker.pid)
        rate = await trickle(bench.brokers, bench.lat, [(s.key, s.value) for s in data], args.interval_ms / 1000)
        t0 = time.monotonic()
        while total_since(await end_offsets(bench.brokers, bench.sinks), since) < count:
            if time.monotonic() - t0 > 120:
                raise TimeoutError(f"{name}: outputs missing")
            await asyncio.sleep(0.2)
        cpu = proc_cpu(worker.pid) - cpu0
        load1 = os.getloadavg()
    finally:
        worker.stop()
    out = await read_since(bench.brokers, since, await end_offsets(bench.brokers, bench.sinks))
    produced = {(r.partition, r.offset): r.timestamp / 1000
                for r in await read_since(bench.brokers, src_since, await end_offsets(bench.brokers, [bench.lat]))}
    stamps: dict[tuple[int, int], list[float]] = {}
    for line in trace.read_text().splitlines():
        topic, partition, offset, *ts = line.split()
        if topic == bench.lat:
            stamps[(int(partition), int(offset))] = [float(t) for t in ts]
    steps: dict[str, list[float]] = {k: [] for k in ("arrive", "hand over", "fetch", "deliver", "batch", "process",
                                                     "total")}
    sizes: dict[float, int] = {}
    for r in out:
        h = dict(r.headers)
        if h.get("source-topic") != bench.lat.encode():
            continue
        key = (int(h["source-partition"]), int(h["source-offset"]))
        if key not in produced:
            continue
        t_prod, t_out = produced[key], r.timestamp / 1000
        steps["total"].append((t_out - t_prod) * 1000)
        if key in stamps:
            fetched, seen, taken, done, *rest = stamps[key]
            if fetched and rest and rest[0]:
                steps["arrive"].append((rest[0] - t_prod) * 1000)
                steps["hand over"].append((fetched - rest[0]) * 1000)
            if fetched:
                steps["fetch"].append((fetched - t_prod) * 1000)
                steps["deliver"].append((seen - fetched) * 1000)
            steps["batch"].append((taken - seen) * 1000)
            steps["process"].append((done - taken) * 1000)
            sizes[taken] = sizes.get(taken, 0) + 1
    res = {"name": name, "config": extra, "events": len(steps["total"]), "rate": rate,
           "cpu_us": cpu / count * 1e6, "idle_cpu_ms_per_s": idle_ms_per_s, "load": (load0[0], load1[0]),
           "batch_p50": statistics.median(sizes.values()) if sizes else 0, "batches": len(sizes),
           **{k: v for k, v in steps.items()}}
    say(f"{name} {extra or '(as configured)'}: {res['events']:,} events at {rate:,.0f}/s, "
        f"{len(sizes):,} batches (median {res['batch_p50']:.0f} events), worker {res['cpu_us']:.0f} CPU µs/event "
        f"(idle: {idle_ms_per_s:.1f} CPU ms/s), "
        f"load average {load0[0]:.2f} -> {load1[0]:.2f}")
    parts: dict[str, list[float]] = {}
    t_first = min(produced.values()) if produced else 0
    parts_file = Path(str(trace) + ".parts")
    for line in (parts_file.read_text().splitlines() if parts_file.exists() else []):
        part, started, took = line.split()
        if float(started) >= t_first:
            parts.setdefault(part, []).append(float(took) * 1000)
    res["parts"] = parts
    for k in steps:
        say(f"  {k:9s} p50 / p90 / p99 ms: {spread(steps[k])}")
    for k, v in parts.items():
        say(f"    in process, {k:9s} p50 / p90 / p99 ms per batch: {spread(v)}")
    return res


def parse_config(text: str) -> tuple[str, dict[str, str]]:
    name, _, assignments = text.partition(":")
    pairs = [a.split("=", 1) for a in assignments.split(",") if a]
    return name, {k: v for k, v in pairs}


async def run(args: argparse.Namespace) -> None:
    bench = Bench(argparse.Namespace(events=0, batch_wait=args.batch_wait, results=Path("/tmp"), loop=args.loop))
    await bench.setup()
    try:
        for rnd in range(args.rounds):
            for text in args.config or ["as-configured:"]:
                name, extra = parse_config(text)
                await phase(bench, f"{name}#{rnd + 1}" if args.rounds > 1 else name, extra, args)
    finally:
        await bench.teardown()


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=15)
    p.add_argument("--interval-ms", type=float, default=5.0, help="one event every this many ms")
    p.add_argument("--config", action="append", help="NAME:VAR=VALUE,... worker settings of one phase "
                   "(repeatable: the phases run one after the other, in one run)")
    p.add_argument("--rounds", type=int, default=1, help="the configs' phases, this many times over (interleaved)")
    p.add_argument("--batch-wait", type=float, default=None, help="APP_BATCH_WAIT_S (default: app/config/test.yaml)")
    p.add_argument("--loop", default="uvloop", choices=("aio", "uvloop"))
    args = p.parse_args(argv)
    with processes.stack_lock():
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
