"""The adapters against the real servers: what the agents rely on."""
from __future__ import annotations

import asyncio
from typing import Any

from app.adapters.cql import Cql
from app.adapters.postgres import Postgres
from devtools.counting import CountingPostgres
from domain.errors import PermanentError, Reason


def test_cql_reads_every_page_and_bounds_concurrency(settings: Any) -> None:
    async def scenario() -> tuple[int, int]:
        cql = Cql(settings)
        try:
            await cql.migrate()
            await cql.execute(f"CREATE TABLE IF NOT EXISTS {cql.keyspace}.paging (p int, c int, PRIMARY KEY (p, c))")
            insert = await cql.prepare(f"INSERT INTO {cql.keyspace}.paging (p, c) VALUES (?, ?)")
            await cql.execute_many(insert, [(0, i) for i in range(12_000)])   # > 2 driver pages
            rows = await cql.execute(f"SELECT c FROM {cql.keyspace}.paging WHERE p = 0")
            return len(rows), len({r.c for r in rows})
        finally:
            await cql.close()

    assert asyncio.run(scenario()) == (12_000, 12_000)


def test_postgres_migrations_are_idempotent_and_get_accounts_is_one_query(settings: Any) -> None:
    async def scenario() -> tuple[list[str], list[str], dict[str, Any], int]:
        pg = CountingPostgres(settings)
        try:
            first = await pg.migrate()
            again = await pg.migrate()
            await pg.seed_demo_accounts(10)
            before = pg.queries
            found = await pg.get_accounts(["acc-000001", "acc-000009", "acc-999999"])
            return first, again, found, pg.queries - before
        finally:
            await pg.close()

    first, again, found, queries = asyncio.run(scenario())
    assert first and again == []
    assert set(found) == {"acc-000001", "acc-000009"} and queries == 1
    assert found["acc-000009"]["status"] == "active" and found["acc-000001"]["segment"] in (
        "retail", "private", "business")


def test_data_either_side_of_postgres_refuses_is_the_events_fault_not_an_outage(settings: Any) -> None:
    """A NUL refused by the server, a lone surrogate or a value of the wrong type refused by
    asyncpg before sending (both as its DataError, SQLSTATE class 22): each must be a
    PermanentError, or the batch would wait for an "outage" forever."""
    async def scenario() -> list[tuple[type, Any]]:
        pg = Postgres(settings)
        try:
            await pg.migrate()
            found = []
            for bad in ("acc-00\x000001", "acc-\ud800", 5):
                try:
                    await pg.get_accounts([bad])  # type: ignore[list-item]
                except Exception as exc:  # noqa: BLE001 - the type is what is checked
                    found.append((type(exc), getattr(exc, "reason", None)))
            return found
        finally:
            await pg.close()

    assert asyncio.run(scenario()) == [(PermanentError, Reason.REJECTED_BY_DATABASE)] * 3
