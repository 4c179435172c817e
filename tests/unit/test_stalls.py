"""The stalled-partition watchdog's rule (app/stalls.py) and the outage flag it respects."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest
from faust.types import TP

from app import retry
from app.stalls import Position, Watch, find_stalled
from domain.errors import TransientError


def test_a_commit_point_that_does_not_move_past_read_records_is_a_stall() -> None:
    watched: dict[str, Watch] = {}
    assert find_stalled({"p0": Position(270, 390)}, watched, now=0.0, stall_s=60) == []
    assert find_stalled({"p0": Position(270, 900)}, watched, now=59.0, stall_s=60) == [], "not yet"
    assert find_stalled({"p0": Position(270, 900)}, watched, now=60.0, stall_s=60) == ["p0"]
    # Then watched afresh: not rewound again at every round.
    assert find_stalled({"p0": Position(270, 900)}, watched, now=61.0, stall_s=60) == []
    assert find_stalled({"p0": Position(270, 900)}, watched, now=120.0, stall_s=60) == ["p0"]


def test_a_moving_commit_point_or_nothing_read_past_it_is_not_a_stall() -> None:
    watched: dict[str, Watch] = {}
    for second, committed in enumerate(range(0, 1000, 10)):      # busy and committing
        assert find_stalled({"p1": Position(committed, committed + 500)}, watched, float(second * 10), 60) == []
    # Idle and fully committed: the last record read is just below the commit point.
    for second in range(0, 300, 10):
        assert find_stalled({"p2": Position(5000, 4999)}, watched, float(second), 60) == []
    assert "p2" not in watched


def test_an_idle_partition_at_the_brokers_end_is_not_a_stall() -> None:
    """faust's seek sets the read offset to the commit point: read == committed, nothing read.
    Seen as 16 idle partitions rewound every 60 s in a benchmark pass that outlasted the check."""
    watched: dict[str, Any] = {}
    idle = Position(committed=2604, read=2604, high=2604)
    assert find_stalled({"sales/3": idle}, watched, 0.0, 60) == []
    assert find_stalled({"sales/3": idle}, watched, 120.0, 60) == []
    unknown_end = Position(committed=2604, read=2604)
    find_stalled({"sales/3": unknown_end}, watched, 130.0, 60)
    assert find_stalled({"sales/3": unknown_end}, watched, 190.0, 60) == ["sales/3"], "no end known: the old rule"
    behind = Position(committed=2604, read=2604, high=2700)   # the record at 2604 exists and was never acked
    find_stalled({"sales/3": behind}, watched, 200.0, 60)
    assert find_stalled({"sales/3": behind}, watched, 260.0, 60) == ["sales/3"]


def test_a_hole_seen_twice_is_rewound_without_waiting_for_the_backstop() -> None:
    watched: dict[str, Watch] = {}
    hole = Position(committed=128, read=11698, first_acked=391, oldest_pending=None)
    assert hole.hole
    assert find_stalled({"p6": hole}, watched, 0.0, 60) == []
    assert find_stalled({"p6": hole}, watched, 5.0, 60) == ["p6"], "second round in a row"
    # Something in flight below the acked ones may still fill the gap: not a hole.
    filling = Position(committed=128, read=11698, first_acked=391, oldest_pending=128)
    assert not filling.hole
    watched.clear()
    for second in (0.0, 5.0, 10.0):
        assert find_stalled({"p7": filling}, watched, second, 60) == []
    # Just rewound: reading again from the commit point, below the acked ones: the gap refills.
    assert not Position(committed=128, read=128, first_acked=391, oldest_pending=None).hole
    # A commit point with nothing acked behind it is no hole either (a batch in progress).
    assert not Position(committed=128, read=600, first_acked=None, oldest_pending=128).hole
    assert not Position(committed=None, read=600, first_acked=3, oldest_pending=None).hole


def test_no_commit_yet_counts_as_a_commit_point_at_the_start() -> None:
    watched: dict[str, Watch] = {}
    find_stalled({"p3": Position(None, 12)}, watched, 0.0, 30)
    assert find_stalled({"p3": Position(None, 40)}, watched, 30.0, 30) == ["p3"]


def test_partitions_that_went_away_are_forgotten() -> None:
    watched: dict[str, Watch] = {}
    find_stalled({"p4": Position(1, 9), "p5": Position(1, 9)}, watched, 0.0, 30)
    find_stalled({"p5": Position(1, 9)}, watched, 10.0, 30)
    assert set(watched) == {"p5"}


def test_an_outage_being_waited_out_is_flagged_until_it_ends() -> None:
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        assert retry.in_outage() == (calls > 1), "flagged from the first failure on"
        if calls < 3:
            raise TransientError("PostgreSQL down")
        return "ok"

    assert not retry.in_outage()
    assert asyncio.run(retry.retry_transient(flaky, what="test", first_delay=0.001)) == "ok"
    assert not retry.in_outage()


def test_a_cancelled_retry_clears_the_flag() -> None:
    async def scenario() -> None:
        async def down() -> None:
            raise TransientError("down")
        task = asyncio.ensure_future(retry.retry_transient(down, what="test", first_delay=0.01))
        await asyncio.sleep(0.05)
        assert retry.in_outage()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert not retry.in_outage()

    asyncio.run(scenario())


class _Topic:
    def __init__(self, name: str) -> None:
        self.name = name

    def get_topic_name(self) -> str:
        return self.name


class _Table:
    def __init__(self, changelog: str) -> None:
        self.changelog_topic = _Topic(changelog)


class _Consumer:
    def __init__(self, positions: dict[TP, tuple[Any, Any]], earliest: int = 0,
                 highwaters: dict[TP, int] | None = None) -> None:
        self._committed_offset = {tp: c for tp, (c, _) in positions.items()}
        self._read_offset = {tp: r for tp, (_, r) in positions.items()}
        self.highwaters = highwaters or {}
        self._acked: dict[TP, list[int]] = {}
        self._unacked_messages: set[Any] = set()
        self.earliest, self.seeks = earliest, []

    def assignment(self) -> set[TP]:
        return set(self._committed_offset)

    def highwater(self, tp: TP) -> Any:
        return self.highwaters.get(tp)    # None: no fetch answered for it yet

    async def earliest_offsets(self, *tps: TP) -> dict[TP, int]:
        return {tp: self.earliest for tp in tps}

    async def rewind(self, tp: TP, offset: int) -> None:
        self.seeks.append((tp, offset))


class _Recovery:
    def __init__(self) -> None:
        self.completed = asyncio.Event()
        self.completed.set()


class _Tables(dict[str, _Table]):
    def __init__(self) -> None:
        super().__init__(cache=_Table("app-cache-changelog"))
        self.recovery = _Recovery()


class _App:
    def __init__(self, consumer: _Consumer) -> None:
        self.consumer, self.rebalancing, self.tables = consumer, False, _Tables()


def test_check_rewinds_a_stuck_stream_partition_to_its_commit_point(monkeypatch: pytest.MonkeyPatch) -> None:
    from app import stalls
    clock = [1000.0]
    monkeypatch.setattr(stalls.time, "monotonic", lambda: clock[0])
    stuck, fine, changelog, fresh = (TP("t.raw", 0), TP("t.raw", 1), TP("app-cache-changelog", 0),
                                     TP("t.raw", 2))
    idle = TP("t.raw", 3)
    consumer = _Consumer({stuck: (270, 13000), fine: (500, 400), changelog: (0, 90), fresh: (None, 7),
                          idle: (2604, 2604)}, earliest=3, highwaters={stuck: 14000, idle: 2604})
    app = _App(consumer)
    check = stalls.Watchdog(app, 60).check

    async def rounds() -> None:
        assert await check() == []
        clock[0] += 30
        app.rebalancing = True                 # offsets stand still during a rebalance: no verdict
        assert await check() == []
        app.rebalancing = False
        clock[0] += 30
        assert await check() == [], "watched afresh after the rebalance"
        clock[0] += 60
        assert set(await check()) == {stuck, fresh}

    asyncio.run(rounds())
    assert sorted(consumer.seeks) == sorted([(stuck, 270), (fresh, 3)]), "no commit yet: the log start"


class _Message:
    def __init__(self, tp: TP, offset: int, acked: bool = False) -> None:
        self.tp, self.offset, self.acked = tp, offset, acked


def test_check_rewinds_a_hole_at_the_second_round(monkeypatch: pytest.MonkeyPatch) -> None:
    from app import stalls
    clock = [0.0]
    monkeypatch.setattr(stalls.time, "monotonic", lambda: clock[0])
    holed, busy = TP("t.raw", 5), TP("t.raw", 6)
    consumer = _Consumer({holed: (128, 11698), busy: (128, 11698)})
    consumer._acked = {holed: [391, 392, 393], busy: [391, 392]}
    # 128 was handed over and is still being processed on `busy`; on `holed` it never arrived,
    # and the message at 128 that was "acked" too late (acked flag set, never counted) is no help.
    consumer._unacked_messages = {_Message(busy, 128), _Message(holed, 128, acked=True), _Message(holed, 900)}
    check = stalls.Watchdog(_App(consumer), 600).check

    async def rounds() -> None:
        assert await check() == []
        clock[0] += 5
        assert await check() == [holed]

    asyncio.run(rounds())
    assert consumer.seeks == [(holed, 128)]


def test_a_failing_round_is_logged_once_and_the_rounds_go_on(caplog: pytest.LogCaptureFixture) -> None:
    from app import metrics, stalls
    consumer = _Consumer({TP("t.raw", 0): (10, 20)})
    calls = []
    real = consumer.assignment

    def flaky() -> set[TP]:
        calls.append(1)
        if len(calls) <= 2:
            raise RuntimeError("consumer between states")
        return real()

    consumer.assignment = flaky  # type: ignore[method-assign]
    dog = stalls.Watchdog(_App(consumer), 60)
    before = metrics.watchdog_round_failures._value.get()

    async def rounds() -> None:
        for _ in range(3):
            await dog.round()

    with caplog.at_level("ERROR", logger="app.stalls"):
        asyncio.run(rounds())
    assert len(calls) == 3, "every round ran, after the failures too"
    assert metrics.watchdog_round_failures._value.get() - before == 2
    assert [r.getMessage() for r in caplog.records].count(
        "watchdog round failed (RuntimeError: consumer between states); the next one in 5s") == 1
    assert dog._watched, "the third round watched the partition"
