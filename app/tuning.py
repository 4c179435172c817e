"""The worker's consumer and producer tuning, written once: `app.main` builds its App with it,
and the benchmark's bare faust worker (bench/faust_ceiling.py) too, so that the two measure
the same machinery."""
from __future__ import annotations

import functools
import random
from typing import Any, Optional, Sequence

import faust
from aiokafka.partitioner import murmur2

_hash_of_key = functools.lru_cache(maxsize=1 << 16)(murmur2)     # keys repeat: accounts, orders


def key_partitioner(key: Optional[bytes], all_partitions: Sequence[int], available: Sequence[int]) -> int:
    """aiokafka's DefaultPartitioner (the Java client's: murmur2 of the key bytes, positive, modulo
    the partition count; no key: a random available partition), with the hash of a key
    remembered: aiokafka computes it in Python, byte by byte, for every message (sinks, dead
    letters, table changelogs)."""
    if key is None:
        return random.choice(available or all_partitions)
    hashed = _hash_of_key(key) if type(key) is bytes else murmur2(key)
    return all_partitions[(hashed & 0x7FFFFFFF) % len(all_partitions)]


WORKER_TUNING: dict[str, Any] = dict(
    # Batches are the unit of work; let the consumer hand them over whole.
    broker_max_poll_records=1000,
    stream_buffer_maxsize=16384,
    producer_linger=0.005,
    consumer_auto_offset_reset="earliest",
    # Shutdown and rebalance must not wait for unacked events (they may be waiting out a
    # database outage): whatever was not acked is consumed again, and every sink is idempotent.
    stream_wait_empty=False,
    producer_partitioner=key_partitioner,
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
