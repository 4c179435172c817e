"""Every metric the app exports, defined once; recorded per batch so the hot path stays cheap.

Counters of events are plain `collections.Counter`s incremented once per batch (a dict
update in C) and turned into Prometheus series only when /metrics is scraped
(`PipelineCollector`). The end-to-end latency is a histogram of every event whose bucket
counts are kept the same way (`BatchHistogram`: one bisect per event, no lock).
Database latencies and batch sizes are ordinary prometheus_client histograms: they are
observed once per round trip or per batch, not per event. faust's own sensor, the
default `Monitor`, already counts messages, sends, offsets and latencies per event; its
figures are exported at scrape time (`FaustMonitorCollector`) instead of installing
faust's PrometheusMonitor, which repeats that work in prometheus_client per event.

Nothing here imports the faust app: app/observability.py wires it in.
"""
from __future__ import annotations

import collections
import functools
import math
import time
from bisect import bisect_left
from typing import Any, Awaitable, Callable, Iterable, Iterator, Optional, Sequence, TypeVar

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from domain.errors import PermanentError

# /metrics serves this registry: the metrics below, faust's (FaustMonitorCollector), and
# prometheus_client's process and GC collectors (CPU seconds, memory, open descriptors).
registry: CollectorRegistry = REGISTRY

disable_created_metrics()      # no `*_created` series: they double the series count for nothing here

# False (APP_METRICS_ENABLED=false): recorders return at once; used to measure their cost.
enabled = True

DEAD_LETTER = "dead_letter"      # the "category" of an event that went to the dead-letter topic
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
DB_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2500)

# --- tallies read at scrape time (and by the /stats view) ---------------------------------

events_in: collections.Counter[tuple[str, str]] = collections.Counter()       # (agent, topic)
events_out: collections.Counter[tuple[str, str]] = collections.Counter()      # (agent, category)
dead_letters: collections.Counter[tuple[str, str]] = collections.Counter()    # (reason, stage), stored
cache: collections.Counter[str] = collections.Counter()                       # hits, misses
isolated: collections.Counter[tuple[str, str]] = collections.Counter()        # (agent, reason)


class BatchHistogram:
    """A histogram whose observations arrive a batch at a time, exported at scrape time."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.series: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}

    def observe_many(self, labels: tuple[str, ...], values: Iterable[float]) -> None:
        counts, total = self.series.setdefault(labels, ([0] * (len(self.bounds) + 1), [0.0]))
        bounds, s = self.bounds, 0.0
        for value in values:
            counts[bisect_left(bounds, value)] += 1      # bucket `le` bound: value <= bound
            s += value
        total[0] += s

    def family(self, name: str, documentation: str, labelnames: Sequence[str]) -> HistogramMetricFamily:
        family = HistogramMetricFamily(name, documentation, labels=labelnames)
        for labels, (counts, total) in self.series.items():
            cumulative, buckets = 0, []
            for bound, count in zip((*map(_le, self.bounds), "+Inf"), counts, strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            family.add_metric(list(labels), buckets, total[0])
        return family


def _le(bound: float) -> str:
    return repr(float(bound))


e2e_latency = BatchHistogram(LATENCY_BUCKETS)

# --- prometheus_client metrics, observed per round trip or per batch ------------------------

postgres_seconds = Histogram("pipeline_postgres_seconds", "PostgreSQL round trips, by operation",
                             ["op"], buckets=DB_BUCKETS, registry=registry)
cql_seconds = Histogram("pipeline_cql_seconds", "CQL operations (a batch's statements together), by operation",
                        ["op"], buckets=DB_BUCKETS, registry=registry)
batch_size = Histogram("pipeline_batch_size", "Events per batch taken by an agent", ["agent"],
                       buckets=BATCH_BUCKETS, registry=registry)
consumer_lag = Gauge("pipeline_consumer_lag", "Records behind the end of the partition (end offset minus "
                     "committed offset), per assigned partition", ["topic", "partition"], registry=registry)
stall_recoveries = Counter("pipeline_stall_recoveries", "Stream partitions rewound to their committed offset "
                           "because the commit point stopped moving (app/stalls.py)", ["topic"], registry=registry)
watchdog_round_failures = Counter("pipeline_watchdog_round_failures", "Watchdog rounds that failed (logged; the "
                                  "next round comes as usual)", registry=registry)
refetched_after_rebalance = Counter("pipeline_refetched_after_rebalance", "Events an agent had taken in a batch "
                                   "when a rebalance came, left unprocessed because the rebalance seeks their "
                                   "partition back to its commit point (app/batching.py)", ["topic"],
                                   registry=registry)
cache_change_lag = Histogram("pipeline_cache_change_lag_seconds", "Account/customer change: commit in PostgreSQL "
                             "to applied in the accounts-cache table (agent account-changes)",
                             buckets=LATENCY_BUCKETS, registry=registry)
cache_changes = Counter("pipeline_cache_changes", "Change records of accounts and customers by table and "
                        "outcome (applied, stale, not_cached, dropped, fanned_out, tombstone, dead_letter)",
                        ["table", "outcome"], registry=registry)
cache_slot_retained_wal = Gauge("pipeline_cache_slot_retained_wal_bytes", "WAL PostgreSQL retains for the "
                                "change feed's replication slot (grows when the connector is down); -1: no slot",
                                registry=registry)
# The last change applied (epoch s, its lag in s): what /ready reports as the cache's freshness.
cache_change_last: dict[str, float] = {}
cache_slot_sample: dict[str, int] = {}          # {"retained": bytes, -1 without a slot}, sampled every 5 s


def cache_change_applied(table: str, outcome: str, lag_s: Optional[float] = None, now: float = 0.0) -> None:
    cache_changes.labels(table, outcome).inc()
    if lag_s is not None:
        cache_change_lag.observe(lag_s)
        cache_change_last.update(applied_at=now, lag_s=lag_s)


ready = Gauge("pipeline_ready", "1 when /ready answers 200 (every readiness check passes)", registry=registry)
ready_check = Gauge("pipeline_ready_check", "1 when this readiness check passes", ["check"], registry=registry)

# --- recorders called by the agents and adapters ------------------------------------------


def transactions_batch(events: Sequence[Any], outcomes: Sequence[Any], agent: str = "transactions") -> None:
    """One batch of the transactions pipeline is on the broker: count it in and out, and
    observe the end-to-end latency of every event (Kafka record timestamp to now)."""
    if not enabled:
        return
    now = time.time()
    messages = [event.message for event in events]
    events_in.update((agent, m.topic) for m in messages)
    events_out.update((agent, DEAD_LETTER if isinstance(o, PermanentError) else o.category) for o in outcomes)
    e2e_latency.observe_many((agent,), [now - m.timestamp for m in messages])


def batch_taken(agent: str, size: int) -> None:
    if enabled:
        batch_size.labels(agent).observe(size)


def batch_dropped_at_rebalance(events: Sequence[Any]) -> None:
    for topic, n in collections.Counter(event.message.topic for event in events).items():
        refetched_after_rebalance.labels(topic).inc(n)


def event_isolated(agent: str, reason: str) -> None:
    """An event that failed alone (app/batching.py) and was dead-lettered; always counted."""
    isolated[(agent, reason)] += 1


def cache_lookups(hits: int, misses: int) -> None:
    """Account-cache lookups of one batch (one per distinct account of the batch)."""
    if enabled:
        cache["hits"] += hits
        cache["misses"] += misses


def cache_hit_ratio() -> Optional[float]:
    lookups = cache["hits"] + cache["misses"]
    return cache["hits"] / lookups if lookups else None


F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def timed(histogram: Histogram, op: str) -> Callable[[F], F]:
    """Observe how long each call of an async adapter method takes (failures included)."""
    child = histogram.labels(op)

    def decorate(fun: F) -> F:
        @functools.wraps(fun)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return await fun(*args, **kwargs)
            finally:
                if enabled:
                    child.observe(time.perf_counter() - start)

        return wrapper  # type: ignore[return-value]

    return decorate


# --- collectors: Prometheus series built when /metrics is scraped ---------------------------


class PipelineCollector(Collector):
    """The tallies above as counters, the cache hit ratio and the end-to-end histogram."""

    def __init__(self, topic_of: Callable[[str], str],
                 unfinished: Callable[[], Iterable[Any]] = lambda: ()) -> None:
        self.topic_of = topic_of            # category -> output topic name
        self.unfinished = unfinished        # batches in progress (app.batching.Progress.unfinished)

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily("pipeline_events_in", "Events taken from an input topic",
                                     labels=["agent", "topic"])
        for (agent, topic), n in sorted(events_in.items()):
            family.add_metric([agent, topic], n)
        yield family
        family = CounterMetricFamily("pipeline_events_out", "Events whose output is on the broker, by output "
                                     "topic and category (dead_letter: the dead-letter topic)",
                                     labels=["agent", "topic", "category"])
        for (agent, category), n in sorted(events_out.items()):
            family.add_metric([agent, self.topic_of(category), category], n)
        yield family
        family = CounterMetricFamily("pipeline_dead_letters", "Dead letters stored by this worker's "
                                     "dead-letter agent, by reason and stage", labels=["reason", "stage"])
        for (reason, stage), n in sorted(dead_letters.items()):
            family.add_metric([reason, stage], n)
        yield family
        yield CounterMetricFamily("pipeline_cache_hits", "Account-cache lookups answered by the cache "
                                  "(one lookup per distinct account per batch)", value=cache["hits"])
        yield CounterMetricFamily("pipeline_cache_misses", "Account-cache lookups that queried PostgreSQL",
                                  value=cache["misses"])
        ratio = cache_hit_ratio()
        yield GaugeMetricFamily("pipeline_cache_hit_ratio", "Hits / lookups since the worker started "
                                "(NaN before the first lookup)", value=math.nan if ratio is None else ratio)
        family = CounterMetricFamily("pipeline_isolated_events", "Events that failed alone after their batch "
                                     "failed, and were dead-lettered, by agent and reason (internal_error: "
                                     "an unforeseen exception)", labels=["agent", "reason"])
        for (agent, reason), n in sorted(isolated.items()):
            family.add_metric([agent, reason], n)
        yield family
        gauge = GaugeMetricFamily("pipeline_oldest_batch_age_seconds", "Age of the oldest unfinished batch, "
                                  "per partition with one in progress (absent: none)",
                                  labels=["agent", "topic", "partition"])
        for u in self.unfinished():
            gauge.add_metric([u.agent, u.topic, str(u.partition)], u.age_s)
        yield gauge
        yield e2e_latency.family("pipeline_e2e_latency_seconds", "From the event's Kafka timestamp to its "
                                 "output being on the broker", ["agent"])


class FaustMonitorCollector(Collector):
    """faust's default sensor (`app.monitor`, a faust.sensors.Monitor) read at scrape time."""

    def __init__(self, monitor: Callable[[], Any]) -> None:
        self.monitor = monitor

    def collect(self) -> Iterator[Metric]:
        m = self.monitor()
        yield CounterMetricFamily("faust_messages_received", "Messages received from Kafka",
                                  value=m.messages_received_total)
        family = CounterMetricFamily("faust_messages_received_per_topic", "Messages received, by topic",
                                     labels=["topic"])
        for topic, n in sorted(m.messages_received_by_topic.items()):
            family.add_metric([topic], n)
        yield family
        yield GaugeMetricFamily("faust_messages_active", "Messages received and not yet acked",
                                value=m.messages_active)
        yield CounterMetricFamily("faust_events", "Events processed by streams", value=m.events_total)
        yield GaugeMetricFamily("faust_events_active", "Events being processed", value=m.events_active)
        family = CounterMetricFamily("faust_events_per_stream", "Events, by stream", labels=["stream"])
        for stream, n in sorted(m.events_by_stream.items()):
            family.add_metric([stream], n)
        yield family
        yield CounterMetricFamily("faust_messages_sent", "Messages handed to the producer", value=m.messages_sent)
        family = CounterMetricFamily("faust_messages_sent_per_topic", "Messages sent, by topic", labels=["topic"])
        for topic, n in sorted(m.messages_sent_by_topic.items()):
            family.add_metric([topic], n)
        yield family
        yield CounterMetricFamily("faust_send_errors", "Producer send errors", value=m.send_errors)
        yield CounterMetricFamily("faust_assignments_completed", "Partition assignments completed",
                                  value=m.assignments_completed)
        yield CounterMetricFamily("faust_assignments_failed", "Partition assignments failed",
                                  value=m.assignments_failed)
        yield CounterMetricFamily("faust_rebalances", "Rebalances started", value=m.rebalances)
        for name, doc, values in (
                ("faust_event_runtime_seconds", "Mean time a stream spent on an event (last 100)",
                 m.events_runtime),
                ("faust_commit_latency_seconds", "Mean consumer commit latency (last 30)", m.commit_latency),
                ("faust_send_latency_seconds", "Mean producer send latency (last 30)", m.send_latency),
                ("faust_rebalance_latency_seconds", "Mean rebalance duration (last 30)", m.rebalance_end_latency)):
            yield GaugeMetricFamily(name, doc, value=_mean(values))
        for name, doc, offsets in (
                ("faust_topic_partition_end_offset", "Last end offset seen, per partition", m.tp_end_offsets),
                ("faust_topic_partition_read_offset", "Last offset read, per partition", m.tp_read_offsets),
                ("faust_topic_partition_committed_offset", "Last offset committed, per partition",
                 m.tp_committed_offsets)):
            gauge = GaugeMetricFamily(name, doc, labels=["topic", "partition"])
            for tp, offset in sorted(offsets.items()):
                gauge.add_metric([tp.topic, str(tp.partition)], offset)
            yield gauge
        family = CounterMetricFamily("faust_table_operations", "Table keys read, updated and deleted",
                                     labels=["table", "operation"])
        for table, state in sorted(m.tables.items()):
            for operation in ("keys_retrieved", "keys_updated", "keys_deleted"):
                family.add_metric([table, operation], getattr(state, operation))
        yield family
        family = CounterMetricFamily("faust_http_responses", "Web responses, by status code",
                                     labels=["status_code"])
        for code, n in sorted(m.http_response_codes.items()):
            family.add_metric([str(int(code))], n)
        yield family
        family = CounterMetricFamily("faust_topic_buffer_full", "Times a partition's buffer was full "
                                     "(the stream could not keep up)", labels=["topic", "partition"])
        for tp, n in sorted(m.topic_buffer_full.items()):
            family.add_metric([tp.topic, str(tp.partition)], n)
        yield family


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values) if values else math.nan


def names(collectors: Iterable[Collector] = ()) -> set[str]:
    """Every sample name the registry (and these extra collectors) would export right now,
    e.g. `pipeline_events_in_total` and `pipeline_e2e_latency_seconds_bucket`."""
    found = set()
    for collector in (registry, *collectors):
        for family in collector.collect():
            found.add(family.name)
            found.update(sample.name for sample in family.samples)
            if family.type in ("counter",):
                found.add(family.name + "_total")
            if family.type == "histogram":
                found.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
    return found

