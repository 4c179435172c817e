"""avro vs fastavro through the app's own codec (framing, cache lookup and error mapping
included): encode, decode, and decode with schema resolution (writer v2 -> reader v1).

    .venv/bin/python bench/avro_codecs.py [--events 20000] [--repeats 7]

Prints, per library and operation, the median over the repeats of events/s (wall clock) and
of CPU µs per event (process time: the steadier figure on a shared, noisy machine), and the
ratio avro/fastavro of CPU per event. No servers needed.
"""
from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import avro  # noqa: E402
import fastavro  # noqa: E402

from domain.avro import AvroDecoder, AvroEncoder, Schema  # noqa: E402
from app.commands.samples.clicks import sample_clicks  # noqa: E402
from app.commands.samples.transactions import raw_event  # noqa: E402
from models.avro_schemas import RAW_TRANSACTION, USER_CLICK  # noqa: E402

CLICK_V2 = {**USER_CLICK, "fields": [*USER_CLICK["fields"],
                                     {"name": "referrer", "type": ["null", "string"], "default": None}]}


def measure(run: Callable[[], None], events: int, repeats: int) -> tuple[float, float]:
    """Median events/s and median CPU µs/event over `repeats` runs (after one warm-up)."""
    run()
    rates, cpu = [], []
    for _ in range(repeats):
        wall0, cpu0 = time.perf_counter(), time.process_time()
        run()
        wall, used = time.perf_counter() - wall0, time.process_time() - cpu0
        rates.append(events / wall)
        cpu.append(used / events * 1e6)
    return statistics.median(rates), statistics.median(cpu)


def cases(events: int) -> list[tuple[str, Schema, Schema, Sequence[dict[str, Any]]]]:
    """(name, writer schema, reader schema, datums)."""
    clicks = sample_clicks(events, users=1000, urls=200, seed=1)
    rng = random.Random(1)
    fields = {f["name"] for f in RAW_TRANSACTION["fields"]}
    now = datetime.now(timezone.utc)
    transactions = [{k: v for k, v in raw_event(rng, f"acc-{rng.randrange(1000):06d}", now).items()
                     if k in fields} for _ in range(events)]
    v1, v2, tx = Schema.parse(USER_CLICK), Schema.parse(CLICK_V2), Schema.parse(RAW_TRANSACTION)
    return [
        ("UserClick (3 fields)", v1, v1, clicks),
        ("UserClick v2 -> v1 (resolution)", v2, v1,
         [{**c, "referrer": "https://search.example/"} for c in clicks]),
        ("RawTransaction (13 fields)", tx, tx, transactions),
    ]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    print(f"avro {avro.__version__}, fastavro {fastavro.__version__}, "
          f"Python {platform.python_version()}, {args.events} events x {args.repeats} repeats (medians)")
    print(f"{'case':34s} {'op':7s} {'library':9s} {'events/s':>10s} {'CPU µs/ev':>10s} "
          f"{'avro/fastavro':>14s}")
    for name, writer, reader, datums in cases(args.events):
        framed = [AvroEncoder(1, writer).encode(d) for d in datums]
        for op in ("encode", "decode"):
            results = {}
            for backend in ("fastavro", "avro"):
                encoder = AvroEncoder(1, writer, backend=backend)
                decoder = AvroDecoder(reader, backend=backend)
                decoder.add(1, writer)
                if op == "encode":
                    def run(encode: Callable[[Any], bytes] = encoder.encode) -> None:
                        for d in datums:  # noqa: B023 (called before the loop moves on)
                            encode(d)
                else:
                    def run(decode: Callable[[bytes], Any] = decoder.decode) -> None:
                        for raw in framed:  # noqa: B023 (called before the loop moves on)
                            decode(raw)
                results[backend] = measure(run, len(datums), args.repeats)
            ratio = results["avro"][1] / results["fastavro"][1]
            for backend in ("fastavro", "avro"):
                rate, cpu = results[backend]
                shown = f"{ratio:13.1f}x" if backend == "avro" else ""
                print(f"{name:34s} {op:7s} {backend:9s} {rate:10,.0f} {cpu:10.1f} {shown:>14s}")


if __name__ == "__main__":
    main()
