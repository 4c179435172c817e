"""CPU cost per event of faust's sensor callbacks: the default Monitor vs faust's PrometheusMonitor.

    .venv/bin/python bench/sensor_cost.py [--events 200000] [--repeats 5]

Replays, in one process and without a broker, the sensor calls faust makes for one event
of the transactions pipeline (message in, end offset tracked, stream event in and out,
message out, one send initiated and completed) and prints the median CPU µs per event
of each monitor, and of the pipeline's own per-batch recording (app.metrics) for
comparison. The worker-level figure (bench/metrics_overhead.py) is noisier; this one
isolates the sensors.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from faust.sensors.monitor import Monitor  # noqa: E402
from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor  # noqa: E402
from faust.types import TP  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402


class _Task:
    pass


class _Stream:                        # weak-referenceable, as faust's streams and tasks are
    shortlabel = "Stream: transactions"
    task_owner = _Task()


class _Message:
    time_in = time_out = time_total = None


def per_event(monitor: Monitor, events: int) -> float:
    tps = [TP("t.transactions.raw", p) for p in range(8)]
    stream, message = _Stream(), _Message()
    start = time.process_time()
    for i in range(events):
        tp = tps[i & 7]
        monitor.on_message_in(tp, i, message)                 # type: ignore[arg-type]
        monitor.track_tp_end_offset(tp, i + 100)
        state = monitor.on_stream_event_in(tp, i, stream, None)  # type: ignore[arg-type]
        monitor.on_stream_event_out(tp, i, stream, None, state)  # type: ignore[arg-type]
        monitor.on_message_out(tp, i, message)                # type: ignore[arg-type]
        sent = monitor.on_send_initiated(None, "t.transactions.payment.enriched", None, 12, 900)  # type: ignore
        monitor.on_send_completed(None, sent, None)           # type: ignore[arg-type]
    return (time.process_time() - start) / events * 1e6


def pipeline_recording(events: int) -> float:
    from app import metrics
    from domain.errors import PermanentError, Reason, Stage

    now = time.time()
    batch = [SimpleNamespace(message=SimpleNamespace(topic="t.transactions.raw", partition=i & 7,
                                                     offset=i, timestamp=now - 0.05)) for i in range(500)]
    good = SimpleNamespace(category="payment")
    bad = PermanentError(Stage.DECODE, Reason.UNDECODABLE, "x")
    outcomes = [bad if i % 20 == 0 else good for i in range(500)]
    start = time.process_time()
    for _ in range(events // 500):
        metrics.transactions_batch(batch, outcomes)          # type: ignore[arg-type]
        metrics.cache_lookups(hits=180, misses=20)
    return (time.process_time() - start) / events * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    runs: dict[str, Callable[[], float]] = {
        "faust Monitor (default)": lambda: per_event(Monitor(), args.events),
        "faust PrometheusMonitor": lambda: per_event(
            PrometheusMonitor(metrics=FaustMetrics.create(CollectorRegistry(), "faust")), args.events),
        "app.metrics, per batch of 500": lambda: pipeline_recording(args.events),
    }
    results: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            results[name].append(run())
    for name, values in results.items():
        print(f"{name:32s} {statistics.median(values):6.2f} CPU µs/event (median of {args.repeats})")
    base: Any = statistics.median(results["faust Monitor (default)"])
    print(f"{'PrometheusMonitor adds':32s} {statistics.median(results['faust PrometheusMonitor']) - base:6.2f}"
          " CPU µs/event")


if __name__ == "__main__":
    main()
