"""app.metrics wired into the running worker: faust's sensor, consumer lag, throughput, stats."""
from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import Any, Optional

from faust.types import TP

from app import health, metrics
from app.main import app, settings
from domain.dead_letters import WORKER_ID

log = logging.getLogger(__name__)
LAG_TIMEOUT_S = 2.0
LAG_CACHE_S = 2.0
THROUGHPUT_EVERY_S = 5.0
THROUGHPUT_WINDOW = 13           # samples: about a minute
INTERNAL_SUFFIXES = ("-changelog", "-__assignor-__leader")    # faust's own topics: no consumer lag


def _topic_of(category: str) -> str:
    if category == metrics.DEAD_LETTER:
        return settings.topic(settings.dlq_topic)
    return settings.sink_topic(category)


metrics.enabled = settings.metrics_enabled
if settings.metrics_enabled:
    metrics.registry.register(metrics.PipelineCollector(_topic_of))
    metrics.registry.register(metrics.FaustMonitorCollector(lambda: app.monitor))

# --- throughput ---------------------------------------------------------------------------

Snapshot = tuple[float, int, int, int]        # monotonic time, events in, forwarded, dead-lettered
_history: collections.deque[Snapshot] = collections.deque(maxlen=THROUGHPUT_WINDOW)
_started = time.monotonic()


def _snapshot() -> Snapshot:
    out = sum(n for (_, category), n in metrics.events_out.items() if category != metrics.DEAD_LETTER)
    dead = sum(n for (_, category), n in metrics.events_out.items() if category == metrics.DEAD_LETTER)
    return time.monotonic(), sum(metrics.events_in.values()), out, dead


@app.timer(interval=THROUGHPUT_EVERY_S)
async def sample_throughput() -> None:
    _history.append(_snapshot())


def throughput() -> dict[str, float]:
    """Events per second over about the last minute (since the oldest sample kept)."""
    now = _snapshot()
    first = _history[0] if _history else (_started, 0, 0, 0)
    window = now[0] - first[0]
    if window <= 0:
        return {"window_s": 0.0, "events_in_per_s": 0.0, "forwarded_per_s": 0.0, "dead_lettered_per_s": 0.0}
    return {"window_s": round(window, 1),
            "events_in_per_s": round((now[1] - first[1]) / window, 1),
            "forwarded_per_s": round((now[2] - first[2]) / window, 1),
            "dead_lettered_per_s": round((now[3] - first[3]) / window, 1)}


# --- consumer lag -------------------------------------------------------------------------

_lag: tuple[float, list[dict[str, Any]]] = (0.0, [])
_lag_lock = asyncio.Lock()


def _stream_partitions() -> list[TP]:
    try:
        assigned = app.consumer.assignment()
    except Exception:  # noqa: BLE001 - consumer not started yet: nothing assigned
        return []
    return sorted(tp for tp in assigned if not tp.topic.endswith(INTERNAL_SUFFIXES))


async def consumer_lag() -> list[dict[str, Any]]:
    """Per assigned partition: end offset, committed offset and their difference. Asks the
    broker for end offsets (one request, at most every LAG_CACHE_S); the committed offset is
    the consumer's own record of its last commit, else the earliest offset (nothing was ever
    committed, and the consumer starts from the beginning)."""
    global _lag
    async with _lag_lock:
        if time.monotonic() - _lag[0] < LAG_CACHE_S:
            return _lag[1]
        tps = _stream_partitions()
        rows: list[dict[str, Any]] = []
        if tps:
            try:
                ends = await asyncio.wait_for(app.consumer.highwaters(*tps), LAG_TIMEOUT_S)
                known: dict[TP, Optional[int]] = getattr(app.consumer, "_committed_offset", {})
                committed = {tp: known.get(tp) for tp in tps}
                missing = [tp for tp, offset in committed.items() if offset is None]
                if missing:
                    earliest = await asyncio.wait_for(app.consumer.earliest_offsets(*missing), LAG_TIMEOUT_S)
                    committed.update({tp: earliest.get(tp) for tp in missing})
            except Exception as exc:  # noqa: BLE001 - keep the last figures; say why once per failure
                log.warning("consumer lag unavailable: %s: %s", type(exc).__name__, exc)
                return _lag[1]
            for tp in tps:
                end, done = ends.get(tp), committed.get(tp)
                if end is None or done is None:
                    continue
                rows.append({"topic": tp.topic, "partition": tp.partition, "end_offset": end,
                             "committed_offset": done, "lag": max(0, end - done)})
        metrics.consumer_lag.clear()           # partitions revoked since the last refresh go away
        for row in rows:
            metrics.consumer_lag.labels(row["topic"], str(row["partition"])).set(row["lag"])
        _lag = (time.monotonic(), rows)
        return rows


async def refresh_for_scrape() -> None:
    """What /metrics computes on demand: consumer lag and the readiness gauges."""
    await asyncio.gather(consumer_lag(), health.readiness())


# --- the /stats body ------------------------------------------------------------------------


def _nested(counter: collections.Counter[tuple[str, str]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = collections.defaultdict(dict)
    for (outer, inner), n in sorted(counter.items()):
        out[outer][inner] = n
    return dict(out)


async def stats() -> dict[str, Any]:
    lag, readiness = await asyncio.gather(consumer_lag(), health.readiness())
    by_reason: collections.Counter[str] = collections.Counter()
    for (reason, _), n in metrics.dead_letters.items():
        by_reason[reason] += n
    ratio = metrics.cache_hit_ratio()
    e2e = metrics.e2e_latency.series.get(("transactions",))
    return {
        "worker": {"id": WORKER_ID, "url": str(app.conf.canonical_url), "app_id": settings.id,
                   "uptime_s": round(time.monotonic() - _started, 1)},
        "ready": readiness.asdict(),
        "throughput": throughput(),
        "events_in": _nested(metrics.events_in),
        "events_out": _nested(metrics.events_out),
        "dead_letters": {"total": sum(by_reason.values()), "by_reason": dict(by_reason.most_common()),
                         "by_reason_and_stage": [{"reason": r, "stage": s, "count": n}
                                                 for (r, s), n in sorted(metrics.dead_letters.items())]},
        "cache": {"hits": metrics.cache["hits"], "misses": metrics.cache["misses"],
                  "hit_ratio": None if ratio is None else round(ratio, 4)},
        "e2e_latency_s": {"count": sum(e2e[0]) if e2e else 0,
                          "mean": round(e2e[1][0] / sum(e2e[0]), 4) if e2e and sum(e2e[0]) else None},
        "consumer_lag": {"total": sum(row["lag"] for row in lag), "partitions": lag},
        "metrics_enabled": settings.metrics_enabled,
    }

