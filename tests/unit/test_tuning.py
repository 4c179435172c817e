"""The worker's producer partitioner (app/tuning.py `key_partitioner`) picks the partition aiokafka's
DefaultPartitioner picks for every key (the Java client's murmur2: producers of other languages
and faust's table routing agree on it), with its hash remembered."""
from __future__ import annotations

import random

from aiokafka.partitioner import DefaultPartitioner

from app.tuning import WORKER_TUNING, key_partitioner


def test_every_key_goes_where_the_default_partitioner_sends_it() -> None:
    rng = random.Random(5)
    keys = [f"acc-{i:06d}".encode() for i in range(2000)] + [rng.randbytes(rng.randrange(0, 40)) for _ in range(2000)]
    default = DefaultPartitioner()
    for count in (1, 3, 8, 12, 100):
        partitions = list(range(count))
        for key in keys + keys:                 # the second time from the remembered hash
            assert key_partitioner(key, partitions, partitions) == default(key, partitions, partitions)
    assert key_partitioner(bytearray(b"acc-000001"), [0, 1, 2], [0]) == default(b"acc-000001", [0, 1, 2], [0])


def test_no_key_goes_to_an_available_partition_and_the_worker_uses_it() -> None:
    assert {key_partitioner(None, [0, 1, 2, 3], [2]) for _ in range(50)} == {2}
    assert {key_partitioner(None, [0, 1], []) for _ in range(100)} == {0, 1}
    assert WORKER_TUNING["producer_partitioner"] is key_partitioner
