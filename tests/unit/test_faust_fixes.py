"""The repairs to faust (app/faust_repairs/consumer.py), each next to faust's own behaviour.

The consumer is built without a broker (`__new__` plus the bookkeeping faust keeps); faust's
parent methods that would talk to Kafka are replaced by stand-ins that record the calls.
The whole consumer runs against the real stack in the integration tests and in
bench/backlog_start.py."""
from __future__ import annotations

import asyncio
import logging
import weakref
from collections import defaultdict
from types import SimpleNamespace
from typing import Any, AsyncIterator

import pytest
from aiokafka.structs import TopicPartition
from faust.transport.drivers import aiokafka as driver
from faust.types import TP
from intervaltree import IntervalTree

from app.faust_repairs.consumer import REVOKE_COMMIT_TIMEOUT_S, Consumer, FlowControl

RAW0, RAW1 = TP("transactions.raw", 0), TP("transactions.raw", 1)
CHANGELOG = TP("app-accounts-cache-changelog", 0)


def bare_consumer(offset_gaps: bool = False) -> Consumer:
    c = Consumer.__new__(Consumer)
    c._starts, c._rewinds = {}, {}
    c._acked = defaultdict(list)
    c._acked_index = defaultdict(set)
    c._gap = defaultdict(IntervalTree)
    c._committed_offset = defaultdict(lambda: None)
    c._seeks = c._seeking = c._fetch_seeks = 0
    c._held = set()
    c._handed_over = weakref.WeakKeyDictionary()
    c.app = SimpleNamespace(offset_gaps=offset_gaps, rebalancing=False,
                            topics=SimpleNamespace(acks_enabled_for=lambda topic: "changelog" not in topic),
                            tables=SimpleNamespace(changelog_topics={CHANGELOG.topic}))
    return c


def ack(c: Consumer, tp: TP, offsets: range) -> None:
    c._acked[tp].extend(offsets)
    c._acked_index[tp].update(offsets)


# (0) resuming flow --------------------------------------------------------------------

def test_resuming_a_flow_that_was_not_suspended_keeps_the_queued_records() -> None:
    """faust calls flow_control.resume() at the end of every recovery, after the fetcher has
    already queued records for the agents; mode's FlowControlEvent wipes them."""
    from mode.utils.queues import FlowControlEvent, FlowControlQueue

    async def queued_after_resume(flow: FlowControlEvent) -> int:
        q: FlowControlQueue[int] = FlowControlQueue(flow_control=flow, clear_on_resume=True)
        flow.resume()                    # flow starts suspended; the changelog phase resumes it
        for offset in range(204, 735):
            q.put_nowait(offset)
        flow.resume()
        return q.qsize()

    assert asyncio.run(queued_after_resume(FlowControlEvent())) == 0, "faust's own: wiped"
    assert asyncio.run(queued_after_resume(FlowControl())) == 531


def test_resuming_after_a_suspension_still_clears_the_queues() -> None:
    from mode.utils.queues import FlowControlQueue

    async def scenario() -> tuple[bool, int]:
        flow = FlowControl()
        q: FlowControlQueue[int] = FlowControlQueue(flow_control=flow, clear_on_resume=True)
        q.put_nowait(1)                  # queued before the rebalance: stale after it
        flow.suspend()
        flow.resume()
        return flow.is_active(), q.qsize()

    assert asyncio.run(scenario()) == (True, 0)


# (3) no gaps ---------------------------------------------------------------------------

def test_a_jump_of_the_read_offset_is_not_counted_as_processed() -> None:
    """faust's drain loop calls `_add_gap(tp, 1420, 1597)` when the read offset, just reset to
    the commit point 1419 by a seek, meets a stale record 1598. Records 1420..1597 had not
    been processed (bench/backlog_start.py run d1b539bb lost exactly those 178)."""
    faust_alone, repaired = bare_consumer(), bare_consumer()
    for c in (faust_alone, repaired):
        c._committed_offset[RAW0] = 1419
    asyncio.run(driver.Consumer._add_gap(faust_alone, RAW0, 1420, 1597))
    asyncio.run(repaired._add_gap(RAW0, 1420, 1597))
    for c in (faust_alone, repaired):
        ack(c, RAW0, range(1419, 1420))
        ack(c, RAW0, range(1598, 1700))
    assert driver.Consumer._new_offset(faust_alone, RAW0) == 1700, "faust commits past 1420..1597"
    assert repaired._new_offset(RAW0) == 1420, "the commit point stops at the first unprocessed record"


def test_gaps_are_kept_when_the_input_topics_may_have_them() -> None:
    c = bare_consumer(offset_gaps=True)
    c._committed_offset[RAW0] = 99
    asyncio.run(c._add_gap(RAW0, 100, 100))          # a transaction marker at offset 100
    ack(c, RAW0, range(99, 100))
    ack(c, RAW0, range(101, 150))
    assert c._new_offset(RAW0) == 150


# (2) the head check -------------------------------------------------------------------

def test_faust_alone_commits_past_unprocessed_records_when_nothing_was_committed_yet() -> None:
    """The fault itself: 0..699 were read and dropped, 700..999 processed; faust commits 1000."""
    c = bare_consumer()
    ack(c, RAW0, range(700, 1000))
    assert driver.Consumer._new_offset(c, RAW0) == 1000


def test_without_a_commit_the_start_stands_in_for_the_commit_point() -> None:
    c = bare_consumer()
    c._starts[RAW0] = 0
    ack(c, RAW0, range(700, 1000))
    assert c._new_offset(RAW0) is None, "0..699 not processed: nothing may be committed"
    ack(c, RAW0, range(0, 700))
    assert c._new_offset(RAW0) == 1000


def test_a_commit_at_zero_gets_the_head_check_too() -> None:
    faust_alone, repaired = bare_consumer(), bare_consumer()
    for c in (faust_alone, repaired):
        c._committed_offset[RAW0] = 0
        ack(c, RAW0, range(500, 600))
    assert driver.Consumer._new_offset(faust_alone, RAW0) == 600, "faust treats a commit at 0 as none"
    assert repaired._new_offset(RAW0) is None


def test_the_head_check_is_exact_without_gaps_and_lets_one_offset_pass_with_them() -> None:
    for gaps, expected in ((False, None), (True, 1600)):
        c = bare_consumer(offset_gaps=gaps)
        c._committed_offset[RAW1] = 187
        ack(c, RAW1, range(188, 1600))      # 187 itself was dropped
        assert c._new_offset(RAW1) == expected


def test_with_a_commit_point_and_every_record_processed_the_commit_moves() -> None:
    c = bare_consumer()
    c._committed_offset[RAW1] = 187
    ack(c, RAW1, range(1514, 1600))
    assert c._new_offset(RAW1) is None
    ack(c, RAW1, range(187, 1514))
    assert c._new_offset(RAW1) == 1600


# (1) partitions with no commit ----------------------------------------------------------

def test_partitions_without_a_commit_are_sought_to_their_beginning(monkeypatch: pytest.MonkeyPatch) -> None:
    c = bare_consumer()
    sought: list[tuple[TP, ...]] = []

    async def parent_seek_to_committed(self: Any) -> dict[TP, Any]:
        return {RAW0: 270, RAW1: None, CHANGELOG: None}

    async def seek_to_beginning(*tps: TP) -> None:
        sought.append(tps)

    async def position(tp: TP) -> int:
        return 42

    monkeypatch.setattr(driver.Consumer, "seek_to_committed", parent_seek_to_committed)
    c._thread = SimpleNamespace(seek_to_beginning=seek_to_beginning, position=position)
    assert asyncio.run(c.seek_to_committed()) == {RAW0: 270, RAW1: None, CHANGELOG: None}
    assert sought == [(RAW1,)], "committed partitions and changelogs (no acks) are left alone"
    assert c._starts == {RAW1: 42}


# the watchdog's rewind --------------------------------------------------------------------

def test_after_a_rewind_records_fetched_before_it_are_held_back_until_the_target(
        monkeypatch: pytest.MonkeyPatch) -> None:
    c = bare_consumer()
    sought: list[dict[TP, int]] = []
    # A batch fetched before the rewind of RAW0 to 187 still holds 4451.. (stale); then the
    # records from 187 arrive. RAW1 is not touched.
    fetched = [(RAW0, 4451), (RAW1, 900), (RAW0, 4452), (RAW0, 187), (RAW1, 901), (RAW0, 188)]

    async def parent_seek_wait(self: Any, partitions: dict[TP, int]) -> None:
        sought.append(dict(partitions))

    async def parent_getmany(self: Any, timeout: float) -> AsyncIterator[Any]:
        for tp, offset in fetched:
            yield tp, SimpleNamespace(offset=offset)

    monkeypatch.setattr(driver.Consumer, "seek_wait", parent_seek_wait)
    monkeypatch.setattr(driver.Consumer, "getmany", parent_getmany)

    async def scenario() -> list[tuple[TP, int]]:
        await c.rewind(RAW0, 187)
        return [(tp, m.offset) async for tp, m in c.getmany(1.0)]

    assert asyncio.run(scenario()) == [(RAW1, 900), (RAW0, 187), (RAW1, 901), (RAW0, 188)]
    assert sought == [{RAW0: 187}]
    assert c._rewinds == {}, "once the target arrived, nothing more is held back"


def test_a_rewind_target_that_never_arrives_stops_holding_records_back(monkeypatch: pytest.MonkeyPatch) -> None:
    c = bare_consumer()
    c._rewinds[RAW0] = (187, 0.0)        # its deadline has passed (e.g. retention deleted 187)

    async def parent_getmany(self: Any, timeout: float) -> AsyncIterator[Any]:
        yield RAW0, SimpleNamespace(offset=5000)

    monkeypatch.setattr(driver.Consumer, "getmany", parent_getmany)

    async def one_batch() -> list[tuple[TP, int]]:
        return [(tp, m.offset) async for tp, m in c.getmany(1.0)]

    assert asyncio.run(one_batch()) == [(RAW0, 5000)]


# (5) the seek at the end of a recovery ------------------------------------------------------

class FakeThread:
    """faust's consumer thread and the aiokafka consumer in it: calls run at once, and pause,
    resume, seek and fetch go into one list of events in the order the thread saw them."""

    def __init__(self, assigned: set[TP], events: list[Any]) -> None:
        self.assigned = {TopicPartition(tp.topic, tp.partition) for tp in assigned}
        self.events = events
        self.paused: set[TopicPartition] = set()
        self.fetches: list[dict[TP, list[Any]]] = []
        self.on_fetch: Any = None

    async def call_thread(self, fun: Any, *args: Any, **kwargs: Any) -> Any:
        result = fun(*args, **kwargs)
        return await result if asyncio.iscoroutine(result) else result

    def _ensure_consumer(self) -> Any:
        return SimpleNamespace(assignment=lambda: set(self.assigned), pause=self.pause, resume=self.resume,
                               _max_poll_records=1000)

    def pause(self, *tps: TopicPartition) -> None:
        self.paused |= set(tps)
        self.events.append(("pause", sorted(tps)))

    def resume(self, *tps: TopicPartition) -> None:
        self.paused -= set(tps)
        self.events.append(("resume", sorted(tps)))

    async def _fetch_records(self, consumer: Any, active: Any, timeout: float, max_records: int) -> Any:
        if self.on_fetch:
            self.on_fetch()
        records = self.fetches.pop(0)
        return {tp: rs for tp, rs in records.items() if TopicPartition(tp.topic, tp.partition) not in self.paused}


class Record:
    """A fetched record as the tests need it (weakly referable, as faust's Message)."""

    def __init__(self, offset: int) -> None:
        self.offset = offset


def test_records_handed_over_outside_a_rebalance_are_never_named_fetched_again() -> None:
    c = bare_consumer()
    c._handed_over = weakref.WeakKeyDictionary()
    assert c.fetched_again([Record(1), Record(2)]) == set()


def seeking_consumer(monkeypatch: pytest.MonkeyPatch, events: list[Any]) -> tuple[Consumer, FakeThread]:
    c = bare_consumer()
    thread = FakeThread({RAW0, RAW1, CHANGELOG}, events)
    c._thread = thread
    c.assignment = lambda: {RAW0, RAW1, CHANGELOG}      # type: ignore[method-assign]

    async def parent_perform_seek(self: Any) -> None:
        events.append(("seek and read offsets", sorted(thread.paused)))

    monkeypatch.setattr(driver.Consumer, "perform_seek", parent_perform_seek)
    return c, thread


def test_the_seek_holds_the_partitions_it_moves_paused_until_the_read_offsets_are_set(
        monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[Any] = []
    c, _ = seeking_consumer(monkeypatch, events)
    asyncio.run(c.perform_seek())
    moved = sorted([TopicPartition(RAW0.topic, 0), TopicPartition(RAW1.topic, 1)])
    assert events == [("pause", moved), ("seek and read offsets", moved), ("resume", moved)], \
        "the changelog (no acks, not sought by (1)) is never paused"
    assert (c._seeks, c._seeking) == (1, 0)


def test_overlapping_seeks_resume_fetching_after_the_last_one(monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[Any] = []
    c, thread = seeking_consumer(monkeypatch, events)
    c._hold_fetching({TopicPartition(RAW0.topic, 0)})       # e.g. getmany's own seek, under way
    asyncio.run(c.perform_seek())
    assert thread.paused == {TopicPartition(RAW0.topic, 0), TopicPartition(RAW1.topic, 1)}
    c._release_fetching()
    assert thread.paused == set() and c._seeking == 0


def test_records_taken_before_a_seek_began_are_not_handed_over(monkeypatch: pytest.MonkeyPatch) -> None:
    """The warm start of the trace: a fetch takes RAW0 0..2 and RAW1 50 at aiokafka's old
    position, the recovery's seek begins before they are handed over; the seek moves RAW0 and
    RAW1 back (they come again from their commit points), not the changelog."""
    events: list[Any] = []
    c, thread = seeking_consumer(monkeypatch, events)
    c.app.rebalancing = True
    m = Record
    thread.fetches = [{RAW0: [m(offset=0), m(offset=1), m(offset=2)], RAW1: [m(offset=50)], CHANGELOG: [m(offset=7)]},
                      {RAW0: [m(offset=0), m(offset=1)], RAW1: [m(offset=40)]}]

    async def parent_getmany(self: Any, timeout: float) -> AsyncIterator[Any]:
        records = await self._getmany(None, timeout)
        for tp, rs in records.items():
            for r in rs:
                yield tp, r

    monkeypatch.setattr(driver.Consumer, "getmany", parent_getmany)

    handed: list[Any] = []

    async def scenario() -> tuple[list[tuple[TP, int]], list[tuple[TP, int]]]:
        first: list[tuple[TP, int]] = []
        async for tp, message in c.getmany(1.0):
            first.append((tp, message.offset))
            handed.append(message)
            if len(first) == 1:
                await c.perform_seek()         # begins while the batch is being handed over
        again: list[tuple[TP, int]] = []
        async for tp, message in c.getmany(1.0):
            again.append((tp, message.offset))
            handed.append(message)
        return first, again

    first, again = asyncio.run(scenario())
    assert first == [(RAW0, 0), (CHANGELOG, 7)], "handed over before the seek; the rest is stale but the changelog's"
    assert again == [(RAW0, 0), (RAW0, 1), (RAW1, 40)], "fetched after the seek: all handed over"
    # (9): RAW0 0, handed over before the seek began, comes again; the changelog's record is not
    # repositioned, and what was fetched after the seek is what it fetched
    assert c.fetched_again(handed) == {id(handed[0])}


def test_a_fetch_that_took_its_records_after_the_seek_began_is_handed_over(monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[Any] = []
    c, thread = seeking_consumer(monkeypatch, events)
    c._hold_fetching(set())               # a seek began while the fetch waited for records
    thread.fetches = [{RAW0: [SimpleNamespace(offset=300)]}]
    records = asyncio.run(c._getmany(None, 1.0))
    assert records and c._fetch_seeks == c._seeks == 1


def test_without_a_seek_or_a_rebalance_getmany_adds_no_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    c = bare_consumer()
    inner = object()
    monkeypatch.setattr(driver.Consumer, "getmany", lambda self, timeout: inner)
    assert c.getmany(1.0) is inner


# (4) a static member back at another URL -------------------------------------------------

def assignor(cls: type, url: str, rejoins: list[str]) -> Any:
    from yarl import URL

    a = cls.__new__(cls)
    coordinator = SimpleNamespace(request_rejoin=lambda: rejoins.append("rejoin"))
    a.app = SimpleNamespace(conf=SimpleNamespace(canonical_url=URL(url)),
                            consumer=SimpleNamespace(_thread=SimpleNamespace(
                                _ensure_consumer=lambda: SimpleNamespace(_coordinator=coordinator))))
    a._table_manager = SimpleNamespace(changelog_topics=set())
    return a


def assignment_for(url: str) -> Any:
    """What the broker hands a static member: the assignment the leader made for `url`."""
    import zlib

    from faust.assignor.client_assignment import ClientAssignment, ClientMetadata

    metadata = ClientMetadata(assignment=ClientAssignment(actives={"transactions.raw": [0, 1]}, standbys={}),
                              url=url, changelog_distribution={url: {"transactions.raw": [0, 1]}})
    return SimpleNamespace(user_data=zlib.compress(metadata.dumps()), assignment=[("transactions.raw", [0, 1])])


def test_an_assignment_made_for_an_earlier_url_is_taken_and_the_group_told() -> None:
    """A worker restarted with its group instance id on another port gets the assignment made
    for its previous life: faust's assertion stopped aiokafka's coordination (never ready)."""
    from faust.assignor import PartitionAssignor as FaustPartitionAssignor

    from app.faust_repairs.consumer import PartitionAssignor

    rejoins: list[str] = []
    with pytest.raises(AssertionError):
        assignor(FaustPartitionAssignor, "http://w:6067", rejoins).on_assignment(assignment_for("http://w:6066"))
    ours = assignor(PartitionAssignor, "http://w:6067", rejoins)
    ours.on_assignment(assignment_for("http://w:6066"))
    assert ours.assigned_actives() == {RAW0, RAW1}
    assert rejoins == ["rejoin"]


def test_an_assignment_for_the_workers_own_url_needs_no_rejoin() -> None:
    from app.faust_repairs.consumer import PartitionAssignor

    rejoins: list[str] = []
    ours = assignor(PartitionAssignor, "http://w:6066", rejoins)
    ours.on_assignment(assignment_for("http://w:6066"))
    assert ours.assigned_actives() == {RAW0, RAW1} and rejoins == []


# (6) the fetch hold --------------------------------------------------------------------

def test_the_workers_consumer_holds_a_fetch_as_long_as_the_setting_says_faust_fixes_1500_ms() -> None:
    """faust builds the worker's consumer with fetch_max_wait_ms=1500; the repaired thread
    builds the same consumer and sets the app's figure, which aiokafka's start() hands to its
    Fetcher (the consumer is only built here: nothing connects)."""
    import app.main as main
    from app.faust_repairs.consumer import ConsumerThread

    async def build(cls: Any, wait_ms: int) -> Any:
        consumer = main.app.consumer
        thread = cls.__new__(cls)
        thread.consumer, thread.app, thread.transport = consumer, SimpleNamespace(
            fetch_max_wait_ms=wait_ms, conf=main.app.conf, client_only=False,
            tables=main.app.tables, assignor=main.app.assignor), main.app.transport
        return thread._create_worker_consumer(main.app.transport)

    faust_own = asyncio.run(build(driver.AIOKafkaConsumerThread, 100))
    assert faust_own._fetch_max_wait_ms == 1500
    ours = asyncio.run(build(ConsumerThread, 100))
    assert ours._fetch_max_wait_ms == 100
    assert isinstance(main.app.consumer._new_consumer_thread(), ConsumerThread)
    assert main.app.fetch_max_wait_ms == main.settings.kafka_fetch_max_wait_ms


def test_aiokafka_hands_the_consumers_fetch_wait_to_its_fetcher() -> None:
    """What (6) relies on, in the pinned aiokafka: the attribute is read when the Fetcher is made."""
    import inspect

    from aiokafka.consumer.consumer import AIOKafkaConsumer

    assert "fetch_max_wait_ms=self._fetch_max_wait_ms" in inspect.getsource(AIOKafkaConsumer.start)


# (7) commit before a revoke ------------------------------------------------------------

def revoke_scenario(monkeypatch: pytest.MonkeyPatch, *, wait_empty: bool, commit_error: BaseException | None = None,
                    batch_done: bool | None = None) -> list[Any]:
    """faust's own revoke stood in for by what it does first: forget the acked offsets.
    `batch_done`: the app has a batch of offsets 10-19 in progress at the revoke, which is
    done and acked while the app's `batches_done` is awaited (True), or not done (False)."""
    c = bare_consumer()
    c.app.conf = SimpleNamespace(stream_wait_empty=wait_empty)
    ack(c, RAW0, range(0, 10))
    seen: list[Any] = []

    if batch_done is not None:
        async def batches_done(timeout: float) -> bool:
            seen.append(("batches_done", timeout))
            if batch_done:
                ack(c, RAW0, range(10, 20))
            return batch_done
        c.app.batches_done = batches_done

    async def commit() -> bool:
        seen.append(("commit", sorted(c._acked[RAW0])))
        if commit_error is not None:
            raise commit_error
        return True

    async def faust_revoke(self: Any, revoked: set[TP]) -> None:
        for tp in revoked:
            self._acked.pop(tp, None)
        seen.append("faust's revoke")

    c.commit = commit  # type: ignore[method-assign]
    c._commit_fut = None
    monkeypatch.setattr(driver.Consumer, "on_partitions_revoked", faust_revoke)
    asyncio.run(c.on_partitions_revoked({RAW0}))
    return seen


def test_faust_forgets_the_acked_offsets_of_revoked_partitions() -> None:
    """faust's own order, the fault: after its revoke there is nothing left to commit."""
    import contextlib

    c = bare_consumer()
    ack(c, RAW0, range(0, 10))
    app_revoke: list[bool] = []

    async def on_revoked(revoked: set[TP]) -> None:
        app_revoke.append(RAW0 in c._acked)

    c._on_partitions_revoked = on_revoked  # type: ignore[method-assign]
    c.app._start_span_from_rebalancing = lambda name: contextlib.nullcontext()
    c._active_partitions, c._paused_partitions, c._read_offset = None, set(), defaultdict(lambda: None)
    c.diag = SimpleNamespace(set_flag=lambda flag: None, unset_flag=lambda flag: None)
    asyncio.run(driver.Consumer.on_partitions_revoked(c, {RAW0}))
    assert app_revoke == [False], "the app's revoke (and its producer flush) sees no acked offset"


def test_acked_work_is_committed_before_the_revoke_forgets_it(monkeypatch: pytest.MonkeyPatch) -> None:
    assert revoke_scenario(monkeypatch, wait_empty=False) == [("commit", list(range(10))), "faust's revoke"]


def test_a_failed_commit_before_the_revoke_is_logged_and_the_revoke_goes_on(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    seen = revoke_scenario(monkeypatch, wait_empty=False, commit_error=RuntimeError("coordinator gone"))
    assert seen == [("commit", list(range(10))), "faust's revoke"]
    assert "commit before the rebalance failed (RuntimeError: coordinator gone)" in caplog.text


def test_the_batch_in_progress_at_the_revoke_is_done_and_acked_before_the_commit(
        monkeypatch: pytest.MonkeyPatch) -> None:
    seen = revoke_scenario(monkeypatch, wait_empty=False, batch_done=True)
    assert seen == [("batches_done", REVOKE_COMMIT_TIMEOUT_S), ("commit", list(range(20))), "faust's revoke"]


def test_a_batch_not_done_at_the_revoke_is_left_to_the_new_owners_and_the_rest_committed(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    seen = revoke_scenario(monkeypatch, wait_empty=False, batch_done=False)
    assert seen == [("batches_done", REVOKE_COMMIT_TIMEOUT_S), ("commit", list(range(10))), "faust's revoke"]
    assert "a batch in progress at the revoke is not done" in caplog.text


def test_a_periodic_commit_under_way_at_the_revoke_is_followed_by_one_of_what_was_acked_since() -> None:
    c = bare_consumer()
    c.app.conf = SimpleNamespace(stream_wait_empty=False)
    ack(c, RAW0, range(0, 10))
    committed: list[list[int]] = []

    async def scenario() -> None:
        under_way: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        c._commit_fut = under_way           # the periodic commit began before offsets 10-19 were acked
        ack(c, RAW0, range(10, 20))

        async def force_commit(*args: Any, **kwargs: Any) -> bool:
            committed.append(sorted(c._acked[RAW0]))
            return True
        c.force_commit = force_commit  # type: ignore[method-assign]
        c.app.client_only = False
        c._loop = asyncio.get_running_loop()

        def periodic_commit_ends() -> None:      # as faust's commit(): cleared, then followers woken
            c._commit_fut = None
            under_way.set_result(None)
        asyncio.get_running_loop().call_later(0.01, periodic_commit_ends)
        await asyncio.wait_for(c._commit_after_any_under_way(), 2)
    asyncio.run(scenario())
    assert committed == [list(range(20))], "faust's commit() alone would have returned after the periodic one"


def test_with_stream_wait_empty_faust_commits_itself_and_the_repair_stays_out(monkeypatch: pytest.MonkeyPatch) -> None:
    assert revoke_scenario(monkeypatch, wait_empty=True) == ["faust's revoke"]


# (8) the drainer's delivery of each record --------------------------------------------

def delivering_consumer() -> Consumer:
    from mode.utils.locks import Event

    c = bare_consumer()
    c.suspend_flow, c._stopped, c._crashed = Event(), Event(), Event()
    c.loop = asyncio.get_running_loop()
    return c


def test_a_record_is_delivered_in_the_drainers_own_task_without_a_race() -> None:
    async def scenario() -> tuple[Any, Any, int]:
        c = delivering_consumer()
        tasks: list[Any] = []

        async def deliver() -> str:
            tasks.append(asyncio.current_task())
            return "delivered"

        before = len(asyncio.all_tasks())
        results = await c.wait_first(deliver(), c.suspend_flow.wait())
        return tasks[0] is asyncio.current_task(), results.results, len(asyncio.all_tasks()) - before

    same_task, results, new_tasks = asyncio.run(scenario())
    assert same_task, "the delivery ran in the caller's task: no task of its own"
    assert results == ["delivered"] and new_tasks == 0


def test_faust_races_the_delivery_against_the_flow_events_in_tasks_of_their_own() -> None:
    """faust's wait_first, what (8) replaces while the flow runs: the delivery is a new task."""
    from mode import Service

    async def scenario() -> bool:
        c = delivering_consumer()
        tasks: list[Any] = []

        async def deliver() -> None:
            tasks.append(asyncio.current_task())

        await Service.wait_first(c, deliver(), c.suspend_flow.wait())
        return tasks[0] is asyncio.current_task()

    assert asyncio.run(scenario()) is False


def test_once_the_flow_is_stopped_a_waiting_delivery_is_given_up_as_faust_does() -> None:
    async def scenario() -> tuple[bool, bool]:
        c = delivering_consumer()
        c.suspend_flow.set()
        cancelled = asyncio.Event()

        async def waits_forever() -> None:
            try:
                await asyncio.Event().wait()       # a full stream queue, say
            except asyncio.CancelledError:
                cancelled.set()
                raise

        delivery = waits_forever()
        results = await asyncio.wait_for(c.wait_first(delivery, c.suspend_flow.wait()), 5)
        await asyncio.sleep(0)
        return delivery in results.done, cancelled.is_set()

    delivered, cancelled = asyncio.run(scenario())
    assert not delivered and cancelled


def test_a_failing_delivery_raises_to_the_drainer() -> None:
    async def scenario() -> None:
        c = delivering_consumer()

        async def fails() -> None:
            raise ValueError("decode")

        await c.wait_first(fails(), c.suspend_flow.wait())

    with pytest.raises(ValueError, match="decode"):
        asyncio.run(scenario())
