"""The account cache's changelog is keyed like the input topics, so table_route and the
worker processing an account's events agree on its partition."""
from __future__ import annotations

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
