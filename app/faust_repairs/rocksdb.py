"""faust-streaming 0.15.3's RocksDB table store, repaired for tables written from batches.

`faust.stores.rocksdb.Store._set` takes a key's partition from the event being processed
(`current_event()`) and asserts there is one. The agents write the accounts cache while they
process a batch, outside any single event, so with APP_STORE=rocksdb:// (staging and prod)
every write raised AssertionError and the transactions agent retried its first batch forever;
the memory store, used everywhere else, needs no event. Found by the container smoke test
(tests/integration/test_container.py), the first test to run the prod configuration.

Even with an event the choice would be wrong for a table with `use_partitioner`: its changelog
record goes to the key's partition (the producer's partitioner), and recovery puts the key in
that partition's database, so a later lookup would look in one database and the recovered
entry sit in another. Repair: such a table stores a key in its changelog partition.
"""
from __future__ import annotations

from typing import Any, Optional

from aiokafka.partitioner import DefaultPartitioner
from faust.stores import rocksdb

_partitioner = DefaultPartitioner()      # the producer's default, which places changelog records


class RocksDBStore(rocksdb.Store):
    def _set(self, key: bytes, value: Optional[bytes]) -> None:
        if not self.table.use_partitioner:
            super()._set(key, value)
            return
        partition = self.changelog_partition(key)
        self._key_index[key] = partition
        self._db_for_partition(partition).put(key, value)

    def changelog_partition(self, key: bytes) -> int:
        count = self.table.changelog_topic.partitions or self.app.conf.topic_partitions
        partitions = list(range(count))
        return int(_partitioner(key, partitions, partitions))


def repaired(store_class: Any) -> Any:
    """The class to use for a store faust resolved from a URL."""
    return RocksDBStore if store_class is rocksdb.Store else store_class
