"""A watchdog for stream partitions whose commit point stopped moving.

faust-streaming 0.15 can leave a partition with a hole: a record read past the commit
point that never reaches the agent, or whose ack is lost, so the committed offset stays
there for good while later records are processed (seen in bench/pipeline.py: two of eight
partitions stuck at offset 270 after a worker started on a backlog; the likely cause is its
recovery resuming stream partitions and fetching *before* it seeks them to the committed
offsets, so a batch processed in that window is acked against offsets the seek then
replaces). Nothing is lost on the broker, but the partition's lag never shrinks and a
restart replays it all.

The cure is the at-least-once one: seek the partition back to its committed offset; the
records from there are consumed again and the idempotent sinks absorb the repeats. A
partition counts as stalled when, for `stall_s` seconds and outside any rebalance or
retry of an outage, its commit point did not move although records at or past it were
read.

Prevention first: `batches` holds a taken batch while a rebalance is in progress, so that
nothing is acked while faust resets its offsets.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Hashable, Mapping, Optional, Sequence, TypeVar, cast

from faust.streams import Stream
from faust.types import EventT, StreamT

from app import metrics, retry

log = logging.getLogger(__name__)
K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Watch:
    committed: Optional[int]     # the commit point (next offset to consume); None: no commit yet
    since: float                 # when it was first seen at that value with records read past it


def find_stalled(positions: Mapping[K, tuple[Optional[int], Optional[int]]],
                 watched: dict[K, Watch], now: float, stall_s: float) -> list[K]:
    """positions: partition -> (commit point, offset of the last record read). Updates
    `watched` and returns the partitions stalled for `stall_s` (each then watched afresh)."""
    stalled = []
    for tp, (committed, read) in positions.items():
        if read is None or (committed is not None and read < committed):
            watched.pop(tp, None)          # nothing read past the commit point: not waiting on anything
            continue
        seen = watched.get(tp)
        if seen is None or seen.committed != committed:
            watched[tp] = Watch(committed, now)
        elif now - seen.since >= stall_s:
            stalled.append(tp)
            watched[tp] = Watch(committed, now)
    for tp in set(watched) - set(positions):
        del watched[tp]
    return stalled


async def batches(app: Any, stream: StreamT, size: int, within: float) -> AsyncIterator[Sequence[EventT]]:
    """`noack_take` batches (acks are the caller's), each handed over once no rebalance is
    in progress: faust seeks the partitions to their committed offsets at its end, and an
    ack in between is counted against offsets the seek then replaces."""
    async for events in cast(Stream, stream).noack_take(size, within=within):
        while app.rebalancing:
            await asyncio.sleep(0.05)
        yield events


_watched: dict[Any, Watch] = {}


async def check(app: Any, stall_s: float) -> list[Any]:
    """One watchdog round over the consumer's stream partitions; returns those it rewound."""
    consumer = app.consumer
    if app.rebalancing or retry.in_outage() or not app.tables.recovery.completed.is_set():
        _watched.clear()                   # offsets legitimately stand still meanwhile
        return []
    changelogs = {table.changelog_topic.get_topic_name() for table in app.tables.values()}
    positions = {tp: (consumer._committed_offset.get(tp), consumer._read_offset.get(tp))
                 for tp in consumer.assignment() if tp.topic not in changelogs}
    stalled = find_stalled(positions, _watched, time.monotonic(), stall_s)
    for tp in stalled:
        committed, read = positions[tp]
        target = committed
        if target is None:
            target = (await consumer.earliest_offsets(tp)).get(tp, 0)
        log.warning("partition %s/%s: commit point stuck at %s for %.0fs although offset %s was read; "
                    "seeking back to %s (records from there are consumed again; sinks are idempotent)",
                    tp.topic, tp.partition, committed, stall_s, read, target)
        metrics.stall_recoveries.labels(tp.topic).inc()
        await consumer.seek(tp, target)
    return stalled
