"""Log every place where faust-streaming's consumer drops or skips records (diagnosis only).

    PYTHONPATH=bench/faust_trace FTRACE=1 .venv/bin/python -m bench.backlog_start --kill 3 --runs 4

Python imports this module at start-up when its folder is on PYTHONPATH; with FTRACE set, the
worker logs a WARNING line starting with FTRACE for: a record read below faust's read offset
(dropped by the drain loop), a batch that getmany did not hand over whole, a gap counted as
processed, each perform_seek, each rebalance start/end, and offset jumps as the reader
(`read-jump`) and as an agent (`agent-jump`) see them. A record read in order that reaches
an agent after a jump was lost in between (how app/faust_repairs/consumer.py's fault 0 was found).
It forces faust's pure-Python stream iterator, so it is slower; never use it in production.
"""
from __future__ import annotations

import logging
import os
from typing import Any

if os.environ.get("FTRACE"):
    import faust.streams as streams
    import faust.transport.consumer as consumer
    import mode.utils.logging as mode_logging

    log = logging.getLogger("ftrace")
    Consumer: Any = consumer.Consumer

    def short(tp: Any) -> str:
        return f"{tp.topic}:{tp.partition}"

    original_wait = Consumer._wait_next_records

    async def _wait_next_records(self: Any, timeout: float) -> Any:
        records, active = await original_wait(self, timeout)
        self._ftrace_fetched = {tp: (len(rs), rs[0].offset, rs[-1].offset) for tp, rs in (records or {}).items()}
        return records, active

    original_getmany = Consumer.getmany

    async def getmany(self: Any, timeout: float) -> Any:
        yielded: dict[Any, int] = {}
        last = self.__dict__.setdefault("_ftrace_read", {})
        try:
            async for tp, message in original_getmany(self, timeout):
                read = self._read_offset.get(tp)
                if read is not None and message.offset < read:
                    log.warning("FTRACE drop-below-read %s offset=%s read=%s", short(tp), message.offset, read)
                previous = last.get(tp)
                if previous is not None and message.offset != previous + 1:
                    log.warning("FTRACE read-jump %s %s -> %s", short(tp), previous, message.offset)
                last[tp] = message.offset
                yielded[tp] = yielded.get(tp, 0) + 1
                yield tp, message
        finally:
            for tp, (n, first, end) in (getattr(self, "_ftrace_fetched", None) or {}).items():
                if yielded.get(tp, 0) < n:
                    log.warning("FTRACE getmany-dropped %s fetched=%s handed-over=%s range=%s..%s",
                                short(tp), n, yielded.get(tp, 0), first, end)
            self._ftrace_fetched = {}

    original_gap = Consumer._add_gap

    async def _add_gap(self: Any, tp: Any, start: int, end: int) -> None:
        log.warning("FTRACE add-gap %s %s..%s committed=%s", short(tp), start, end, self._committed_offset.get(tp))
        await original_gap(self, tp, start, end)

    original_seek = Consumer.perform_seek

    async def perform_seek(self: Any) -> None:
        await original_seek(self)
        log.warning("FTRACE perform_seek read offsets now %s",
                    {short(tp): v for tp, v in self._read_offset.items() if "changelog" not in tp.topic})

    Consumer._wait_next_records, Consumer.getmany = _wait_next_records, getmany
    Consumer._add_gap, Consumer.perform_seek = _add_gap, perform_seek

    streams._CStreamIterator = None          # the Python iterator logs its skips through .dev
    original_dev = mode_logging.CompositeLogger.dev

    def dev(self: Any, message: str, *args: Any, **kwargs: Any) -> None:
        if message.startswith("Skipping message"):
            log.warning("FTRACE stream-skip %s offset=%s generation=%s app generation=%s flow=%s",
                        short(args[0]), args[0].offset, args[1], args[2], args[3])
        original_dev(self, message, *args, **kwargs)

    mode_logging.CompositeLogger.dev = dev   # type: ignore[method-assign]

    import app.batching as batching
    original_batches = batching.batches

    async def batches(app: Any, stream: Any, size: int, within: float) -> Any:
        last: dict[Any, int] = {}
        async for events in original_batches(app, stream, size, within):
            for event in events:
                tp, offset = event.message.tp, event.message.offset
                if tp in last and offset != last[tp] + 1:
                    log.warning("FTRACE agent-jump %s %s -> %s", short(tp), last[tp], offset)
                last[tp] = offset
            yield events

    batching.batches = batches
