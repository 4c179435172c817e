"""The account cache's changelog is keyed like the input topics, so table_route and the
worker processing an account's events agree on its partition."""
from __future__ import annotations

from pathlib import Path

import pytest
from aiokafka.partitioner import DefaultPartitioner

from app.tables import accounts_cache


def test_changelog_keys_are_the_raw_account_id() -> None:
    assert accounts_cache.changelog_topic.prepare_key("acc-000001", None)[0] == b"acc-000001"


def test_the_cache_partition_of_an_account_is_the_partition_of_its_events() -> None:
    partitions = list(range(8))
    hash_key = DefaultPartitioner()       # the producers' (and faust's) default: murmur2
    for n in range(200):
        account = f"acc-{n:06d}"
        changelog_key = accounts_cache.changelog_topic.prepare_key(account, None)[0]
        assert hash_key(changelog_key, partitions, partitions) == hash_key(account.encode(), partitions, partitions)


def test_the_rocksdb_cache_is_written_from_a_batch_in_the_partition_recovery_uses(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """faust's RocksDB store asserted a current event on every write (app/faust_repairs/rocksdb.py)."""
    from faust.streams import current_event
    from faust.stores.rocksdb import Store

    from app.faust_repairs.rocksdb import RocksDBStore, repaired

    assert repaired(Store) is RocksDBStore
    monkeypatch.setattr(RocksDBStore, "path", property(lambda self: tmp_path))   # not the app's tabledir
    store = RocksDBStore("rocksdb://", accounts_cache.app, accounts_cache, table_name="unit-cache",
                         key_type=str, key_serializer="raw", value_serializer="json")
    assert current_event() is None                    # as in a batch: no event of its own
    partitions = list(range(accounts_cache.app.conf.topic_partitions))
    for n in range(40):
        key = f"acc-{n:06d}".encode()
        store._set(key, b"{}")
        expected = DefaultPartitioner()(key, partitions, partitions)
        assert store._key_index[key] == expected      # where the changelog (and recovery) puts it
        assert store._dbs[expected][key] == b"{}"
        assert store._get(key) == b"{}"
