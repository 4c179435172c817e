"""PostgreSQL and CQL for a run: fresh databases, keyspaces dropped, accounts seeded, rows
read back and queries counted."""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import asyncpg

from app.adapters.postgres import Postgres


def admin_dsn(dsn: str) -> str:
    """The `postgres` database of the server that `dsn` names."""
    return dsn.rsplit("/", 1)[0] + "/postgres"


async def admin_sql(dsn: str, sql: str) -> None:
    """One statement in the server's `postgres` database (CREATE/DROP DATABASE)."""
    conn = await asyncpg.connect(admin_dsn(dsn))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def create_database(dsn: str, name: str) -> str:
    """A fresh database `name` beside the one `dsn` names; its DSN."""
    await admin_sql(dsn, f'CREATE DATABASE "{name}"')
    return dsn.rsplit("/", 1)[0] + f"/{name}"


async def drop_database(dsn: str) -> None:
    """Drop the database `dsn` names, connections and all."""
    await admin_sql(dsn, f'DROP DATABASE IF EXISTS "{dsn.rsplit("/", 1)[1]}" WITH (FORCE)')


async def seed_accounts(settings: Any, count: int, *, migrate: bool = False, count_queries: bool = False) -> None:
    """Demo accounts acc-000000..acc-<count-1> in the settings' database (existing ids kept);
    `migrate` first runs the migrations, `count_queries` installs pg_stat_statements (for
    `enrichment_query_calls`)."""
    pg = Postgres(settings)
    try:
        if migrate:
            await pg.migrate()
        if count_queries:
            await pg.run(lambda conn: conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements"))
        await pg.seed_demo_accounts(count)
    finally:
        await pg.close()


async def enrichment_query_calls(settings: Any) -> int:
    """How many times the settings' database ran the enrichment query (pg_stat_statements,
    which must be installed in it): the figure behind "one query per batch of misses"."""
    conn = await asyncpg.connect(settings.postgres_dsn)
    try:
        return int(await conn.fetchval(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements"
            " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
            "   AND query LIKE '%FROM accounts a JOIN customers c%'"))
    finally:
        await conn.close()


@contextlib.contextmanager
def cql_session(hosts: Any, port: int, **options: Any) -> Iterator[Any]:
    """A CQL session on the stack's server (protocol v4), shut down on leaving."""
    from cassandra.cluster import Cluster

    cluster = Cluster(list(hosts), port=port, **{"protocol_version": 4, **options})
    try:
        yield cluster.connect()
    finally:
        cluster.shutdown()


def cql_rows(settings: Any, query: str) -> list[Any]:
    """The rows of `query`, `{ks}` in it being the settings' keyspace."""
    with cql_session(settings.cql_hosts, settings.cql_port) as session:
        return list(session.execute(query.format(ks=settings.cql_keyspace), timeout=60))


def drop_keyspace(settings: Any) -> None:
    with cql_session(settings.cql_hosts, settings.cql_port) as session:
        session.execute(f"DROP KEYSPACE IF EXISTS {settings.cql_keyspace}", timeout=60)
