"""The worker's consumer and producer tuning, written once: `app.main` builds its App with it,
and the benchmark's bare faust worker (bench/faust_ceiling.py) too, so that the two measure
the same machinery."""
from __future__ import annotations

from typing import Any

import faust

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


class RawSchema(faust.Schema):
    """The schema of a topic of bytes (`App.raw_topic`): its records' key and value handed over
    as the consumer read them, what faust's own schema returns for the raw codec and bytes types
    (want_bytes of bytes, None for None) after three calls of its serializer registry per field,
    per event. Sending is faust's own (only `compile`, the consumer's decoding, is changed)."""

    def compile(self, app: Any, *, default_propagate: bool = False, **_error_handlers: Any) -> Any:
        create_event = app.create_event

        async def decode(message: Any, *, propagate: bool = default_propagate) -> Any:
            return create_event(message.key, message.value, message.headers, message)

        return decode
