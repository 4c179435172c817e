"""A watchdog for stream partitions whose commit point stopped moving.

A partition has a hole when records read past its commit point never reached the agent (or
their ack was lost): the committed offset stays there for good while later records are
processed, and the lag never shrinks until a restart. app/faust_repairs/consumer.py repairs the
faust-streaming faults found to cause it and makes sure the commit point can never pass such
a record; this is the net for whatever is left (bench/backlog_start.py --kill 3 needed it in
3 of 10 starts before the repairs, in none of 8 after).

The cure is the at-least-once one: seek the partition back to its committed offset; the
records from there are consumed again and the idempotent sinks absorb the repeats. A
partition is rewound when, outside rebalances, table recovery and outages being retried,
either a hole (acked records behind the commit point, the consumer past them, nothing in
flight that could fill the gap) is seen at two rounds in a row, or its commit point has not
moved for `stall_s` although records at or past it were read (the backstop).
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Hashable, Mapping, Optional, TypeVar

from mode import Service

from app import metrics, retry
from app.kafka_tools import highwater

log = logging.getLogger(__name__)
K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Position:
    """What faust's consumer knows of one partition."""
    committed: Optional[int]        # the commit point (next offset to consume); None: no commit yet
    read: Optional[int]             # offset of the last record handed to the streams
    first_acked: Optional[int] = None     # lowest acked offset still waiting to be committed
    oldest_pending: Optional[int] = None  # lowest offset handed to the streams and not acked yet
    high: Optional[int] = None      # the broker's end of the partition, as a fetch last said; None: unknown

    @property
    def hole(self) -> bool:
        """Acked records wait behind the commit point, the consumer has read past them, and
        nothing in flight can fill the gap: the record at the commit point was lost between
        the fetch and the agent. (Just after a rewind the consumer reads from the commit point
        again, below the acked ones: no hole while the gap refills.)"""
        return (self.committed is not None and self.first_acked is not None
                and self.first_acked > self.committed
                and self.read is not None and self.read >= self.first_acked
                and (self.oldest_pending is None or self.oldest_pending >= self.first_acked))


@dataclass(frozen=True)
class Watch:
    committed: Optional[int]     # the commit point when first seen stuck
    since: float                 # when
    holes: int = 0               # consecutive rounds that saw a hole at that commit point


def find_stalled(positions: Mapping[K, Position], watched: dict[K, Watch], now: float,
                 stall_s: float) -> list[K]:
    """Updates `watched` and returns the partitions to rewind (each then watched afresh): a
    hole seen at two rounds in a row, or a commit point that has not moved for `stall_s`
    although records at or past it were read (the backstop for what the hole rule misses).
    A commit point at the broker's end waits for nothing: faust's seek sets the read offset to
    the commit point itself, so an idle partition would otherwise look read and stuck."""
    stalled = []
    for tp, pos in positions.items():
        if pos.read is None or (pos.committed is not None and pos.read < pos.committed):
            watched.pop(tp, None)          # nothing read past the commit point: not waiting on anything
            continue
        if pos.committed is not None and pos.high is not None and pos.committed >= pos.high:
            watched.pop(tp, None)          # caught up: nothing on the broker at or past the commit point
            continue
        seen = watched.get(tp)
        if seen is None or seen.committed != pos.committed:
            watched[tp] = Watch(pos.committed, now, int(pos.hole))
            continue
        holes = seen.holes + 1 if pos.hole else 0
        if holes >= 2 or now - seen.since >= stall_s:
            stalled.append(tp)
            watched[tp] = Watch(pos.committed, now)
        else:
            watched[tp] = Watch(seen.committed, seen.since, holes)
    for tp in set(watched) - set(positions):
        del watched[tp]
    return stalled


def positions_of(consumer: Any, tps: Any) -> dict[Any, Position]:
    """faust's bookkeeping (private attributes of faust.transport.consumer.Consumer, 0.15)."""
    pending: dict[Any, int] = {}
    for message in list(consumer._unacked_messages):
        if not message.acked and message.tp in tps:
            pending[message.tp] = min(message.offset, pending.get(message.tp, message.offset))
    out = {}
    for tp in tps:
        acked = consumer._acked.get(tp)
        out[tp] = Position(consumer._committed_offset.get(tp), consumer._read_offset.get(tp),
                           min(acked) if acked else None, pending.get(tp), highwater(consumer, tp))
    return out


class Watchdog(Service):
    """Every few seconds, one round over the consumer's stream partitions (none when
    `stall_s` is 0); owns what it has seen of each."""

    def __init__(self, app: Any, stall_s: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.app = app
        self.stall_s = stall_s
        self.interval_s = min(5.0, max(1.0, stall_s / 4))
        self._watched: dict[Any, Watch] = {}
        self._last_failure: Optional[str] = None

    @Service.task
    async def _rounds(self) -> None:
        if self.stall_s <= 0:
            return
        while not self.should_stop:
            await self.sleep(self.interval_s)
            if not self.should_stop:
                await self.round()

    async def round(self) -> None:
        """One round that cannot end the watchdog: a failure of it (a seek refused, the
        consumer between states) is logged, once per kind in a row, and the next round comes."""
        try:
            await self.check()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the net must outlive any one round
            kind = f"{type(exc).__name__}: {exc}"
            if kind != self._last_failure:
                log.exception("watchdog round failed (%s); the next one in %.0fs", kind, self.interval_s)
            self._last_failure = kind
            metrics.watchdog_round_failures.inc()
        else:
            self._last_failure = None

    async def check(self) -> list[Any]:
        """One watchdog round; returns the partitions it rewound."""
        app, stall_s = self.app, self.stall_s
        consumer = app.consumer
        if app.rebalancing or retry.in_outage() or not app.tables.recovery.completed.is_set():
            self._watched.clear()              # offsets legitimately stand still meanwhile
            return []
        changelogs = {table.changelog_topic.get_topic_name() for table in app.tables.values()}
        positions = positions_of(consumer, {tp for tp in consumer.assignment() if tp.topic not in changelogs})
        stalled = find_stalled(positions, self._watched, time.monotonic(), stall_s)
        for tp in stalled:
            pos = positions[tp]
            target = pos.committed
            if target is None:
                target = (await consumer.earliest_offsets(tp)).get(tp, 0)
            log.warning("partition %s/%s: commit point stuck at %s (%s; last read %s, lowest acked %s, "
                        "lowest in flight %s); seeking back to %s (records from there are consumed again; "
                        "sinks are idempotent)", tp.topic, tp.partition, pos.committed,
                        "a record there never reached the agent" if pos.hole else f"not moved for {stall_s:.0f}s",
                        pos.read, pos.first_acked, pos.oldest_pending, target)
            metrics.stall_recoveries.labels(tp.topic).inc()
            # On the consumer's own thread and event loop (as faust's recovery seeks), and with the
            # records fetched before it held back (app/faust_repairs/consumer.py).
            await consumer.rewind(tp, target)
        return stalled
