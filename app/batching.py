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
import contextvars
import itertools
import logging
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator, Optional, Sequence, cast

from faust.streams import Stream
from faust.types import EventT, StreamT

from app import metrics
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
    each batch is handed over once no rebalance is in progress: faust seeks the partitions to
    their committed offsets at its end, and an ack in between is counted against offsets the
    seek then replaces."""
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
            while app.rebalancing:
                await asyncio.sleep(0.05)
            yield batch
            batch = []
            read = {}


def _behind(app: Any, read: dict[Any, int]) -> bool:
    """Whether some partition has records on the broker past what the batch read (as the
    consumer last heard: a fetch response's high watermark); unknown counts as caught up."""
    consumer = getattr(app, "consumer", None)
    if consumer is None:
        return False
    for tp, offset in read.items():
        try:
            high = consumer.highwater(tp)
        except Exception:  # noqa: BLE001 - no figure (yet): nothing is waited for
            continue
        if high is not None and offset + 1 < high:
            return True
    return False


async def full_batches(app: Any, stream: StreamT, size: int, within: float) -> AsyncIterator[Sequence[EventT]]:
    """faust's `noack_take` batches: `size` events, or what came within `within` seconds (for
    an agent whose throughput needs full batches more than it needs a low latency); each
    handed over once no rebalance is in progress (see `batches`)."""
    async for events in cast(Stream, stream).noack_take(size, within=within):
        while app.rebalancing:
            await asyncio.sleep(0.05)
        yield events


async def run(app: Any, agent: str, stream: StreamT, handle: Handle, isolate: Isolate, *,
              size: int, within: float, fill: bool = False, in_flight: int = 1) -> None:
    """The agent's whole life: once the migrations ran (`app.resources.ready`), batches
    processed and acked until the stream is cancelled; `fill`: batches filled or timed out
    (`full_batches`), else as the load comes (`batches`). An exception that still escapes marks
    the agent dead (/health then answers 503).

    `in_flight` > 1: up to that many batches are processed at once, the next one taken while
    the earlier ones wait on their servers (see `Pipeline`); acks still go batch after batch, in
    the order taken, each as soon as its batch and every one before it are done."""
    take = full_batches if fill else batches
    progress: Progress = app.resources.progress
    pipeline = Pipeline(agent, stream, handle, isolate, progress, in_flight)
    try:
        await app.resources.ready()
        async for events in take(app, stream, size, within):
            metrics.batch_taken(agent, len(events))
            await pipeline.add(events)
        await pipeline.drain()
    except asyncio.CancelledError:
        if pipeline.failure is None:
            raise
        progress.died(agent, pipeline.failure)
        raise pipeline.failure from None
    except BaseException as exc:
        progress.died(agent, exc)
        raise
    finally:
        pipeline.cancel()


_turn: contextvars.ContextVar[Optional["asyncio.Future[None]"]] = contextvars.ContextVar("batch_turn", default=None)


async def my_turn() -> None:
    """Waits until every batch taken before this one is done (processed and acked): what a
    handle calls before a write whose order matters (a later batch of the same partition may
    hold a newer version of the same row; two writers locking the same rows in opposite orders
    could deadlock). At once outside a pipeline, or for its oldest batch. Raises CancelledError
    when an earlier batch did not complete: its batch is then neither written nor acked."""
    earlier = _turn.get()
    if earlier is None:
        return
    await asyncio.wait([earlier])
    if earlier.cancelled() or earlier.exception() is not None:
        raise asyncio.CancelledError("an earlier batch of the pipeline did not complete")


class Pipeline:
    """Up to `depth` batches processed at once, acked strictly in the order they were taken.

    Each batch runs in a task of its own: `process`, then (once the batch before is acked) its
    acks. The agent's loop meanwhile takes the next batch, whose CPU-bound part (parsing) so
    overlaps an earlier batch's wait on its server; it waits only while `depth` batches are in
    flight. A batch is acked only after its own work is done and every batch before it is
    acked, with no need for a next batch to arrive: the committed offset never passes an event
    whose work is unfinished (faust's own agent `concurrency` does not promise that: faust
    #606). A task that raises (only CancelledError or an escaped bug: `process` isolates
    everything else) stops the pipeline: the batches after it ack nothing, are cancelled and
    are consumed again after a restart or rebalance, and the error leaves `run` as it would
    have without a pipeline. `depth` 1 is the plain loop: process, ack, take the next."""

    def __init__(self, agent: str, stream: StreamT, handle: Handle, isolate: Isolate, progress: "Progress",
                 depth: int = 1) -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.agent, self.stream, self.handle, self.isolate = agent, stream, handle, isolate
        self.progress, self.depth = progress, depth
        self.failure: Optional[BaseException] = None
        self._pending: collections.deque["asyncio.Task[None]"] = collections.deque()
        self._loop_task: Optional["asyncio.Task[Any]"] = None

    async def add(self, events: Sequence[EventT]) -> None:
        """Start the batch; return once fewer than `depth` batches are in flight."""
        if self.depth == 1:
            with self.progress.batch(self.agent, events):
                await process(self.agent, events, self.handle, self.isolate)
            await self._ack(events)
            return
        self._loop_task = asyncio.current_task()
        self._raise_failure()
        previous = self._pending[-1] if self._pending else None
        token = _turn.set(previous)
        try:
            task = asyncio.ensure_future(self._batch(events, previous))
        finally:
            _turn.reset(token)
        task.add_done_callback(self._done)
        self._pending.append(task)
        while len(self._pending) >= self.depth:
            await asyncio.wait([self._pending[0]])
            self._raise_failure()

    async def drain(self) -> None:
        """Every batch in flight done and acked, in order."""
        while self._pending:
            await asyncio.wait([self._pending[-1]])
            self._raise_failure()

    def cancel(self) -> None:
        """The batches still in flight cancelled, unacked (the stream ended or raised)."""
        for task in list(self._pending):
            task.cancel()

    def _raise_failure(self) -> None:
        if self.failure is not None:
            raise self.failure

    async def _batch(self, events: Sequence[EventT], previous: Optional["asyncio.Task[None]"]) -> None:
        with self.progress.batch(self.agent, events):
            await process(self.agent, events, self.handle, self.isolate)
        if previous is not None:
            await asyncio.wait([previous])
            if previous.cancelled() or previous.exception() is not None:
                raise asyncio.CancelledError("an earlier batch of the pipeline did not complete")
        await self._ack(events)

    def _done(self, task: "asyncio.Task[None]") -> None:
        if task in self._pending:
            self._pending.remove(task)
        if task.cancelled() or task.exception() is None or self.failure is not None:
            return
        # The loop may be waiting for a batch that an idle stream never brings: stop it now.
        self.failure = task.exception()
        if self._loop_task is not None and not self._loop_task.done():
            self._loop_task.cancel()

    async def _ack(self, events: Sequence[EventT]) -> None:
        for event in events:
            await self.stream.ack(event)


@dataclass(frozen=True)
class Unfinished:
    agent: str
    topic: str
    partition: int
    age_s: float


class Progress:
    """The batches being processed (per agent: one, or up to its pipeline's depth) and the
    agents that died."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._open: dict[tuple[str, int], tuple[float, frozenset[tuple[str, int]]]] = {}
        self._ids = itertools.count()
        self.dead: dict[str, str] = {}

    @contextlib.contextmanager
    def batch(self, agent: str, events: Sequence[EventT]) -> Iterator[None]:
        partitions = frozenset((e.message.topic, e.message.partition) for e in events)
        key = (agent, next(self._ids))
        self._open[key] = (self.clock(), partitions)
        try:
            yield
        finally:
            self._open.pop(key, None)

    def died(self, agent: str, exc: BaseException) -> None:
        self.dead[agent] = f"{type(exc).__name__}: {exc}"[:300]
        log.critical("agent %s died: %s", agent, self.dead[agent], exc_info=exc)

    def unfinished(self) -> list[Unfinished]:
        """Each partition with a batch in progress, the oldest batch first."""
        now = self.clock()
        oldest: dict[tuple[str, int], Unfinished] = {}
        for (agent, _), (started, partitions) in self._open.items():
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
