"""The shared batch mechanism with fake handles: isolation by halves, outages waited out,
bounded attempts, order kept, stages named, and the progress that /ready reads."""
from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any, Sequence

import pytest

from app import batching
from app.batching import Progress, StageError, stage, summary
from domain.errors import PermanentError, Reason, Stage, TransientError


def event(offset: int, partition: int = 0, value: bytes = b"ok") -> Any:
    return SimpleNamespace(message=SimpleNamespace(topic="in", partition=partition, offset=offset, value=value))


class Handle:
    """Processes a batch unless it holds a poisoned offset; records every attempt."""

    def __init__(self, poison: dict[int, BaseException], outages: int = 0) -> None:
        self.poison = poison
        self.outages = outages
        self.attempts: list[list[int]] = []
        self.done: list[int] = []

    async def __call__(self, events: Sequence[Any]) -> None:
        offsets = [e.message.offset for e in events]
        self.attempts.append(offsets)
        if self.outages:
            self.outages -= 1
            raise TransientError("broker gone")
        for offset in offsets:
            if offset in self.poison:
                with stage(Stage.ENRICH):
                    raise self.poison[offset]
        self.done.extend(offsets)


@pytest.fixture(autouse=True)
def _fast(no_backoff: None) -> None:
    """No real backoff in these tests."""


def run(handle: Handle, events: list[Any]) -> list[tuple[int, PermanentError]]:
    isolated: list[tuple[int, PermanentError]] = []

    async def isolate(e: Any, err: PermanentError) -> None:
        isolated.append((e.message.offset, err))

    asyncio.run(batching.process("test", events, handle, isolate))
    return isolated


def test_one_poisoned_event_is_isolated_with_its_stage_and_the_rest_processed_in_order() -> None:
    handle = Handle({13: OverflowError("date value out of range")})
    isolated = run(handle, [event(n) for n in range(32)])
    assert [offset for offset, _ in isolated] == [13]
    error = isolated[0][1]
    assert (error.reason, error.stage) == (Reason.INTERNAL_ERROR, Stage.ENRICH)
    assert error.message == "OverflowError: date value out of range"
    assert handle.done == [n for n in range(32) if n != 13], "every other event, in offset order"
    assert len(handle.attempts) <= 2 * 32, "bounded"


def test_a_refusal_found_by_halving_keeps_its_own_reason() -> None:
    refused = PermanentError(Stage.STORE, Reason.REJECTED_BY_DATABASE, "invalid byte sequence 0x00")
    isolated = run(Handle({2: refused, 5: refused}), [event(n) for n in range(8)])
    assert [(o, e.reason) for o, e in isolated] == [(2, Reason.REJECTED_BY_DATABASE), (5, Reason.REJECTED_BY_DATABASE)]


def test_every_event_poisoned_each_ends_isolated_in_bounded_attempts() -> None:
    events = [event(n) for n in range(16)]
    handle = Handle({n: KeyError(n) for n in range(16)})
    assert [o for o, _ in run(handle, events)] == list(range(16))
    # 2n-1 attempts to split down to single events, plus one retry of each single event.
    assert len(handle.attempts) == (2 * 16 - 1) + 16


def test_an_outage_is_waited_out_without_isolating_anything() -> None:
    handle = Handle({}, outages=25)
    assert run(handle, [event(n) for n in range(4)]) == []
    assert handle.done == [0, 1, 2, 3] and len(handle.attempts) == 26


def test_a_failure_that_passes_on_the_second_try_is_not_isolated() -> None:
    class Flaky(Handle):
        async def __call__(self, events: Sequence[Any]) -> None:
            if not self.attempts:
                self.attempts.append([e.message.offset for e in events])
                raise RuntimeError("once")
            await super().__call__(events)

    handle = Flaky({})
    assert run(handle, [event(0), event(1)]) == []
    assert handle.done == [0, 1]


def test_cancellation_goes_through_and_isolates_nothing() -> None:
    async def forever(events: Sequence[Any]) -> None:
        await asyncio.Event().wait()

    async def isolate(e: Any, err: PermanentError) -> None:
        raise AssertionError("nothing is isolated on cancellation")

    async def scenario() -> None:
        task = asyncio.ensure_future(batching.process("t", [event(0)], forever, isolate))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())


def test_stage_labels_unforeseen_errors_only() -> None:
    with pytest.raises(StageError) as caught:
        with stage(Stage.DECODE):
            raise ValueError("x")
    assert caught.value.stage is Stage.DECODE and isinstance(caught.value.error, ValueError)
    with pytest.raises(TransientError):
        with stage(Stage.DECODE):
            raise TransientError("down")
    with pytest.raises(PermanentError):
        with stage(Stage.DECODE):
            raise PermanentError(Stage.VALIDATE, Reason.MISSING_FIELD, "m")


def test_progress_names_the_partitions_of_an_unfinished_batch_and_forgets_finished_ones() -> None:
    now = [100.0]
    progress = Progress(clock=lambda: now[0])
    with progress.batch("transactions", [event(0, 3), event(1, 5)]):
        now[0] = 250.0
        stuck = progress.stuck(120)
        assert {(u.topic, u.partition, u.age_s) for u in stuck} == {("in", 3, 150.0), ("in", 5, 150.0)}
        line = summary(stuck, ["PostgreSQL (accounts)"])
        assert "in/3" in line and "in/5" in line and "outage of PostgreSQL (accounts)" in line
        assert progress.stuck(200) == []
    assert progress.unfinished() == []


def test_an_agent_whose_loop_raises_is_marked_dead() -> None:
    progress = Progress()

    class Broken:
        enable_acks = True
        channel = SimpleNamespace(queue=SimpleNamespace(empty=lambda: True))

        def __aiter__(self) -> Any:
            async def gen() -> Any:
                raise RuntimeError("stream broke")
                yield  # pragma: no cover
            return gen()

    migrated: list[bool] = []

    async def ready() -> None:
        migrated.append(True)

    app = SimpleNamespace(rebalancing=False, resources=SimpleNamespace(progress=progress, ready=ready))

    async def handle(events: Sequence[Any]) -> None:
        return None

    with pytest.raises(RuntimeError):
        asyncio.run(batching.run(app, "clicks", Broken(), handle, handle, size=1, within=0.1))  # type: ignore[arg-type]
    assert migrated == [True], "the migrations awaited before the first batch"
    assert "clicks" in progress.dead and "stream broke" in progress.dead["clicks"]


def test_an_agent_whose_migrations_fail_is_marked_dead_and_takes_nothing() -> None:
    progress = Progress()

    async def ready() -> None:
        raise RuntimeError("no migrations in the package")

    class Untouched:
        def __aiter__(self) -> Any:
            raise AssertionError("a batch taken before the migrations ran")

    app = SimpleNamespace(rebalancing=False, resources=SimpleNamespace(progress=progress, ready=ready))

    async def handle(events: Sequence[Any]) -> None:
        return None

    with pytest.raises(RuntimeError):
        asyncio.run(batching.run(app, "sales", Untouched(), handle, handle, size=1, within=0.1))  # type: ignore[arg-type]
    assert "no migrations in the package" in progress.dead["sales"]


def test_an_event_whose_dead_letter_also_fails_is_counted_and_the_batch_goes_on() -> None:
    from app import metrics

    handle = Handle({1: ValueError("bad")})
    done: list[int] = []

    async def broken_isolate(e: Any, err: PermanentError) -> None:
        raise RuntimeError("the dead-letter topic refused it too")

    async def scenario() -> None:
        await batching.process("dlq-test", [event(n) for n in range(4)], handle, broken_isolate)
        done.extend(handle.done)

    before = metrics.isolated[("dlq-test", "isolation_failed")]
    asyncio.run(scenario())
    assert done == [0, 2, 3], "the batch completed without the event at fault"
    assert metrics.isolated[("dlq-test", "isolation_failed")] == before + 1


class _QueuedStream:
    """A stream whose queue is a list of arrivals: each `None` is a pause (nothing queued)."""

    def __init__(self, arrivals: list[Any], generation: Any = lambda: 1) -> None:
        self.arrivals = list(arrivals)
        self.generation = generation          # the consumer's generation as each event is read
        self.enable_acks = True
        self.current_event: Any = None
        self.channel = SimpleNamespace(queue=SimpleNamespace(empty=self._empty))

    def _empty(self) -> bool:
        return not self.arrivals or self.arrivals[0] is None

    def __aiter__(self) -> Any:
        async def gen() -> Any:
            while self.arrivals:
                item = self.arrivals.pop(0)
                if item is None:
                    continue
                self.current_event = SimpleNamespace(n=item, message=SimpleNamespace(
                    tp=("in", 0), topic="in", partition=0, offset=item, generation_id=self.generation()))
                yield item
        return gen()


def _none(messages: Any) -> set[int]:
    return set()


def _taken(arrivals: list[Any], size: int, within: float = 60.0, clock: Any = None,
           highwater: Any = None) -> list[list[Any]]:
    stream = _QueuedStream(arrivals)
    app = SimpleNamespace(rebalancing=False, consumer_generation_id=1,
                          consumer=SimpleNamespace(highwater=highwater or (lambda tp: None), fetched_again=_none))

    async def scenario() -> list[list[Any]]:
        kwargs = {"clock": clock} if clock is not None else {}
        return [[e.n for e in b]
                async for b in batching.batches(app, stream, size, within, **kwargs)]  # type: ignore[arg-type]
    taken = asyncio.run(scenario())
    assert stream.enable_acks is False          # acks are the caller's
    return taken


def test_a_batch_goes_as_soon_as_nothing_more_is_queued() -> None:
    assert _taken([1, None, 2, 3, None, 4], size=500) == [[1], [2, 3], [4]]


def test_a_backlog_goes_in_full_batches() -> None:
    assert _taken(list(range(7)), size=3) == [[0, 1, 2], [3, 4, 5], [6]]


def test_a_stream_that_never_drains_still_hands_a_batch_over_within_its_bound() -> None:
    ticks = iter(range(100))       # one tick per clock read: a batch starts and checks once per event
    assert _taken(list(range(6)), size=100, within=2.5, clock=lambda: float(next(ticks))) == [[0, 1, 2], [3, 4, 5]]


def test_a_batch_behind_the_broker_end_waits_for_the_rest_within_its_bound() -> None:
    # the queue runs dry after 1 and after 3, but the broker holds offsets up to 3: the first
    # pause is a delivery in steps (the batch waits), the second is the end (it goes)
    stream_arrivals = [0, 1, None, 2, 3, None]
    stream = _QueuedStream(stream_arrivals)
    app = SimpleNamespace(rebalancing=False, consumer_generation_id=1,
                          consumer=SimpleNamespace(highwater=lambda tp: 4, fetched_again=_none))
    pauses = [0]
    real_sleep = asyncio.sleep

    async def sleep(delay: float) -> None:
        if delay > 0 and stream.arrivals and stream.arrivals[0] is None:
            pauses[0] += 1
            stream.arrivals.pop(0)     # the next delivery arrives while the batch lingers
        await real_sleep(0)

    async def scenario() -> list[list[Any]]:
        return [[e.n for e in b] async for b in batching.batches(app, stream, 500, 60.0)]  # type: ignore[arg-type]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(batching.asyncio, "sleep", sleep)
        assert asyncio.run(scenario()) == [[0, 1, 2, 3]]
    assert pauses[0] == 1


def test_a_batch_taken_before_a_rebalance_is_not_handed_over_after_it() -> None:
    # 0-2 read in generation 1; a rebalance begins as the third is read, and ends (generation 2)
    # while the batch waits for it; 3-4 are read in generation 2 (from the commit point): only
    # what the new generation read is handed over
    app = SimpleNamespace(rebalancing=False, consumer_generation_id=1,
                          consumer=SimpleNamespace(highwater=lambda tp: None, fetched_again=_none))
    reads = iter(range(100))

    def generation() -> int:
        if next(reads) == 2:
            app.rebalancing = True
        return app.consumer_generation_id

    stream = _QueuedStream([0, 1, 2, 3, 4], generation=generation)
    real_sleep = asyncio.sleep

    async def sleep(delay: float) -> None:
        if app.rebalancing:
            app.rebalancing, app.consumer_generation_id = False, 2
        await real_sleep(0)

    async def scenario() -> list[list[Any]]:
        return [[e.n for e in b] async for b in batching.batches(app, stream, 3, 60.0)]  # type: ignore[arg-type]

    from app import metrics
    before = metrics.refetched_after_rebalance.labels("in")._value.get()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(batching.asyncio, "sleep", sleep)
        assert asyncio.run(scenario()) == [[3, 4]]
    assert app.consumer_generation_id == 2
    assert metrics.refetched_after_rebalance.labels("in")._value.get() == before + 3


def test_only_the_events_of_the_current_generation_not_fetched_again_are_processed() -> None:
    events = [SimpleNamespace(message=SimpleNamespace(topic="in", partition=p, offset=o, generation_id=g))
              for p, o, g in [(0, 10, 4), (1, 7, 5), (0, 11, 4), (1, 8, 5)]]
    again = {id(events[3].message)}      # handed over during the rebalance, before its seek (repair 9)
    app = SimpleNamespace(rebalancing=False, consumer_generation_id=5,
                          consumer=SimpleNamespace(fetched_again=lambda messages: again))
    current = asyncio.run(batching._current(app, events))  # type: ignore[arg-type]
    assert [(e.message.partition, e.message.offset) for e in current] == [(1, 7)]


def test_a_revoke_waits_for_the_batch_in_progress_but_not_through_an_outage_nor_past_its_bound() -> None:
    async def scenario() -> list[Any]:
        progress = Progress()
        outage = [False]
        results: list[Any] = [await progress.settled(0.5, lambda: outage[0])]     # nothing open: at once

        async def batch() -> None:
            with progress.batch("transactions", [event(1)]):
                await asyncio.sleep(0.05)
        task = asyncio.create_task(batch())
        await asyncio.sleep(0)
        results.append(await progress.settled(5.0, lambda: outage[0]))            # done within the bound
        results.append(task.done())

        stuck = asyncio.create_task(asyncio.Event().wait())
        async def forever() -> None:
            with progress.batch("transactions", [event(2)]):
                await stuck
        hung = asyncio.create_task(forever())
        await asyncio.sleep(0)
        outage[0] = True
        started = time.monotonic()
        results.append(await progress.settled(5.0, lambda: outage[0]))            # an outage: no wait
        results.append(time.monotonic() - started < 0.5)
        outage[0] = False
        results.append(await progress.settled(0.1, lambda: outage[0]))            # past the bound
        hung.cancel()
        stuck.cancel()
        return results
    assert asyncio.run(scenario()) == [True, True, True, False, True, False]
