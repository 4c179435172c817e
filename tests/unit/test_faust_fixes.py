"""The repairs to faust (app/faust_repairs/consumer.py), each next to faust's own behaviour.

The consumer is built without a broker (`__new__` plus the bookkeeping faust keeps); faust's
parent methods that would talk to Kafka are replaced by stand-ins that record the calls.
The whole consumer runs against the real stack in the integration tests and in
bench/backlog_start.py."""
from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace
from typing import Any, AsyncIterator

import pytest
from faust.transport.drivers import aiokafka as driver
from faust.types import TP
from intervaltree import IntervalTree

from app.faust_repairs.consumer import Consumer, FlowControl

RAW0, RAW1 = TP("transactions.raw", 0), TP("transactions.raw", 1)
CHANGELOG = TP("app-accounts-cache-changelog", 0)


def bare_consumer(offset_gaps: bool = False) -> Consumer:
    c = Consumer.__new__(Consumer)
    c._starts, c._rewinds = {}, {}
    c._acked = defaultdict(list)
    c._acked_index = defaultdict(set)
    c._gap = defaultdict(IntervalTree)
    c._committed_offset = defaultdict(lambda: None)
    c._read_offset = defaultdict(lambda: None)
    c.app = SimpleNamespace(offset_gaps=offset_gaps, rebalancing=False, consumer_generation_id=1,
                            tables=SimpleNamespace(changelog_topics={CHANGELOG.topic}),
                            topics=SimpleNamespace(acks_enabled_for=lambda topic: "changelog" not in topic))
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


# (5) the seek to the committed offsets at the end of a recovery ----------------------------

class FakeThread:
    """aiokafka's side of the consumer thread: committed offsets, and the seeks made."""

    def __init__(self, committed: dict[TP, int | None]) -> None:
        self.committed_offsets, self.seeks = committed, []
        self.consumer = SimpleNamespace(assignment=lambda: set(committed), committed=self.committed,
                                        beginning_offsets=self.beginning_offsets,
                                        _fetcher=SimpleNamespace(seek_to=lambda tp, o: self.seeks.append((tp, o))))

    async def beginning_offsets(self, tps: list[TP]) -> dict[TP, int]:
        return {tp: 0 for tp in tps}

    async def committed(self, tp: TP) -> int | None:
        return self.committed_offsets[tp]

    def _ensure_consumer(self) -> Any:
        return self.consumer

    async def call_thread(self, fn: Any, *args: Any) -> Any:
        result = fn(*args)
        return await result if asyncio.iscoroutine(result) else result


def handed_during_recovery(c: Consumer, records: list[tuple[TP, int]], monkeypatch: pytest.MonkeyPatch) -> None:
    """The fetcher hands `records` over while the rebalance is under way (_drain_messages sets
    the read offset of each it delivers)."""
    async def parent_getmany(self: Any, timeout: float) -> AsyncIterator[Any]:
        for tp, offset in records:
            yield tp, SimpleNamespace(offset=offset)

    monkeypatch.setattr(driver.Consumer, "getmany", parent_getmany)

    async def drain() -> None:
        async for tp, message in c.getmany(1.0):
            if c._read_offset[tp] is None or message.offset >= c._read_offset[tp]:
                c._read_offset[tp] = message.offset

    asyncio.run(drain())


def test_a_partition_delivered_from_its_commit_point_on_is_not_sought_back(monkeypatch: pytest.MonkeyPatch) -> None:
    c = bare_consumer()
    c.app.rebalancing = True
    c._thread = thread = FakeThread({RAW0: 100, RAW1: 7})
    # A fresh assignment: aiokafka starts at the commit point by itself; 1,000 records of RAW0
    # are handed over while faust awaits the seek (RAW1 has none yet).
    handed_during_recovery(c, [(RAW0, o) for o in range(100, 1100)], monkeypatch)
    asyncio.run(c.perform_seek())
    assert c._read_offset[RAW0] == 1099, "read again from 100: the 1,000 records twice"
    assert (RAW0, 100) not in thread.seeks and thread.seeks == [(RAW1, 7)]
    assert c._read_offset[RAW1] == 7 and c._committed_offset == {RAW0: 100, RAW1: 7}


def test_faust_own_seek_reads_the_delivered_records_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fault itself: faust's perform_seek puts the read offset back at the commit point,
    so _drain_messages delivers 100.. again when aiokafka refetches them."""
    c = bare_consumer()
    c._read_offset[RAW0] = 1099

    async def seek_to_committed(self: Any) -> dict[TP, int]:
        return {RAW0: 100}

    monkeypatch.setattr(Consumer, "seek_to_committed", seek_to_committed)
    asyncio.run(driver.Consumer.perform_seek(c))
    assert c._read_offset[RAW0] == 100


def test_a_kept_partition_is_sought_back_and_its_prefetched_records_held_back(monkeypatch: pytest.MonkeyPatch) -> None:
    c = bare_consumer()
    c.app.rebalancing = True
    c._read_offset[RAW0] = 539            # the old generation's last delivered record
    c._thread = thread = FakeThread({RAW0: 100})
    # aiokafka's position is past the commit point (the old generation's records were dropped):
    # the new generation starts at 540, not 100.
    handed_during_recovery(c, [(RAW0, 540), (RAW0, 541)], monkeypatch)
    asyncio.run(c.perform_seek())
    assert thread.seeks == [(RAW0, 100)] and c._read_offset[RAW0] == 100
    # A batch fetched before the seek still holds 542..; then the records from 100 arrive.
    c._read_offset[RAW0] = 100
    handed_during_recovery(c, [(RAW0, 542), (RAW0, 543), (RAW0, 100), (RAW0, 101)], monkeypatch)
    assert c._read_offset[RAW0] == 101, "542 moved the read offset ahead: 100..541 dropped, a hole"


def test_records_the_drain_loop_drops_do_not_count_as_delivered(monkeypatch: pytest.MonkeyPatch) -> None:
    c = bare_consumer()
    c.app.rebalancing = True
    c._read_offset[RAW0] = 300            # stale: records below it are dropped by _drain_messages
    c._thread = thread = FakeThread({RAW0: 100})
    handed_during_recovery(c, [(RAW0, 100), (RAW0, 101)], monkeypatch)
    asyncio.run(c.perform_seek())
    assert thread.seeks == [(RAW0, 100)] and c._read_offset[RAW0] == 100


def test_with_offset_gaps_and_for_changelogs_nothing_is_held_back(monkeypatch: pytest.MonkeyPatch) -> None:
    c = bare_consumer(offset_gaps=True)
    c._thread = FakeThread({RAW0: 100, CHANGELOG: 50})
    asyncio.run(c.perform_seek())
    assert c._rewinds == {}
    c = bare_consumer()
    c._thread = FakeThread({RAW0: 100, CHANGELOG: 50})
    asyncio.run(c.perform_seek())
    assert set(c._rewinds) == {RAW0}


def test_a_partition_without_a_commit_delivered_from_its_beginning_is_not_sought_back(
        monkeypatch: pytest.MonkeyPatch) -> None:
    c = bare_consumer()
    c.app.rebalancing = True
    c._thread = thread = FakeThread({RAW0: None})
    handed_during_recovery(c, [(RAW0, o) for o in range(0, 1000)], monkeypatch)
    asyncio.run(c.perform_seek())
    assert thread.seeks == [] and c._read_offset[RAW0] == 999 and c._starts == {RAW0: 0}
