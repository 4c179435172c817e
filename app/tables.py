"""Faust tables, declared once."""
from __future__ import annotations

from typing import Any, Union, cast

import faust
from aiokafka.errors import KafkaError
from faust import stores
from faust.types import StoreT
from yarl import URL

from app.main import app
from app.faust_repairs.rocksdb import repaired
from domain.errors import TransientError


class RawKeyTable(faust.Table):
    """A Table whose str keys travel to its changelog as raw UTF-8, like the producers' keys.

    faust's Table ignores a `key_serializer` argument and derives one from `key_type`:
    "json" for str, so the changelog key of acc-000001 would be b'"acc-000001"', whose
    murmur2 hash picks another partition than the events keyed b"acc-000001". The entry
    would then live on another worker than its events (lost at each rebalance, never
    shared), and `table_route`, which hashes the changelog key, would send lookups there.
    Set here, before the app registers the table and creates its changelog topic and store.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.key_serializer = "raw"

    def _new_store_by_url(self, url: Union[str, URL]) -> StoreT:
        # faust's own, with its RocksDB store swapped for the repaired one (app/faust_repairs/rocksdb.py)
        return repaired(stores.by_url(url))(
            url, self.app, self, table_name=self.name, key_type=self.key_type,
            key_serializer=self.key_serializer, value_serializer=self.value_serializer,
            value_type=self.value_type, loop=self.loop, options=self.options)

    async def changelog_known(self) -> None:
        """A table write hashes its key with the producer's metadata of the changelog topic, and
        right after a start that metadata can be missing (a TypeError deep in aiokafka, not the
        event's fault): an agent that writes the table waits for it once, before its first batch
        (aiokafka keeps a topic it was asked about in its metadata), as for an outage when it
        does not come."""
        try:
            await cast(Any, self.app.producer)._ensure_producer().partitions_for(
                self.changelog_topic.get_topic_name())
        except KafkaError as exc:
            raise TransientError(f"Kafka metadata of the {self.name} changelog: {exc!r}") from exc


# Account id -> {"account": {...} | None, "fetched_at": epoch s}; see domain/enrichment.py.
# Written from batches that mix partitions, so the partition comes from the key's hash
# (use_partitioner), which is also how producers key the input topics by account id: an
# account's entry lives on the same partition number as its events, on the same worker.
# Keys are raw UTF-8, values JSON.
accounts_cache = RawKeyTable(
    app,
    name="accounts-cache",
    beacon=app.tables.beacon,
    key_type=str,
    use_partitioner=True,
    help="Cache of PostgreSQL account data for enrichment",
)
app.tables.add(accounts_cache)         # what app.Table() does, with our Table class
