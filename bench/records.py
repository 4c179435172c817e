"""The domain path of one transaction event with faust's field descriptors on the two Records it
builds, and without them (`models.plain.plain_fields`), alternated in one process.

    .venv/bin/python bench/records.py [--events 20000] [--repeats 7]

Per repeat, each variant runs decode, to_transaction, enrich and dumps over the events in
chunks of 500 (the agents' batches keep no more alive); the descriptors are put back on the
classes for the "faust" variant and taken off again for "plain". Prints the median over the
repeats of CPU µs per event per stage and in total, and the ratio plain/faust. No servers needed.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import faust  # noqa: E402

from app.commands.samples.transactions import samples  # noqa: E402
from domain.enrichment import enrich  # noqa: E402
from domain.transactions import decode, to_transaction  # noqa: E402
from models.transaction import EnrichedTransaction, Transaction  # noqa: E402

STAGES = ("decode", "to_transaction", "enrich", "dumps")
CHUNK = 500
ACCOUNT = {"account": {"customer_id": 1, "name": "Fulano", "document": "x", "segment": "retail",
                       "risk_score": 10, "status": "active", "opened_at": None}, "fetched_at": 0}


def with_descriptors(on: bool) -> None:
    """Put faust's FieldDescriptors back on the classes (on) or take them off (what plain_fields
    does); the values live in the instance's __dict__ either way."""
    for cls in (Transaction, EnrichedTransaction):
        for name, descriptor in cls._options.descriptors.items():
            if on:
                setattr(cls, name, descriptor)
            elif name in cls.__dict__:
                delattr(cls, name)


def one_pass(values: Sequence[bytes]) -> dict[str, float]:
    """CPU seconds per stage over all values, in chunks."""
    now = datetime.now(timezone.utc)
    used = dict.fromkeys(STAGES, 0.0)
    for i in range(0, len(values), CHUNK):
        chunk = values[i:i + CHUNK]
        t0 = time.process_time()
        decoded = [decode(v) for v in chunk]
        t1 = time.process_time()
        txs: list[Any] = [to_transaction(d, now=now) for d in decoded]
        t2 = time.process_time()
        enriched: list[faust.Record] = [enrich(t, ACCOUNT) for t in txs]
        t3 = time.process_time()
        [e.dumps() for e in enriched]
        t4 = time.process_time()
        for stage, spent in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            used[stage] += spent
    return used


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    values = [s.value for s in samples(args.events, accounts=1000, seed=11)]
    per_event: dict[str, dict[str, list[float]]] = {
        v: {s: [] for s in (*STAGES, "total")} for v in ("faust", "plain")}
    for repeat in range(args.repeats + 1):
        for variant in ("faust", "plain") if repeat % 2 else ("plain", "faust"):
            with_descriptors(variant == "faust")
            used = one_pass(values)
            if repeat == 0:
                continue  # warm-up
            for stage, spent in (*used.items(), ("total", sum(used.values()))):
                per_event[variant][stage].append(spent / len(values) * 1e6)
    with_descriptors(False)
    print(f"faust {faust.__version__}, Python {platform.python_version()}, {args.events} events "
          f"x {args.repeats} repeats, chunks of {CHUNK} (medians, CPU µs/event)")
    print(f"{'stage':16s} {'faust':>8s} {'plain':>8s} {'plain/faust':>12s}")
    for stage in (*STAGES, "total"):
        before = statistics.median(per_event["faust"][stage])
        after = statistics.median(per_event["plain"][stage])
        print(f"{stage:16s} {before:8.2f} {after:8.2f} {after / before:11.2f}x")


if __name__ == "__main__":
    main()
