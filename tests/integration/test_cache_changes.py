"""The account cache fed by PostgreSQL's changes: real Kafka Connect + Debezium + PostgreSQL + Kafka.

Each test has its own database, connector, replication slot and topic prefix (devtools/connect.py),
removed at the end. snapshot.mode=no_data: the connector streams changes only (the cache fills on
demand), so its first start sends nothing for the 1,000 seeded accounts.
"""
from __future__ import annotations

import asyncio
import random
import time
from datetime import datetime, timezone
from typing import Any, Iterator

import asyncpg
import orjson
import pytest

from app.commands.samples.transactions import raw_event
from app.kafka_tools import message_counts, read_all
from devtools import connect, kafka
from devtools.processes import wait_until
from models.transaction import CATEGORIES
from tests.integration.web import http, metrics_of, total, wait_ready


@pytest.fixture
def cdc(app_env: dict[str, str], settings: Any, accounts: int) -> Iterator[dict[str, str]]:
    """The test database's own connector (migrated and seeded first: the publication exists);
    the workers' settings with the change feed on."""
    asyncio.run(connect.register(settings))
    try:
        yield {"APP_CACHE_CHANGES": "on", "APP_CACHE_CHANGES_SLOT": connect.names(settings)[1]}
    finally:
        asyncio.run(connect.unregister(settings))


async def sql(settings: Any, *statements: str) -> None:
    conn = await asyncpg.connect(settings.postgres_dsn)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


def events(account: str, n: int, seed: int) -> list[tuple[bytes, bytes]]:
    rng, now = random.Random(seed), datetime.now(timezone.utc)
    return [(account.encode(), orjson.dumps(raw_event(rng, account, now))) for _ in range(n)]


async def send(settings: Any, records: list[tuple[bytes, bytes]]) -> set[str]:
    await kafka.produce(settings.kafka_brokers, settings.topic(settings.input_topics[0]), records)
    return {orjson.loads(value)["eventId"] for _, value in records}


async def enriched(settings: Any) -> dict[str, dict[str, Any]]:
    """event id -> its enriched record, from every sink topic."""
    out: dict[str, dict[str, Any]] = {}
    for category in CATEGORIES:
        for record in await read_all(settings.kafka_brokers, settings.sink_topic(category)):
            body = orjson.loads(record.value)
            out[body["event_id"]] = body
    return out


def wait_enriched(settings: Any, ids: set[str], event_loop_run: Any, timeout: float = 60) -> dict[str, Any]:
    async def done() -> bool:
        return ids <= set(await enriched(settings))
    event_loop_run(wait_until(done, timeout, f"{len(ids)} events enriched", 0.5))
    found = event_loop_run(enriched(settings))
    return {i: found[i] for i in ids}


def applied(worker: Any, table: str = "accounts") -> float:
    return total(metrics_of(worker), "pipeline_cache_changes_total", table=table, outcome="applied")


def warm(settings: Any, accounts_: list[str], event_loop_run: Any, seed: int = 1) -> None:
    ids: set[str] = set()
    for i, account in enumerate(accounts_):
        ids |= event_loop_run(send(settings, events(account, 2, seed + i)))
    wait_enriched(settings, ids, event_loop_run)


def test_a_blocked_account_is_enriched_as_blocked_a_second_later(workers: Any, settings: Any, cdc: dict[str, str],
                                                                 event_loop_run: Any) -> None:
    """(a), with a customer change fanned out to its account, and (e): no snapshot flood."""
    worker = workers(**cdc).start()
    wait_ready(worker, event_loop_run)
    # (e) snapshot.mode=no_data: registering the connector on 1,000 existing accounts sent nothing.
    counts = event_loop_run(message_counts(settings.kafka_brokers, [settings.change_topic("accounts"),
                                                                    settings.change_topic("customers")]))
    assert sum(counts.values()) == 0, counts
    warm(settings, ["acc-000003", "acc-000005"], event_loop_run)

    event_loop_run(sql(settings, "UPDATE accounts SET status = 'blocked' WHERE account_id = 'acc-000003'",
                       "UPDATE customers SET risk_score = 999, segment = 'private' WHERE customer_id = 5"))
    time.sleep(1.0)
    ids = event_loop_run(send(settings, events("acc-000003", 20, 100)))
    ids5 = event_loop_run(send(settings, events("acc-000005", 5, 200)))
    out = wait_enriched(settings, ids | ids5, event_loop_run)
    assert {out[i]["account_status"] for i in ids} == {"blocked"}
    assert {(out[i]["risk_score"], out[i]["segment"]) for i in ids5} == {(999, "private")}
    samples = metrics_of(worker)
    assert total(samples, "pipeline_cache_changes_total", table="accounts", outcome="applied") == 1
    assert total(samples, "pipeline_cache_changes_total", table="customers", outcome="applied") == 1
    assert total(samples, "pipeline_cache_change_lag_seconds_count") == 2
    assert total(samples, "pipeline_cache_change_lag_seconds_sum") < 2.0       # two changes, each within 1 s
    ready = http(worker, "/ready").json()
    assert ready["checks"]["cache_changes"]["ok"], ready["checks"]["cache_changes"]
    assert "last change applied" in ready["checks"]["cache_changes"]["detail"]


def test_changes_made_while_the_connector_is_paused_are_applied_in_order(workers: Any, settings: Any,
                                                                          cdc: dict[str, str],
                                                                          event_loop_run: Any) -> None:
    """(b) pause/resume through Connect's REST API."""
    worker = workers(**cdc).start()
    wait_ready(worker, event_loop_run)
    warm(settings, ["acc-000007"], event_loop_run)
    event_loop_run(connect.pause(settings))
    time.sleep(2.0)                        # the task has stopped
    statuses = ["blocked", "active", "closed", "blocked", "closed", "active", "blocked"]
    for status in statuses:                # one transaction each: seven LSNs, in this order
        event_loop_run(sql(settings, f"UPDATE accounts SET status = '{status}' WHERE account_id = 'acc-000007'"))
    time.sleep(2.0)
    before = event_loop_run(send(settings, events("acc-000007", 5, 300)))
    assert {r["account_status"] for r in wait_enriched(settings, before, event_loop_run).values()} == {"active"}
    assert applied(worker) == 0            # nothing reached the worker while paused

    event_loop_run(connect.resume(settings))
    event_loop_run(wait_until(lambda: applied(worker) == len(statuses), 60, "the 7 changes applied"))
    after = event_loop_run(send(settings, events("acc-000007", 5, 400)))
    assert {r["account_status"] for r in wait_enriched(settings, after, event_loop_run).values()} == {"blocked"}
    # In order: each change was newer than the last (an older one would count as stale).
    assert total(metrics_of(worker), "pipeline_cache_changes_total", outcome="stale") == 0


def test_a_worker_killed_in_the_middle_misses_no_change(workers: Any, settings: Any, cdc: dict[str, str],
                                                        event_loop_run: Any) -> None:
    """(c) changes made while the worker is down are applied by its replacement (the change
    topic's committed offsets), onto the cache the table's changelog brings back."""
    # Static membership: the replacement takes the dead worker's partitions at once instead of
    # waiting out its session timeout.
    first = workers(**cdc, APP_KAFKA_GROUP_INSTANCE_ID="cdc-worker").start()
    wait_ready(first, event_loop_run)
    accounts_ = [f"acc-{n:06d}" for n in range(10, 16)]
    warm(settings, accounts_, event_loop_run)
    event_loop_run(sql(settings, "UPDATE accounts SET status = 'closed' WHERE account_id = 'acc-000010'"))
    event_loop_run(wait_until(lambda: applied(first) == 1, 30, "the first change applied"))
    first.kill()
    for account in accounts_[1:]:
        event_loop_run(sql(settings, f"UPDATE accounts SET status = 'blocked' WHERE account_id = '{account}'"))
    second = workers(**cdc, APP_KAFKA_GROUP_INSTANCE_ID="cdc-worker").start()
    wait_ready(second, event_loop_run)
    event_loop_run(wait_until(lambda: applied(second) >= len(accounts_) - 1, 60, "the changes made meanwhile"))
    ids: dict[str, set[str]] = {a: event_loop_run(send(settings, events(a, 3, 500 + i)))
                                for i, a in enumerate(accounts_)}
    out = wait_enriched(settings, set().union(*ids.values()), event_loop_run)
    assert {out[i]["account_status"] for i in ids["acc-000010"]} == {"closed"}
    for account in accounts_[1:]:
        assert {out[i]["account_status"] for i in ids[account]} == {"blocked"}, account


def test_a_new_column_of_accounts_does_not_break_the_agent(workers: Any, settings: Any, cdc: dict[str, str],
                                                           event_loop_run: Any) -> None:
    """(d) ALTER TABLE ... ADD COLUMN while the feed runs; bad change records are dead letters."""
    worker = workers(**cdc).start()
    wait_ready(worker, event_loop_run)
    warm(settings, ["acc-000020"], event_loop_run)
    event_loop_run(sql(settings, "ALTER TABLE accounts ADD COLUMN nickname text",
                       "UPDATE accounts SET status = 'blocked', nickname = 'x' WHERE account_id = 'acc-000020'"))
    event_loop_run(wait_until(lambda: applied(worker) == 1, 30, "the change after the new column"))
    ids = event_loop_run(send(settings, events("acc-000020", 3, 600)))
    assert {r["account_status"] for r in wait_enriched(settings, ids, event_loop_run).values()} == {"blocked"}
    # A record that is no change envelope, on the change topic: a dead letter, the agent goes on.
    event_loop_run(kafka.produce(settings.kafka_brokers, settings.change_topic("accounts"),
                                 [(b"acc-000020", b'{"op": "u"}')]))
    event_loop_run(sql(settings, "UPDATE accounts SET status = 'active' WHERE account_id = 'acc-000020'"))
    event_loop_run(wait_until(lambda: applied(worker) == 2, 30, "the change after the bad record"))

    async def letters() -> list[Any]:
        return [orjson.loads(r.value) for r in await read_all(settings.kafka_brokers,
                                                             settings.topic(settings.dlq_topic))]
    event_loop_run(wait_until(lambda: asyncio.ensure_future(letters()), 30, "the dead letter"))
    found = event_loop_run(letters())
    assert [(d["reason"], d["source_topic"]) for d in found] == [("invalid_change",
                                                                   settings.change_topic("accounts"))]
