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

5. *The seek to the committed offsets reads them twice.* At the end of a recovery faust resumes
   the stream partitions and then awaits `perform_seek` (a round trip to the coordinator per
   partition, in aiokafka's thread) while the fetcher runs. aiokafka positions a fresh
   assignment at its commit point by itself, so the fetches in between hand the records from
   the commit point on to the streams; the seek then puts aiokafka back at the commit point and
   faust's read offset with it, and they are read and processed again (issue 13: often
   exactly `broker_max_poll_records`, 1,000, per warm start; seen in the log as `perform_seek:
   ... already delivered`). With a partition kept through a rebalance, aiokafka's position is
   past the commit point (the old generation's records were dropped), and a batch fetched before
   the seek but handed over after it moves the read offset ahead again: the refetched records
   below it are dropped, a hole for the watchdog. Repair: the committed offsets are looked up
   without seeking; a partition whose records from its commit point on were already handed
   over in this generation, without a gap, is not sought (nothing is read twice); the others
   are, and without offset gaps (3) their records fetched before the seek are held back until
   the record at the commit point arrives (as after a watchdog rewind). An earlier attempt
   (faust_fixes (5), reverted in 4fec64b) kept the partitions paused until the seek was done
   instead; it left the straddling batch alone.

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
from typing import Any, AsyncIterator, Mapping, Optional, Tuple

from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata
from faust.assignor import PartitionAssignor as FaustPartitionAssignor
from faust.assignor.client_assignment import ClientMetadata
from faust.transport.drivers import aiokafka as driver
from faust.types import TP, Message
from mode.utils.queues import FlowControlEvent

log = logging.getLogger(__name__)

REWIND_FILTER_S = 30.0   # a rewind target never seen (deleted by retention meanwhile) stops filtering


class FlowControl(FlowControlEvent):
    # (0)
    def resume(self) -> None:
        suspended = not self.is_active()
        self._suspend.clear()
        self._resume.set()
        if suspended:
            self.clear()


class Consumer(driver.Consumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._starts: dict[TP, int] = {}                      # where partitions with no commit were sought to
        self._rewinds: dict[TP, Tuple[int, float]] = {}       # partition -> (target, until)

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
    def _on_new_generation(self) -> None:
        self._first_handed: dict[TP, int] = {}
        self._generation = getattr(self.app, "consumer_generation_id", None)

    async def perform_seek(self) -> None:
        thread: Any = self._thread
        consumer = thread._ensure_consumer()

        async def lookup() -> dict[Any, Optional[int]]:
            return {tp: await consumer.committed(tp) for tp in consumer.assignment()}

        committed: dict[Any, Optional[int]] = await thread.call_thread(lookup)
        first, read = self._handed_in_generation(), self._read_offset
        # No commit yet (1): where such a partition would be sought to, its beginning.
        uncommitted = [atp for atp, offset in committed.items()
                       if not offset and TP(atp.topic, atp.partition) in first
                       and self.app.topics.acks_enabled_for(atp.topic)]
        beginnings: Mapping[Any, int] = (await thread.call_thread(consumer.beginning_offsets, uncommitted)
                                         if uncommitted else {})
        kept, sought = {}, {}
        for atp, offset in committed.items():
            tp = TP(atp.topic, atp.partition)
            start, last, head = first.get(tp), read.get(tp), offset or beginnings.get(atp)
            if head is not None and start is not None and last is not None and start <= head <= last + 1:
                kept[tp] = head
                if not offset:
                    self._starts[tp] = head
            else:
                sought[atp] = offset
        if kept:
            log.info("perform_seek: %d partitions already delivered from their commit point on in this "
                     "generation, not sought again: %s", len(kept),
                     {f"{tp.topic}[{tp.partition}]": (offset, read.get(tp)) for tp, offset in kept.items()})

        def seek() -> None:
            for atp, offset in sought.items():
                if offset and offset > 0:
                    consumer._fetcher.seek_to(atp, offset)

        await thread.call_thread(seek)
        fresh = [atp for atp, offset in sought.items()
                 if not offset and self.app.topics.acks_enabled_for(atp.topic)]            # (1)
        if fresh:
            await thread.seek_to_beginning(*fresh)
            starts = await asyncio.gather(*(self.position(atp) for atp in fresh))
            self._starts.update({TP(tp.topic, tp.partition): start
                                 for tp, start in zip(fresh, starts, strict=True) if start is not None})
        until = time.monotonic() + REWIND_FILTER_S
        for atp, offset in sought.items():
            tp = TP(atp.topic, atp.partition)
            read[tp] = offset if offset is not None and offset >= 0 else None
            if (offset and not self._gaps_allowed and not self._is_changelog_tp(tp)
                    and self.app.topics.acks_enabled_for(tp.topic)):
                self._rewinds[tp] = (offset, until)     # hold back what was fetched before the seek
        self._committed_offset.update({TP(atp.topic, atp.partition): offset or None
                                       for atp, offset in committed.items() if offset is not None})

    def _handed_in_generation(self) -> dict[TP, int]:
        if getattr(self, "_generation", None) != getattr(self.app, "consumer_generation_id", None):
            self._on_new_generation()
        return self._first_handed

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
        # No extra layer per record unless a rewind is pending or a rebalance under way (the
        # usual case: neither).
        return self._held_back(records) if self._rewinds or self.app.rebalancing else records

    async def _held_back(self, records: AsyncIterator[Tuple[TP, Message]]) -> AsyncIterator[Tuple[TP, Message]]:
        rewinds = self._rewinds
        first = self._handed_in_generation() if self.app.rebalancing else None
        async for tp, message in records:
            if first is not None and tp not in first:
                last = self._read_offset.get(tp)
                if last is None or message.offset >= last:   # what _drain_messages will deliver
                    first[tp] = message.offset       # (5)
            if tp in rewinds:
                target, until = rewinds[tp]
                if message.offset == target or time.monotonic() > until:
                    del rewinds[tp]
                else:
                    continue      # fetched before the rewind: Kafka sends it again after the target
            yield tp, message


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
