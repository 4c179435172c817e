"""app.metrics wired into the running worker: faust's sensor, consumer lag, recent rates, stats.
One Service of the App (`app.observability`) owns all of it."""
from __future__ import annotations

import asyncio
import collections
import logging
import time
from dataclasses import dataclass
from typing import Any, Optional

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from faust.types import TP
from mode import Service

from app import metrics
from app.batching import Progress
from app.kafka_security import aiokafka_auth
from app.kafka_tools import bootstrap
from app.settings import Settings
from domain.dead_letters import WORKER_ID

log = logging.getLogger(__name__)
LAG_TIMEOUT_S = 3.0
LAG_CACHE_S = 2.0
THROUGHPUT_EVERY_S = 5.0
THROUGHPUT_WINDOW = 13           # samples: about a minute
INTERNAL_SUFFIXES = ("-changelog", "-__assignor-__leader")    # faust's own topics: no consumer lag


@dataclass(frozen=True)
class Snapshot:
    at: float                     # monotonic seconds
    events_in: int
    forwarded: int
    dead_lettered: int
    e2e_buckets: tuple[int, ...]  # the transactions agent's end-to-end latency histogram


def snapshot() -> Snapshot:
    out = sum(n for (_, category), n in metrics.events_out.items() if category != metrics.DEAD_LETTER)
    dead = sum(n for (_, category), n in metrics.events_out.items() if category == metrics.DEAD_LETTER)
    series = metrics.e2e_latency.series.get(("transactions",))
    buckets = tuple(series[0]) if series else (0,) * (len(metrics.e2e_latency.bounds) + 1)
    return Snapshot(time.monotonic(), sum(metrics.events_in.values()), out, dead, buckets)


def _quantile_bound(counts: list[int], q: float) -> Optional[float]:
    """The upper bound of the bucket holding the q-quantile (None: no data, inf: beyond)."""
    total = sum(counts)
    if not total:
        return None
    seen = 0
    for bound, count in zip((*metrics.e2e_latency.bounds, float("inf")), counts, strict=True):
        seen += count
        if seen >= q * total:
            return bound
    return float("inf")


def recent(first: Snapshot, now: Snapshot) -> dict[str, Any]:
    """Rates and end-to-end latency between two snapshots."""
    window = now.at - first.at
    delta = [b - a for a, b in zip(first.e2e_buckets, now.e2e_buckets, strict=True)]
    p50, p99 = _quantile_bound(delta, 0.5), _quantile_bound(delta, 0.99)

    def rate(a: int, b: int) -> float:
        return round((b - a) / window, 1) if window > 0 else 0.0

    return {"window_s": round(window, 1),
            "events_in_per_s": rate(first.events_in, now.events_in),
            "forwarded_per_s": rate(first.forwarded, now.forwarded),
            "dead_lettered_per_s": rate(first.dead_lettered, now.dead_lettered),
            "e2e_events": sum(delta),
            "e2e_p50_at_most_s": None if p50 is None or p50 == float("inf") else p50,
            "e2e_p99_at_most_s": None if p99 is None or p99 == float("inf") else p99}


class LagProbe:
    """Asks the broker, on its own connections, for end offsets and the group's committed
    offsets. Not through faust's consumer: its calls queue behind the consumer thread's
    long-polling fetches (about a second each)."""

    def __init__(self, settings: Settings, group_id: str) -> None:
        self.settings = settings
        self.group_id = group_id
        self._consumer: Optional[AIOKafkaConsumer] = None
        self._admin: Optional[AIOKafkaAdminClient] = None

    async def _clients(self) -> tuple[AIOKafkaConsumer, AIOKafkaAdminClient]:
        if self._consumer is None or self._admin is None:
            servers, auth = bootstrap(self.settings.kafka_brokers), aiokafka_auth(self.settings)
            consumer = AIOKafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False, **auth)
            admin = AIOKafkaAdminClient(bootstrap_servers=servers, **auth)
            try:
                await consumer.start()
                await admin.start()
            except BaseException:
                await consumer.stop()
                await admin.close()
                raise
            self._consumer, self._admin = consumer, admin
        return self._consumer, self._admin

    async def offsets(self, tps: list[TP]) -> tuple[dict[TP, int], dict[TP, int]]:
        """End offsets, and committed offsets (the earliest offset where none was committed)."""
        consumer, admin = await self._clients()
        parts = [TopicPartition(tp.topic, tp.partition) for tp in tps]
        ends, committed = await asyncio.gather(
            consumer.end_offsets(parts), admin.list_consumer_group_offsets(self.group_id, partitions=parts))
        done = {tp: meta.offset for tp, meta in committed.items() if meta.offset >= 0}
        never = [tp for tp in parts if tp not in done]
        if never:
            done.update(await consumer.beginning_offsets(never))
        return ({TP(tp.topic, tp.partition): n for tp, n in ends.items()},
                {TP(tp.topic, tp.partition): n for tp, n in done.items()})

    async def close(self) -> None:
        consumer, admin, self._consumer, self._admin = self._consumer, self._admin, None, None
        if consumer is not None:
            await consumer.stop()
        if admin is not None:
            await admin.close()


def _nested(counter: collections.Counter[tuple[str, str]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = collections.defaultdict(dict)
    for (outer, inner), n in sorted(counter.items()):
        out[outer][inner] = n
    return dict(out)


class Observability(Service):
    """The worker's metrics collectors, a minute of snapshots for the recent rates, and the
    consumer lag (asked of the broker at most every LAG_CACHE_S, shared by /metrics, /stats
    and /status); the lag probe's connections are closed when it stops."""

    def __init__(self, app: Any, settings: Settings, health: Any, progress: Progress, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.app = app
        self.settings = settings
        self.health = health
        self.progress = progress
        self.started_at = time.monotonic()
        self._history: collections.deque[Snapshot] = collections.deque(maxlen=THROUGHPUT_WINDOW)
        self._probe = LagProbe(settings, app.conf.id)
        self._lag: dict[str, Any] = {"at": 0.0, "rows": []}     # the last figures, and when they were taken
        self._lag_lock = asyncio.Lock()

    async def on_first_start(self) -> None:
        metrics.enabled = self.settings.metrics_enabled
        if self.settings.metrics_enabled:
            metrics.registry.register(metrics.PipelineCollector(self._topic_of, self.progress.unfinished))
            metrics.registry.register(metrics.FaustMonitorCollector(lambda: self.app.monitor))

    async def on_stop(self) -> None:
        await self._probe.close()

    def _topic_of(self, category: str) -> str:
        if category == metrics.DEAD_LETTER:
            return self.settings.topic(self.settings.dlq_topic)
        return self.settings.sink_topic(category)

    @Service.task
    async def _sample(self) -> None:
        """Keep a minute of snapshots for the recent rates, and the consumer lag fresh (which
        also keeps the lag probe's connections warm for the first scrape)."""
        while not self.should_stop:
            await self.sleep(THROUGHPUT_EVERY_S)
            if self.should_stop:
                break
            self._history.append(snapshot())
            await self.consumer_lag()
            if self.settings.cache_changes:
                await self.sample_slot()

    async def sample_slot(self) -> None:
        """The change feed's replication slot: the WAL PostgreSQL keeps for it (-1: no slot)."""
        try:
            retained = await self.health.resources.postgres.slot_retained_wal_bytes(self.settings.cache_changes_slot)
        except Exception as exc:  # noqa: BLE001 - a sample missed; /ready reports PostgreSQL itself
            log.debug("replication slot sample failed: %r", exc)
            return
        metrics.cache_slot_sample["retained"] = -1 if retained is None else retained
        metrics.cache_slot_retained_wal.set(metrics.cache_slot_sample["retained"])

    def recent(self) -> dict[str, Any]:
        """Rates and end-to-end latency over about the last minute (since the oldest sample kept)."""
        now = snapshot()
        first = self._history[0] if self._history else Snapshot(self.started_at, 0, 0, 0, (0,) * len(now.e2e_buckets))
        return recent(first, now)

    def _stream_partitions(self) -> list[TP]:
        try:
            assigned = self.app.consumer.assignment()
        except Exception:  # noqa: BLE001 - consumer not started yet: nothing assigned
            return []
        return sorted(tp for tp in assigned if not tp.topic.endswith(INTERNAL_SUFFIXES))

    async def consumer_lag(self) -> list[dict[str, Any]]:
        """Per partition assigned to this worker: end offset, the group's committed offset and
        their difference."""
        async with self._lag_lock:
            if time.monotonic() - self._lag["at"] < LAG_CACHE_S:
                return list(self._lag["rows"])
            tps = self._stream_partitions()
            rows: list[dict[str, Any]] = []
            if tps:
                try:
                    ends, committed = await asyncio.wait_for(self._probe.offsets(tps), LAG_TIMEOUT_S)
                except Exception as exc:  # noqa: BLE001 - keep the last figures and say why
                    log.warning("consumer lag unavailable: %s: %s", type(exc).__name__, exc)
                    await self._probe.close()
                    return list(self._lag["rows"])
                for tp in tps:
                    end, done = ends.get(tp), committed.get(tp)
                    if end is None or done is None:
                        continue
                    rows.append({"topic": tp.topic, "partition": tp.partition, "end_offset": end,
                                 "committed_offset": done, "lag": max(0, end - done)})
            metrics.consumer_lag.clear()           # partitions revoked since the last refresh go away
            for row in rows:
                metrics.consumer_lag.labels(row["topic"], str(row["partition"])).set(row["lag"])
            self._lag.update(at=time.monotonic(), rows=rows)
            return rows

    async def refresh_for_scrape(self) -> None:
        """What /metrics computes on demand: consumer lag and the readiness gauges."""
        await asyncio.gather(self.consumer_lag(), self.health.readiness())

    async def stats(self) -> dict[str, Any]:
        """The /stats body."""
        lag, readiness = await asyncio.gather(self.consumer_lag(), self.health.readiness())
        by_reason: collections.Counter[str] = collections.Counter()
        for (reason, _), n in metrics.dead_letters.items():
            by_reason[reason] += n
        ratio = metrics.cache_hit_ratio()
        e2e = metrics.e2e_latency.series.get(("transactions",))
        return {
            "worker": {"id": WORKER_ID, "url": str(self.app.conf.canonical_url), "app_id": self.settings.id,
                       "uptime_s": round(time.monotonic() - self.started_at, 1)},
            "ready": readiness.asdict(),
            "recent": self.recent(),
            "events_in": _nested(metrics.events_in),
            "events_out": _nested(metrics.events_out),
            "dead_letters": {"total": sum(by_reason.values()), "by_reason": dict(by_reason.most_common()),
                             "by_reason_and_stage": [{"reason": r, "stage": s, "count": n}
                                                     for (r, s), n in sorted(metrics.dead_letters.items())]},
            "cache": {"hits": metrics.cache["hits"], "misses": metrics.cache["misses"],
                      "hit_ratio": None if ratio is None else round(ratio, 4)},
            "e2e_latency_s": {"count": sum(e2e[0]) if e2e else 0,
                              "mean_since_start": round(e2e[1][0] / sum(e2e[0]), 4)
                              if e2e and sum(e2e[0]) else None},
            "consumer_lag": {"total": sum(row["lag"] for row in lag), "partitions": lag},
            "metrics_enabled": self.settings.metrics_enabled,
        }
