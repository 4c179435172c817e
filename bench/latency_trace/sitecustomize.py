"""Time stamps of each step of an event through the worker (diagnosis only; bench/latency_steps.py).

    PYTHONPATH=bench/latency_trace LTRACE=/tmp/steps.txt faust -A app.main worker

Python imports this module at start-up when its folder is on PYTHONPATH; with LTRACE set, the
worker appends one line per event of every transactions batch to that file, epoch seconds:
`topic partition offset fetched in taken done arrived`, where `fetched` is when faust's consumer turned
the aiokafka record into its message (the record left the consumer thread), `in` when it was
delivered to the stream (the Monitor's time_in), `taken` when `batching.batches` handed its
batch over and `done` when the batch came back processed (history written, outputs delivered);
`arrived` (last) when the fetch response holding the record reached aiokafka's buffer.
Inside it, `<file>.parts`: each batch's history write and wait for delivery. LTRACE_BLOCK_MS:
each batch also holds the event loop that long (time.sleep), as CPU starvation on a loaded
machine does.
"""
from __future__ import annotations

import os
import time
from typing import Any, AsyncIterator

if os.environ.get("LTRACE"):
    import faust.transport.drivers.aiokafka as driver

    import app.batching as batching

    path = os.environ["LTRACE"]
    block_s = float(os.environ.get("LTRACE_BLOCK_MS") or 0) / 1000
    fetched: dict[tuple[str, int, int], float] = {}
    original_to_message = driver.Consumer._to_message
    import aiokafka.consumer.fetcher as fetcher
    arrived: dict[tuple[str, int, int], float] = {}
    original_init = fetcher.PartitionRecords.__init__
    original_unpack = fetcher.PartitionRecords._unpack_records

    def _init(self: Any, *args: Any, **kwargs: Any) -> None:
        self._ltrace_at = time.time()
        original_init(self, *args, **kwargs)

    def _unpack(self: Any) -> Any:
        for record in original_unpack(self):
            arrived[(record.topic, record.partition, record.offset)] = self._ltrace_at
            yield record

    fetcher.PartitionRecords.__init__ = _init  # type: ignore[method-assign]
    fetcher.PartitionRecords._unpack_records = _unpack  # type: ignore[method-assign]

    def _to_message(self: Any, tp: Any, record: Any) -> Any:
        fetched[(record.topic, record.partition, record.offset)] = time.time()
        return original_to_message(self, tp, record)

    driver.Consumer._to_message = _to_message  # type: ignore[method-assign]
    original_batches = batching.batches

    async def batches(app: Any, stream: Any, size: int, within: float, **kw: Any) -> AsyncIterator[Any]:
        async for events in original_batches(app, stream, size, within, **kw):
            taken = time.time()
            if block_s:
                time.sleep(block_s)
            yield events
            done = time.time()
            wall_minus_mono = time.time() - time.monotonic()
            with open(path, "a") as out:
                for e in events:
                    m = e.message
                    seen = m.time_in + wall_minus_mono if m.time_in is not None else 0.0
                    out.write(f"{m.topic} {m.partition} {m.offset} "
                              f"{fetched.pop((m.topic, m.partition, m.offset), 0.0):.6f} "
                              f"{seen:.6f} {taken:.6f} {done:.6f} "
                              f"{arrived.pop((m.topic, m.partition, m.offset), 0.0):.6f}\n")

    batching.batches = batches  # type: ignore[assignment]

    # Inside `process`: the history write and the wait for the outputs' delivery, per batch.
    import app.adapters.history as history
    import app.outputs as outputs

    def timed(name: str, fn: Any) -> Any:
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.time()
            try:
                return await fn(*args, **kwargs)
            finally:
                with open(path + ".parts", "a") as out:
                    out.write(f"{name} {t0:.6f} {time.time() - t0:.6f}\n")
        return wrapper

    history.HistoryStore.record_history = timed("history", history.HistoryStore.record_history)  # type: ignore[method-assign]
    delivered = outputs.Outputs.__dict__["delivered"]          # a staticmethod before 7 Dec's send_now
    outputs.Outputs.delivered = (staticmethod(timed("delivered", delivered.__func__))  # type: ignore
                                 if isinstance(delivered, staticmethod) else timed("delivered", delivered))
