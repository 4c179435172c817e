"""faust's own ceiling on this machine: the pipeline's worker machinery with no processing.

The same faust worker as app.main (its repaired consumer, uvloop, the same consumer and producer
tuning, `noack_take` batches of 500, producer futures gathered per batch, explicit acks), forwarding
each record's key, value and headers unchanged. bench/pipeline.py runs it as a contender over
the same input, so that one run separates what faust costs (this / passthrough) from what
the pipeline's own work costs (pipeline / this).

    BENCH_BROKERS=kafka://127.0.0.1:19092 BENCH_SRC=... BENCH_DST=... BENCH_APP_ID=... \\
    BENCH_DATA_DIR=/tmp/x faust -L uvloop -A bench.faust_ceiling worker -l info
"""
from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, cast

import faust
from faust import StreamT
from faust.streams import Stream
from mode.utils.objects import cached_property

from app.faust_repairs.consumer import FlowControl, Transport
from app.settings import load_or_exit
from app.tuning import WORKER_TUNING, RawSchema

BATCH, WITHIN = 500, float(os.environ.get("BENCH_BATCH_WAIT_S", "0.05"))   # as the pipeline's agent


class RepairedApp(faust.App):
    """faust's App with the app's consumer (app/faust_repairs/): the machinery app.main runs on.
    BENCH_FAUST_RELEASED=1 measures faust as released instead."""
    offset_gaps = False
    fetch_max_wait_ms = load_or_exit().kafka_fetch_max_wait_ms

    def _new_transport(self) -> Any:
        return Transport(self.conf.broker_consumer, self)

    @cached_property
    def flow_control(self) -> FlowControl:
        return FlowControl(loop=self.loop)


AppClass = faust.App if os.environ.get("BENCH_FAUST_RELEASED") == "1" else RepairedApp
app = AppClass(
    os.environ["BENCH_APP_ID"],
    broker=os.environ["BENCH_BROKERS"],
    datadir=os.environ["BENCH_DATA_DIR"],
    autodiscover=False,
    web_enabled=False,
    topic_allow_declare=False,
    **WORKER_TUNING,                       # as app.main
)
source = app.topic(os.environ["BENCH_SRC"], schema=RawSchema(key_type=bytes, value_type=bytes,     # as app.main
                                                           key_serializer="raw", value_serializer="raw"))
DESTINATION = os.environ["BENCH_DST"]


TAKE = os.environ.get("BENCH_TAKE", "noack_take")    # or "batches": app.batching's, as the pipeline's agents
log = logging.getLogger("bench.faust_ceiling")


@app.agent(source, name="forward")
async def forward(stream: StreamT) -> None:
    if TAKE == "batches":
        from app.batching import batches
        taken = batches(app, stream, BATCH, WITHIN)
    else:
        taken = cast(Stream, stream).noack_take(BATCH, within=WITHIN)
    count = total = 0
    async for events in taken:
        count, total = count + 1, total + len(events)
        if count % 20 == 0:
            log.warning("%s: %d batches, %d events, %.1f events per batch", TAKE, count, total, total / count)
        pending: list[Any] = []
        for event in events:
            m = event.message
            pending.append(await app.producer.send(DESTINATION, m.key, m.value, None, None, m.headers))
        await asyncio.gather(*pending)
        for event in events:
            await stream.ack(event)
