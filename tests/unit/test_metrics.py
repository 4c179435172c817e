"""app.metrics: what the recorders count, what the collectors export, and what it costs."""
from __future__ import annotations

import asyncio
import math
import time
from types import SimpleNamespace
from typing import Any, Iterator

import pytest
from faust.sensors.monitor import Monitor
from faust.types import TP
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from app import metrics
from domain.errors import PermanentError, Reason, Stage


@pytest.fixture(autouse=True)
def fresh_tallies() -> Iterator[None]:
    tallies = (metrics.events_in, metrics.events_out, metrics.dead_letters, metrics.cache)
    saved = [tally.copy() for tally in tallies]
    saved_series, saved_enabled = dict(metrics.e2e_latency.series), metrics.enabled
    for tally in tallies:
        tally.clear()
    metrics.e2e_latency.series.clear()
    metrics.enabled = True
    yield
    for tally, old in zip(tallies, saved, strict=True):
        tally.clear()
        tally.update(old)
    metrics.e2e_latency.series.clear()
    metrics.e2e_latency.series.update(saved_series)
    metrics.enabled = saved_enabled


def batch(n: int, *, topic: str = "t.transactions.raw", age_s: float = 0.05) -> list[Any]:
    now = time.time()
    return [SimpleNamespace(message=SimpleNamespace(topic=topic, partition=i % 8, offset=i, timestamp=now - age_s))
            for i in range(n)]


def exported(*collectors: Any) -> dict[str, Any]:
    registry = CollectorRegistry()
    for collector in collectors:
        registry.register(collector)
    text = generate_latest(registry).decode()
    return {sample.name + str(sorted(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_a_batch_is_counted_in_per_topic_and_out_per_category() -> None:
    bad = PermanentError(Stage.ENRICH, Reason.UNKNOWN_ACCOUNT, "x")
    outcomes = [SimpleNamespace(category="payment")] * 6 + [SimpleNamespace(category="refund")] * 3 + [bad]
    metrics.transactions_batch(batch(10), outcomes)
    assert metrics.events_in == {("transactions", "t.transactions.raw"): 10}
    assert metrics.events_out == {("transactions", "payment"): 6, ("transactions", "refund"): 3,
                                  ("transactions", "dead_letter"): 1}
    counts, total = metrics.e2e_latency.series[("transactions",)]
    assert sum(counts) == 10 and 0.4 < total[0] < 1.0
    # 0.05 s old: every observation in the `le=0.05` or `le=0.1` bucket, none below 0.025
    assert sum(counts[:2]) == 0 and sum(counts[2:5]) == 10


def test_the_pipeline_collector_exports_counters_ratio_and_histogram() -> None:
    metrics.transactions_batch(batch(4, age_s=0.3), [SimpleNamespace(category="receipt")] * 4)
    metrics.cache_lookups(hits=3, misses=1)
    metrics.dead_letters[("undecodable", "decode")] += 2
    samples = exported(metrics.PipelineCollector(lambda category: f"sink.{category}"))
    assert samples["pipeline_events_in_total[('agent', 'transactions'), ('topic', 't.transactions.raw')]"] == 4
    assert samples["pipeline_events_out_total[('agent', 'transactions'), ('category', 'receipt'), "
                   "('topic', 'sink.receipt')]"] == 4
    assert samples["pipeline_dead_letters_total[('reason', 'undecodable'), ('stage', 'decode')]"] == 2
    assert samples["pipeline_cache_hits_total[]"] == 3 and samples["pipeline_cache_misses_total[]"] == 1
    assert samples["pipeline_cache_hit_ratio[]"] == 0.75
    assert samples["pipeline_e2e_latency_seconds_bucket[('agent', 'transactions'), ('le', '0.25')]"] == 0
    assert samples["pipeline_e2e_latency_seconds_bucket[('agent', 'transactions'), ('le', '0.5')]"] == 4
    assert samples["pipeline_e2e_latency_seconds_bucket[('agent', 'transactions'), ('le', '+Inf')]"] == 4
    assert samples["pipeline_e2e_latency_seconds_count[('agent', 'transactions')]"] == 4


def test_the_hit_ratio_is_nan_before_the_first_lookup() -> None:
    assert math.isnan(exported(metrics.PipelineCollector(str))["pipeline_cache_hit_ratio[]"])


def test_faust_monitor_figures_are_exported_at_scrape_time() -> None:
    monitor = Monitor()
    tp = TP("t.transactions.raw", 3)
    message = SimpleNamespace(time_in=None, time_out=None, time_total=None)
    for offset in range(5):
        monitor.on_message_in(tp, offset, message)  # type: ignore[arg-type]
    monitor.track_tp_end_offset(tp, 9)
    monitor.on_tp_commit({tp: 5})
    samples = exported(metrics.FaustMonitorCollector(lambda: monitor))
    assert samples["faust_messages_received_total[]"] == 5
    assert samples["faust_messages_received_per_topic_total[('topic', 't.transactions.raw')]"] == 5
    assert samples["faust_topic_partition_end_offset[('partition', '3'), ('topic', 't.transactions.raw')]"] == 9
    assert samples["faust_topic_partition_committed_offset[('partition', '3'), ('topic', 't.transactions.raw')]"] == 5


def test_timed_observes_failures_too() -> None:
    histogram = Histogram("t_seconds", "test", ["op"], registry=CollectorRegistry())

    @metrics.timed(histogram, "boom")
    async def boom() -> None:
        await asyncio.sleep(0.01)
        raise RuntimeError("down")

    with pytest.raises(RuntimeError):
        asyncio.run(boom())
    assert histogram.labels("boom")._sum.get() >= 0.01      # type: ignore[attr-defined]


def test_disabled_recorders_record_nothing() -> None:
    metrics.enabled = False
    metrics.transactions_batch(batch(3), [SimpleNamespace(category="payment")] * 3)
    metrics.cache_lookups(hits=1, misses=1)
    assert not metrics.events_in and not metrics.events_out and not metrics.cache
    assert not metrics.e2e_latency.series


def test_recording_costs_well_under_a_microsecond_per_event() -> None:
    """A guard against per-event prometheus_client calls creeping into the hot path:
    faust itself spends 150+ µs per event; recording a batch of 500 must cost < 5 µs each."""
    events = batch(500)
    outcomes = [SimpleNamespace(category="payment")] * 500
    start = time.process_time()
    for _ in range(40):
        metrics.transactions_batch(events, outcomes)
    per_event_us = (time.process_time() - start) / (40 * 500) * 1e6
    assert per_event_us < 5, f"{per_event_us:.2f} µs per event"


def test_names_lists_every_exported_sample_name() -> None:
    names = metrics.names([metrics.PipelineCollector(str), metrics.FaustMonitorCollector(Monitor)])
    assert {"pipeline_events_in_total", "pipeline_e2e_latency_seconds_bucket", "pipeline_consumer_lag",
            "pipeline_postgres_seconds_bucket", "faust_messages_received_total", "pipeline_ready"} <= names
