"""Repairs to faust-streaming 0.15.3, so that a commit never passes a record that was read
but not processed. The faults are faust's; the names below are its own.

Found with `bench/backlog_start.py --kill 3` (SIGKILL a worker on a backlog, start another
at once): without these repairs 2 of 10 starts lost records for good (178 and 3,601 of
40,000) with the commit point already past them, and 3 of 10 left partitions stuck behind
a hole for the watchdog (app/stalls.py) to rewind. With them: 8 of 8 starts clean, no rewind.

0. *The root cause: resuming flow empties the stream queues.* At the end of a recovery faust
   resumes the stream partitions, awaits the seek to the committed offsets while the fetcher
   runs, and only then calls `app.flow_control.resume()`, which clears every stream queue
   (`mode.utils.queues.FlowControlEvent.resume`) even when the flow was not suspended. The
   records fetched meanwhile are wiped after the read offset passed them: seen as an agent
   receiving offset 203 then 735 of a partition read without a gap. Repair: `FlowControl`
   clears the queues only when it resumes from a suspension (a rebalance suspends and clears
   them itself; nothing enters them while suspended).

The records a rebalance drops on purpose (fetched for an older generation: the stream skips
them; or left in a batch when the generation changes) are fetched again because faust seeks
every partition back to its commit point afterwards; three more faults break that promise:

1. *Partitions without a commit are not repositioned.* aiokafka's `seek_to_committed` skips a
   partition whose committed offset is None or 0. Repair: such partitions of acked topics go
   back to their beginning (the app's `consumer_auto_offset_reset` is "earliest"), and that
   offset is remembered as their start.
2. *No head check without a commit.* `Consumer._new_offset` compares the lowest acked offset
   with the commit point only when the latter is truthy (not None, not 0), and then lets one
   offset pass. Repair: the start from (1) stands in for a missing commit point, and without
   gaps (3) the check is exact.
3. *Jumps taken for gaps in the log.* When the read offset jumps, faust counts the offsets in
   between as processed (`Consumer._add_gap`, meant for transaction markers and compacted
   topics); a read offset reset by a seek and then met by a record fetched before it is such
   a jump. Repair: no gaps unless the input topics may have them (`APP_KAFKA_OFFSET_GAPS`).

4. *A static member that comes back at another URL hangs.* With a group instance id
   (APP_KAFKA_GROUP_INSTANCE_ID) the broker hands a restarted member the assignment it made
   for that member's previous life, without a rebalance; faust's
   `PartitionAssignor.on_assignment` asserts that the URL in it is the worker's own and, when
   the web port or host changed, the AssertionError ends aiokafka's coordination routine:
   the worker never gets ready (seen in tests/integration/test_restarts.py's first draft,
   whose restarted worker had a fresh port). Repair: the assignment is taken as it is and a
   rejoin is requested, so the group learns the new URL (the table routing of the others
   uses it) in one ordinary rebalance.

5. *The seek at the end of a recovery races the fetcher.* `Recovery._resume_streams` resumes the
   stream partitions and then awaits `Consumer.perform_seek` (the committed offset of every
   partition, one coordinator round trip each, then (1)'s seek and position lookups: 1.4 s in
   a traced warm start) while the fetcher goes on, on the consumer's thread, from aiokafka's
   old position. Three things follow: (a) the records fetched meanwhile reach the agents, and
   after the seek puts aiokafka and faust's read offset back at the commit point they are
   fetched and processed again (issue 13's within-life repeats: whole `getmany` batches of
   `broker_max_poll_records`, often 1,000 per warm start; traced as `drop-below-read ...:2
   offset=0 read=734` then `agent-jump ...:2 734 -> 5`); (b) the records fetched from the new
   position between aiokafka's seek and faust's read offset update (after `seek_to_committed`
   returns) are below the old read offset and dropped by `Consumer._drain_messages` (offsets
   0..4 above; on a partition that had not reached the agent before, a hole for the watchdog:
   issue 13's post-rebalance rewinds); (c) a batch fetched before the seek but handed over
   after it moves the read offset past the commit point again, with the same drop. Repair:
   `perform_seek` pauses the partitions it repositions (acked, not changelogs) in aiokafka, on
   the consumer's thread, for the whole seek and read-offset update, so nothing is fetched
   from either position meanwhile; every fetch is stamped (on that thread, as it takes the
   records) with the count of seeks begun, and `getmany` hands over no record of those
   partitions taken before a seek began (aiokafka's seek moved its position back below them:
   they are fetched again, once, from the commit point). Found with `bench/backlog_start.py
   --warm` and `--rebalance 3` and bench/faust_trace (issue 13): before, 7 of 20 warm starts
   repeated 11,975 records; after, none of 20 repeated a record, and 20 rebalance starts had no
   rewind and nothing missing (bench/results/issue13-repeats.txt). The upstream thread on this
   order is faust-streaming #216 (PR #217 moved the seek after the changelog reading, where it
   still races the fetcher).

6. *A fetch held 1.5 s stalls the busy partitions.* faust builds the worker's consumer with
   `fetch_max_wait_ms=1500`, fixed. aiokafka keeps one fetch in flight per broker and leaves out
   of it the partitions whose records it still holds, unconsumed; when the partitions left in
   the request have nothing new (the idle ones), the broker holds it the whole 1.5 s, and the
   partitions left out, busy, get their next fetch only after that. Seen with bench/latency_steps.py
   at 1,000 events/s, one of two input topics idle: records reached aiokafka's buffer p50 / p90
   660-750 / 1,500 ms after they were produced, end to end p50 1.5 s. Repair: the consumer takes
   the app's `fetch_max_wait_ms` (APP_KAFKA_FETCH_MAX_WAIT_MS; aiokafka's start() hands it to its
   Fetcher). A shorter hold costs idle fetch round trips (CPU of an idle worker).

7. *What was processed is forgotten at a rebalance.* With `stream_wait_empty` off (app/tuning.py:
   a revoke must not wait for a batch that is waiting out an outage) faust commits nothing when
   partitions are revoked, and `Consumer.on_partitions_revoked` drops the acked offsets of the
   revoked partitions before the app's revoke runs: the new owners replay everything processed
   since the last periodic commit (`broker_commit_interval`, 2.8 s of work). aiokafka asks a
   manual-commit listener to commit there. Repair: the acked offsets are committed first (bounded
   by REVOKE_COMMIT_TIMEOUT_S; a failed commit is logged and costs only those replays), after the
   batches in progress are done and acked (`App.batches_done`: bounded the same, not waited for
   during an outage, when such a batch is replayed as at-least-once promises; app/batching.py holds
   new batches back while rebalancing, and drops the events a held one read before the rebalance).
   `bench/backlog_start.py --join 3` (a second worker joins a busy one, 3 starts each): 2,000-3,501
   records replayed per scale-out before (40,000 events), 500-519 with the commit alone (the batch
   in flight, or the one held), none with the wait and the drop (60,000 events); nothing missing.

8. *Four tasks per record.* `Consumer._drain_messages` hands each record to the conductor through
   `Service.wait_first(callback(message), suspend_flow.wait())`: four tasks (the delivery, the flow
   event, the consumer's stopped and crashed events), an `asyncio.wait` and three cancellations per
   record, and a turn of the event loop before the next record (a micro-benchmark under uvloop:
   ~27 µs per record against 0.1 for awaiting the delivery). The race is there to give up a
   delivery that waits (a full stream queue, flow control) once the flow is stopped; in a worker
   the flow stops only in `App._stop_consumer`, which stops the fetcher next (the drainer and a
   delivery it awaits are cancelled with it), and a stopped or crashed consumer ends the drainer
   the same way. Repair: `wait_first` (the consumer's only caller is the drainer) awaits the
   delivery directly while none of those events is set, and races them as faust does otherwise.

9. *Records handed over between the resume and the seek.* At the end of a recovery the stream
   partitions are resumed before `perform_seek` pauses them (5): a fetch completing in between
   hands records to the streams, in the new generation, that the seek then fetches again (28 of
   20,000 processed twice in one of five scale-outs of tests/integration/test_restarts.py,
   the machine loaded). Repair: every record handed over while rebalancing is noted (weakly) with
   the count of seeks begun; `fetched_again` names those a later seek fetches again, and
   app/batching.py does not process them.

What is left can only hold a commit point back, never move it past a record: the watchdog
then rewinds the partition with `Consumer.rewind`, which also holds back the records of that
partition fetched before the rewind (all past the commit point, since the consumer had read
past the hole) until the record at the target arrives, so they cannot push the read offset
ahead again.
"""
from __future__ import annotations

import asyncio
import logging
import time
import weakref
from typing import Any, AsyncIterator, Iterable, Mapping, Optional, Tuple

from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata
from aiokafka.structs import TopicPartition
from faust.assignor import PartitionAssignor as FaustPartitionAssignor
from faust.assignor.client_assignment import ClientMetadata
from faust.transport.drivers import aiokafka as driver
from faust.transport.consumer import RecordMap
from faust.types import TP, Message
from mode.services import WaitResults
from mode.utils.queues import FlowControlEvent

log = logging.getLogger(__name__)

REVOKE_COMMIT_TIMEOUT_S = 5.0    # (7): a part of the session timeout the revoke may take
REWIND_FILTER_S = 30.0   # a rewind target never seen (deleted by retention meanwhile) stops filtering


class FlowControl(FlowControlEvent):
    # (0)
    def resume(self) -> None:
        suspended = not self.is_active()
        self._suspend.clear()
        self._resume.set()
        if suspended:
            self.clear()


class ConsumerThread(driver.AIOKafkaConsumerThread):
    """(6) the worker's consumer with the app's fetch hold instead of faust's fixed 1.5 s."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = int(getattr(self.app, "fetch_max_wait_ms", 1500))   # read at its start()
        return consumer


class Consumer(driver.Consumer):
    def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._starts: dict[TP, int] = {}                      # where partitions with no commit were sought to
        self._rewinds: dict[TP, Tuple[int, float]] = {}       # partition -> (target, until)
        # (5), all written on the consumer's thread: seeks begun, seeks under way, the partitions
        # they hold paused, and the seeks begun when the last fetch took its records.
        self._seeks = self._seeking = self._fetch_seeks = 0
        self._held: set[TopicPartition] = set()
        # (9) the records handed over while rebalancing, with the seeks begun by then
        self._handed_over: weakref.WeakKeyDictionary[Message, int] = weakref.WeakKeyDictionary()

    # (8)
    async def wait_first(self, *coros: Any, timeout: Any = None) -> WaitResults:
        if (len(coros) == 2 and timeout is None and asyncio.iscoroutine(coros[1])
                and not (self.suspend_flow.is_set() or self._stopped.is_set() or self._crashed.is_set())):
            delivery, flow_stopped = coros
            flow_stopped.close()                 # `suspend_flow.wait()`, never started
            return WaitResults([delivery], [await delivery], False)
        return await super().wait_first(*coros, timeout=timeout)

    # (7)
    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        if not self.app.conf.stream_wait_empty:
            batches_done = getattr(self.app, "batches_done", None)     # the app's (app/main.py)
            if batches_done is not None and not await batches_done(REVOKE_COMMIT_TIMEOUT_S):
                log.info("a batch in progress at the revoke is not done (waiting out an outage, or longer than "
                         "%.0f s): the new owners replay it", REVOKE_COMMIT_TIMEOUT_S)
            try:
                await asyncio.wait_for(self._commit_after_any_under_way(), REVOKE_COMMIT_TIMEOUT_S)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a commit that did not happen: replays, nothing lost
                log.warning("commit before the rebalance failed (%s: %s): the new owners replay what was "
                            "processed since the last commit", type(exc).__name__, exc)
        await super().on_partitions_revoked(revoked)

    async def _commit_after_any_under_way(self) -> None:
        # faust's commit() waits for a commit under way (the periodic one) and then returns
        # without committing: the acks since that one began would be left out. That commit
        # clears `_commit_fut` before it wakes its followers, so the one below commits (or
        # follows a commit begun since, which includes them).
        await self.maybe_wait_for_commit_to_finish()
        await self.commit()

    @property
    def _gaps_allowed(self) -> bool:
        return bool(getattr(self.app, "offset_gaps", False))

    # (3)
    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        if self._gaps_allowed:
            await super()._add_gap(tp, offset_from, offset_to)

    # (1)
    async def seek_to_committed(self) -> Mapping[TP, int]:
        committed = await super().seek_to_committed()
        fresh = [tp for tp, offset in committed.items()
                 if not offset and self.app.topics.acks_enabled_for(tp.topic)]
        if fresh:
            await self._thread.seek_to_beginning(*fresh)
            starts = await asyncio.gather(*(self.position(tp) for tp in fresh))
            self._starts.update({TP(tp.topic, tp.partition): start
                                 for tp, start in zip(fresh, starts, strict=True) if start is not None})
        return committed

    # (5)
    def _repositioned(self, tp: TP) -> bool:
        """Whether `perform_seek` moves this partition (aiokafka to its commit point, or (1))."""
        return self.app.topics.acks_enabled_for(tp.topic) and not self._is_changelog_tp(tp)

    async def perform_seek(self) -> None:
        thread: Any = self._thread
        held = {TopicPartition(tp.topic, tp.partition) for tp in self.assignment() if self._repositioned(tp)}
        await thread.call_thread(self._hold_fetching, held)
        try:
            await super().perform_seek()       # aiokafka's seek, (1), then faust's read offsets
        finally:
            await thread.call_thread(self._release_fetching)

    def _aiokafka(self) -> Any:
        thread: Any = self._thread
        return thread._ensure_consumer()

    def _hold_fetching(self, tps: set[TopicPartition]) -> None:
        # On the consumer's thread, between two fetches' takes: the count and the pause go together.
        self._seeks += 1
        self._seeking += 1
        consumer = self._aiokafka()
        tps &= consumer.assignment()             # as assigned now, on this thread
        self._held |= tps
        consumer.pause(*tps)

    def _release_fetching(self) -> None:
        self._seeking -= 1
        if not self._seeking:
            consumer = self._aiokafka()
            consumer.resume(*(self._held & consumer.assignment()))
            self._held.clear()

    async def _getmany(self, active_partitions: Optional[set[TP]], timeout: float) -> RecordMap:
        thread: Any = self._thread
        consumer = thread._ensure_consumer()

        async def fetch() -> RecordMap:      # faust's ConsumerThread.getmany, stamped
            records: RecordMap = await thread._fetch_records(
                consumer, active_partitions, timeout=timeout, max_records=consumer._max_poll_records)
            self._fetch_seeks = self._seeks     # no await since the records were taken
            return records

        records: RecordMap = await thread.call_thread(fetch)
        return records

    # (9)
    def fetched_again(self, messages: Iterable[Message]) -> set[int]:
        """The ids of those of `messages` that a seek to the commit point (5) fetches again:
        handed over during a rebalance, before its seek began."""
        handed_over, seeks = self._handed_over, self._seeks
        if not handed_over:
            return set()
        return {id(m) for m in messages if handed_over.get(m, seeks) != seeks}

    # (2)
    def _new_offset(self, tp: TP) -> Optional[int]:
        acked = self._acked[tp]
        if acked:
            committed = self._committed_offset[tp]
            head = committed if committed else self._starts.get(tp, committed)   # None/0: the start
            if head is not None and min(acked) - head > (1 if self._gaps_allowed else 0):
                return None       # the record at the head is not processed yet
        return super()._new_offset(tp)

    # the watchdog's seek (app/stalls.py)
    async def rewind(self, tp: TP, offset: int) -> None:
        self._rewinds[tp] = (offset, time.monotonic() + REWIND_FILTER_S)
        await self.seek_wait({tp: offset})

    def getmany(self, timeout: float) -> AsyncIterator[Tuple[TP, Message]]:
        records = super().getmany(timeout)
        # No extra layer per record unless a rewind is pending or a seek can come (5): faust seeks
        # only while rebalancing, or from getmany itself (after its batch). The usual case: neither.
        return self._held_back(records) if self._rewinds or self._seeking or self.app.rebalancing else records

    async def _held_back(self, records: AsyncIterator[Tuple[TP, Message]]) -> AsyncIterator[Tuple[TP, Message]]:
        rewinds, handed_over = self._rewinds, self._handed_over
        stale: dict[TP, int] = {}
        try:
            async for tp, message in records:
                if self._fetch_seeks != self._seeks and self._repositioned(tp):
                    stale[tp] = stale.get(tp, 0) + 1
                    continue      # (5) taken before a seek moved aiokafka back below it: fetched again
                if tp in rewinds:
                    target, until = rewinds[tp]
                    if message.offset == target or time.monotonic() > until:
                        del rewinds[tp]
                    else:
                        continue      # fetched before the rewind: Kafka sends it again after the target
                if self.app.rebalancing and self._repositioned(tp):
                    handed_over[message] = self._seeks
                yield tp, message
        finally:
            if stale:
                log.info("perform_seek: records fetched before the seek not handed over (fetched again from "
                         "the commit point): %s", {f"{tp.topic}[{tp.partition}]": n for tp, n in stale.items()})


class PartitionAssignor(FaustPartitionAssignor):
    # (4): faust's on_assignment without its last assertion.
    def on_assignment(self, assignment: ConsumerProtocolMemberMetadata) -> None:
        metadata = ClientMetadata.loads(self._decompress(assignment.user_data))
        url = str(self._url)
        if metadata.url == url:
            super().on_assignment(assignment)
            return
        log.info("the assignment names this worker's URL as %s, now %s (a static member back with "
                 "another address): rejoining so that the group learns it", metadata.url, url)
        self._assignment = metadata.assignment
        self._topic_groups = dict(metadata.topic_groups)
        self._active_tps = self._assignment.active_tps
        self._standby_tps = self._assignment.standby_tps
        self.changelog_distribution = metadata.changelog_distribution
        self.external_topic_distribution = metadata.external_topic_distribution
        # Called by aiokafka's coordinator on the consumer's own thread and loop.
        consumer: Any = self.app.consumer       # faust's aiokafka Consumer: its thread holds aiokafka's
        consumer._thread._ensure_consumer()._coordinator.request_rejoin()


class Transport(driver.Transport):
    Consumer = Consumer
