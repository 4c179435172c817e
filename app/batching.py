"""The one batch loop of every agent: take a batch, process it, isolate what fails, ack.

An outage of a server (TransientError) is waited out without limit, nothing dead-lettered.
Any other failure of a batch is the fault of some event in it until shown otherwise: the
batch is split in halves, each processed again (Lambda's bisect-on-error), down to the one
event at fault, which is tried once more and then handed to the agent's `isolate` (a dead
letter with its reason, `internal_error` for an unforeseen exception). A batch of n events
is so processed at most 2n times for such errors, never forever; the halves keep their
order, so a partition's events still reach the sinks in offset order. Writes are
idempotent, so what a failed attempt already wrote is harmless when written again.

`Progress` records which batches are unfinished and since when, for /ready and /metrics.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator, Optional, Sequence, cast

from faust.streams import Stream
from faust.types import EventT, StreamT

from app import metrics
from app.kafka_tools import highwater
from app.retry import retry_transient
from domain.errors import PermanentError, Stage, TransientError, internal_error

log = logging.getLogger(__name__)

Handle = Callable[[Sequence[EventT]], Awaitable[None]]
Isolate = Callable[[EventT, PermanentError], Awaitable[None]]
SINGLE_ATTEMPTS = 2          # an event alone is tried this often before it is isolated
RETRY_DELAY_S = 0.5          # lets a passing hiccup (a server, the broker's metadata) clear


class StageError(Exception):
    """An unforeseen exception, with the stage of the pipeline it came from."""

    def __init__(self, stage: Stage, error: BaseException) -> None:
        super().__init__(f"{stage.value}: {type(error).__name__}: {error}")
        self.stage = stage
        self.error = error


@contextlib.contextmanager
def stage(name: Stage) -> Iterator[None]:
    """Names the stage of whatever unforeseen exception leaves the block."""
    try:
        yield
    except (PermanentError, TransientError, StageError, asyncio.CancelledError):
        raise
    except Exception as exc:  # noqa: BLE001 - labelled and re-raised
        raise StageError(name, exc) from exc


def as_permanent(exc: BaseException, default_stage: Stage = Stage.STORE) -> PermanentError:
    """What a failure of one event alone is dead-lettered as."""
    if isinstance(exc, PermanentError):
        return exc
    if isinstance(exc, StageError):
        return internal_error(exc.stage, exc.error)
    return internal_error(default_stage, exc)


async def process(agent: str, events: Sequence[EventT], handle: Handle, isolate: Isolate) -> None:
    """Run `handle(events)` to completion: outages waited out, failing events isolated.
    Raises only CancelledError (the batch then stays unacked and is consumed again)."""
    error = await _attempt(agent, events, handle)
    if error is None:
        return
    if len(events) > 1:
        log.warning("%s: a batch of %d events failed (%s); processing it in halves to find the "
                    "event(s) at fault", agent, len(events), _describe(error))
        middle = len(events) // 2
        await process(agent, events[:middle], handle, isolate)
        await process(agent, events[middle:], handle, isolate)
        return
    for _ in range(SINGLE_ATTEMPTS - 1):
        await asyncio.sleep(RETRY_DELAY_S)
        error = await _attempt(agent, events, handle)
        if error is None:
            return
    event = events[0]
    permanent = as_permanent(error)
    message = event.message
    log.error("%s: event %s/%s@%s isolated as %s after %d attempts (%s)", agent, message.topic,
              message.partition, message.offset, permanent.reason.value, SINGLE_ATTEMPTS, _describe(error),
              exc_info=error if not isinstance(error, PermanentError) else None)
    metrics.event_isolated(agent, permanent.reason.value)
    try:
        await _until_no_outage(agent, lambda: isolate(event, permanent))
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - the last resort must not stop the partition
        # Even its dead letter failed (not an outage): say everything once, count it, go on.
        # The record stays at its offset of its topic; retrying forever would stall the partition.
        log.critical("%s: the dead letter of %s/%s@%s (%s) could not be written: %s; the record "
                     "stays only at that offset of its topic", agent, message.topic, message.partition,
                     message.offset, permanent.reason.value, _describe(exc), exc_info=exc)
        metrics.event_isolated(agent, "isolation_failed")


async def _attempt(agent: str, events: Sequence[EventT], handle: Handle) -> Optional[BaseException]:
    try:
        await _until_no_outage(agent, lambda: handle(events))
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure is isolated: see the module doc
        return exc
    return None


async def _until_no_outage(agent: str, call: Callable[[], Awaitable[None]]) -> None:
    """A TransientError that leaves the call (e.g. the broker gone while outputs were sent):
    the whole call again, after a backoff, for as long as the outage lasts."""
    await retry_transient(call, what=f"{agent} batch (an outage)")


def _describe(error: BaseException) -> str:
    if isinstance(error, PermanentError):
        return f"{error.reason.value}: {error.message[:300]}"
    return f"{type(error).__name__}: {str(error)[:300]}"


SETTLE_POLL_S = 0.01         # how often a revoke looks whether the batches in progress are done
LINGER_POLL_S = 0.002        # how often a batch behind the broker's end looks for its next events


async def batches(app: Any, stream: StreamT, size: int, within: float,
                  clock: Callable[[], float] = time.monotonic) -> AsyncIterator[Sequence[EventT]]:
    """Batches that follow the load (acks are the caller's): a batch is handed over when it
    holds `size` events, or `within` seconds after its first event, or as soon as nothing more
    is coming: nothing queued for the stream and every partition of the batch read up to the
    end the broker last reported (its high watermark). An idle stream so hands each event over
    at once (faust's `noack_take` waits out `within` for a batch that never fills), and a
    backlog goes in batches as full as faust delivers them (its consumer hands records over in
    steps, the stream's queue running dry in between: the watermark says more is coming).

    The stream's own iterator with its acks off (as `noack_take` does), read event by event;
    each batch is handed over once no rebalance is in progress (see `_current`)."""
    faust_stream = cast(Stream, stream)
    faust_stream.enable_acks = False
    queued_nothing = cast(Any, faust_stream.channel).queue.empty
    batch: list[EventT] = []
    read: dict[Any, int] = {}        # partition -> last offset of the batch
    deadline = 0.0
    async for _ in faust_stream:
        event = faust_stream.current_event
        if event is None:          # faust sets it for every value it yields from a topic
            raise RuntimeError("the stream yielded a value without its event")
        batch.append(event)
        read[event.message.tp] = event.message.offset
        if len(batch) == 1:
            deadline = clock() + within
        if len(batch) < size and queued_nothing():
            await asyncio.sleep(0)     # a delivery under way goes on
            while queued_nothing() and _behind(app, read) and clock() < deadline:
                await asyncio.sleep(LINGER_POLL_S)
        if len(batch) >= size or queued_nothing() or clock() >= deadline:
            current = await _current(app, batch)
            if current:
                yield current
            batch = []
            read = {}


def _behind(app: Any, read: dict[Any, int]) -> bool:
    """Whether some partition has records on the broker past what the batch read (as the
    consumer last heard: a fetch response's high watermark); unknown counts as caught up."""
    consumer = getattr(app, "consumer", None)
    if consumer is None:
        return False
    for tp, offset in read.items():
        high = highwater(consumer, tp)
        if high is not None and offset + 1 < high:
            return True
    return False


async def full_batches(app: Any, stream: StreamT, size: int, within: float) -> AsyncIterator[Sequence[EventT]]:
    """faust's `noack_take` batches: `size` events, or what came within `within` seconds (for
    an agent whose throughput needs full batches more than it needs a low latency); each
    handed over once no rebalance is in progress (see `batches`)."""
    async for events in cast(Stream, stream).noack_take(size, within=within):
        current = await _current(app, events)
        if current:
            yield current


async def _current(app: Any, events: Sequence[EventT]) -> Sequence[EventT]:
    """The events of a batch still to be processed, once no rebalance is in progress: those
    read in the consumer's current generation and not fetched again by its seek. A rebalance
    ends with faust seeking every partition back to its commit point (and the stream skipping
    what was fetched before), so the events of a batch taken before it, and those handed over
    during it before the seek (app/faust_repairs/consumer.py, repair 9), are fetched again,
    from that point, by this worker or by the partition's new owner: processed now, they would
    come out twice. Nothing is acked in between, so the commit point cannot pass them."""
    while app.rebalancing:
        await asyncio.sleep(0.05)
    generation = app.consumer_generation_id
    again = app.consumer.fetched_again(event.message for event in events)      # repair (9)
    current: list[EventT] = []
    dropped: list[EventT] = []
    for event in events:
        fresh = event.message.generation_id == generation and id(event.message) not in again
        (current if fresh else dropped).append(event)
    if dropped:
        log.info("%d events taken before a rebalance not processed (fetched again from the commit point): %s",
                 len(dropped), sorted({f"{e.message.topic}[{e.message.partition}]" for e in dropped}))
        metrics.batch_dropped_at_rebalance(dropped)
    return current


async def run(app: Any, agent: str, stream: StreamT, handle: Handle, isolate: Isolate, *,
              size: int, within: float, fill: bool = False) -> None:
    """The agent's whole life: once the migrations ran (`app.resources.ready`), batches
    processed and acked until the stream is cancelled; `fill`: batches filled or timed out
    (`full_batches`), else as the load comes (`batches`). An exception that still escapes marks
    the agent dead (/health then answers 503)."""
    take = full_batches if fill else batches
    progress: Progress = app.resources.progress
    try:
        await app.resources.ready()
        async for events in take(app, stream, size, within):
            metrics.batch_taken(agent, len(events))
            with progress.batch(agent, events):     # acked inside: a settled batch is committable
                await process(agent, events, handle, isolate)
                for event in events:
                    await stream.ack(event)
    except asyncio.CancelledError:
        raise
    except BaseException as exc:
        progress.died(agent, exc)
        raise


@dataclass(frozen=True)
class Unfinished:
    agent: str
    topic: str
    partition: int
    age_s: float


class Progress:
    """The batches being processed (one per agent: agents run with concurrency 1) and the
    agents that died."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._open: dict[str, tuple[float, frozenset[tuple[str, int]]]] = {}
        self.dead: dict[str, str] = {}

    @contextlib.contextmanager
    def batch(self, agent: str, events: Sequence[EventT]) -> Iterator[None]:
        partitions = frozenset((e.message.topic, e.message.partition) for e in events)
        self._open[agent] = (self.clock(), partitions)
        try:
            yield
        finally:
            self._open.pop(agent, None)

    async def settled(self, timeout: float, waiting_out_outage: Callable[[], bool]) -> bool:
        """Whether every batch in progress was processed and acked within `timeout` seconds
        (the caller holds new ones back); False at once while an outage is waited out (its
        batch waits without limit)."""
        deadline = self.clock() + timeout
        while self._open:
            if waiting_out_outage() or self.clock() >= deadline:
                return False
            await asyncio.sleep(SETTLE_POLL_S)
        return True

    def died(self, agent: str, exc: BaseException) -> None:
        self.dead[agent] = f"{type(exc).__name__}: {exc}"[:300]
        log.critical("agent %s died: %s", agent, self.dead[agent], exc_info=exc)

    def unfinished(self) -> list[Unfinished]:
        """Each partition with a batch in progress, the oldest batch first."""
        now = self.clock()
        oldest: dict[tuple[str, int], Unfinished] = {}
        for agent, (started, partitions) in self._open.items():
            for topic, partition in partitions:
                age = now - started
                if (topic, partition) not in oldest or oldest[(topic, partition)].age_s < age:
                    oldest[(topic, partition)] = Unfinished(agent, topic, partition, age)
        return sorted(oldest.values(), key=lambda u: -u.age_s)

    def stuck(self, limit_s: float) -> list[Unfinished]:
        return [u for u in self.unfinished() if u.age_s > limit_s]


def summary(stuck: Sequence[Unfinished], outages: Sequence[str]) -> str:
    """One line for /ready: which partitions, how long, and whether an outage is the cause."""
    by_agent: dict[str, list[Unfinished]] = collections.defaultdict(list)
    for u in stuck:
        by_agent[u.agent].append(u)
    parts = [f"{agent}: {', '.join(f'{u.topic}/{u.partition}' for u in us)} for {us[0].age_s:.0f}s"
             for agent, us in by_agent.items()]
    cause = f"waiting out an outage of {', '.join(outages)}" if outages else "no outage in progress"
    return f"batch unfinished on {'; '.join(parts)} ({cause})"
