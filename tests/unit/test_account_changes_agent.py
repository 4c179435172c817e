"""The change agents' batch steps with fake collaborators: changes applied to the cache in order,
customer changes fanned out per account, bad records dead-lettered; and refresh_cache losing to a
change applied while it fetched."""
from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any, Optional, Sequence

import pytest

from agents import account_changes, transactions
from app.outputs import Outputs
from app.settings import Settings
from domain.changes import RecentChanges
from domain.enrichment import cache_entry
from tests.unit.test_changes_domain import ACCOUNT, envelope
from tests.unit.test_transactions_agent import Broker, History, NoAvro


def event(offset: int, key: Optional[bytes], value: Optional[bytes], topic: str = "cdc.public.accounts") -> Any:
    return SimpleNamespace(message=SimpleNamespace(topic=topic, partition=0, offset=offset, timestamp=1.7e9,
                                                   key=key, value=value, headers=[]))


class Customers:
    async def accounts_of_customers(self, ids: Sequence[int]) -> dict[int, list[str]]:
        return {3: ["acc-000003", "acc-000103"]} if 3 in ids else {}


def deps(cache: dict[str, Any]) -> tuple[account_changes.Collaborators, Broker]:
    broker = Broker()
    outputs = Outputs(broker.send, dead_letter_topic="dlq", max_bytes=1_048_576)
    return account_changes.Collaborators(cache, Customers(), outputs, "fan-out", RecentChanges()), broker


@pytest.fixture(autouse=True)
def _fast(no_backoff: None) -> None:
    """No real backoff in these tests."""


def test_changes_are_applied_in_order_and_bad_records_dead_lettered() -> None:
    cache = {"acc-000003": cache_entry(ACCOUNT, 1.0)}
    d, broker = deps(cache)
    update = {"account_id": "acc-000003", "customer_id": 3, "opened_at": "2020-01-04T00:00:00Z"}
    batch = [event(0, b"acc-000003", envelope(lsn=10, after={**update, "status": "blocked"})),
             event(1, b"acc-000003", b"garbage"),
             event(2, b"acc-000003", envelope(lsn=5, after={**update, "status": "closed"})),   # older: skipped
             event(3, b"acc-000003", None),                                                     # tombstone
             event(4, b"acc-000003", envelope(lsn=20, after={**update, "status": "active"}))]
    asyncio.run(account_changes.apply_batch(batch, deps=d))
    assert cache["acc-000003"]["account"]["status"] == "active"
    assert cache["acc-000003"]["positions"] == {"accounts": 20}
    assert [(topic, offset) for topic, offset, _ in broker.sent] == [("dlq", 1)]
    assert json.loads(broker.sent[0][2])["reason"] == "invalid_change"
    assert d.recent.changed_since(["acc-000003"], 0.0) == ["acc-000003"]


def test_a_customer_change_goes_once_to_each_of_its_accounts() -> None:
    d, broker = deps({})
    value = envelope(table="customers", lsn=30)
    asyncio.run(account_changes.fan_out_batch([event(0, b"3", value, topic="cdc.public.customers")], deps=d))
    assert sorted((topic, value_) for topic, _, value_ in broker.sent) == [("fan-out", value), ("fan-out", value)]


def test_a_fetch_that_started_before_a_change_was_applied_does_not_overwrite_it() -> None:
    cache: dict[str, Any] = {}
    recent = RecentChanges()

    class SlowAccounts:
        """PostgreSQL answering with the row as it was, while the change feed blocks the account."""
        def __init__(self) -> None:
            self.queries = 0

        async def get_accounts(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
            self.queries += 1
            if self.queries == 1:
                import time
                cache["acc-000003"] = {**cache_entry({**ACCOUNT, "status": "blocked"}, 0.0),
                                       "positions": {"accounts": 9}, "changed_at": time.time()}
                recent.note("acc-000003", time.time())
                return {"acc-000003": {**ACCOUNT, "status": "active"}}
            return {"acc-000003": {**ACCOUNT, "status": "blocked"}}

    accounts = SlowAccounts()
    d = transactions.Collaborators(cache, accounts, History(), NoAvro(), Outputs(Broker().send, dead_letter_topic="dlq",
                                   max_bytes=1_048_576), Settings(), lambda c: c, recent)
    asyncio.run(transactions.refresh_cache(d, {"acc-000003"}))
    assert cache["acc-000003"]["account"]["status"] == "blocked"
    assert cache["acc-000003"]["positions"] == {"accounts": 9}
