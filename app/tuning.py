"""The worker's consumer and producer tuning, written once: `app.main` builds its App with it,
and the benchmark's bare faust worker (bench/faust_ceiling.py) too, so that the two measure
the same machinery."""
from __future__ import annotations

from typing import Any

WORKER_TUNING: dict[str, Any] = dict(
    # Batches are the unit of work; let the consumer hand them over whole.
    broker_max_poll_records=1000,
    stream_buffer_maxsize=16384,
    producer_linger=0.005,
    consumer_auto_offset_reset="earliest",
    # Shutdown and rebalance must not wait for unacked events (they may be waiting out a
    # database outage): whatever was not acked is consumed again, and every sink is idempotent.
    stream_wait_empty=False,
)
