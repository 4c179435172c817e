"""PostgreSQL through an asyncpg pool: migrations, accounts for enrichment, sales totals."""
from __future__ import annotations

import asyncio
import logging
from decimal import Decimal
from typing import Any, Awaitable, Callable, Optional, Sequence, TypeVar

import asyncpg

from app import assets, metrics
from app.adapters import Adapter
from app.settings import Settings
from domain.errors import PermanentError, Reason, Stage, TransientError


log = logging.getLogger(__name__)
T = TypeVar("T")
MIGRATION_LOCK = 7_231_001  # pg_advisory_lock key: one migrator at a time across workers

# What "the server is unreachable or failing over" looks like from asyncpg.
_TRANSIENT = (OSError, asyncio.TimeoutError, asyncpg.CannotConnectNowError,
              asyncpg.ConnectionDoesNotExistError, asyncpg.InterfaceError,
              asyncpg.TooManyConnectionsError, asyncpg.AdminShutdownError,
              asyncpg.CrashShutdownError, asyncpg.ConnectionFailureError,
              # a connection left mid-operation (e.g. by a cancelled caller): retry on another
              asyncpg.InternalClientError)
# SQLSTATE classes (and codes) of a server that cannot serve anyone right now: connection
# exceptions, insufficient resources, operator intervention (shutdown, restart), system
# errors, rollbacks (deadlock, serialization), a read-only standby after a failover, a lock
# not available, refused credentials. Waited out without limit, like an unreachable server.
_OUTAGE_CLASSES = ("08", "53", "57", "58", "40", "28")
_OUTAGE_CODES = ("25006", "55P03")
# Data exceptions (22: e.g. a NUL character, a numeric value out of range) and integrity
# violations (23): the server refuses this data; retrying cannot help.
_DATA_CLASSES = ("22", "23")


def classify(exc: asyncpg.PostgresError, stage: Stage) -> Exception:
    """A server error as the pipeline's error model sees it; other errors are unforeseen and
    come back as they are (app/batching.py isolates the event behind them)."""
    code = str(getattr(exc, "sqlstate", "") or "")
    if code[:2] in _OUTAGE_CLASSES or code in _OUTAGE_CODES:
        return TransientError(f"PostgreSQL: {type(exc).__name__}: {exc}")
    if code[:2] in _DATA_CLASSES:
        return PermanentError(stage, Reason.REJECTED_BY_DATABASE,
                              f"PostgreSQL refused the data: {type(exc).__name__}: {exc}"[:1000])
    return exc


class Postgres(Adapter):
    """Connects lazily (the server may be down when the worker starts) and maps outages
    to TransientError, so callers retry instead of dead-lettering."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pool: Optional[asyncpg.Pool] = None
        self._lock = asyncio.Lock()

    async def _get_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            async with self._lock:
                if self._pool is None:
                    self._pool = await asyncpg.create_pool(
                        self.settings.postgres_dsn,
                        password=self.settings.postgres_password or None,
                        min_size=0, max_size=self.settings.postgres_pool_size,
                        command_timeout=self.settings.postgres_timeout_s,
                        timeout=self.settings.postgres_timeout_s)
        return self._pool

    async def run(self, work: Callable[[asyncpg.Connection], Awaitable[T]], stage: Stage = Stage.STORE) -> T:
        """Run `work` on a pooled connection; outages raise TransientError, data the server
        refuses PermanentError (of `stage`), anything else goes through as it is."""
        try:
            pool = await self._get_pool()
            # A bounded wait: a pool that cannot hand out a connection is an outage to retry
            # (and log), never a silent stall.
            async with pool.acquire(timeout=self.settings.postgres_timeout_s) as conn:
                return await work(conn)
        except _TRANSIENT as exc:
            raise TransientError(f"PostgreSQL: {type(exc).__name__}: {exc}") from exc
        except asyncpg.PostgresError as exc:
            classified = classify(exc, stage)
            if classified is exc:
                raise
            raise classified from exc

    async def ping(self, timeout_s: float) -> None:
        """One `SELECT 1` on a connection of its own: a health check that times out must not
        cancel a pooled connection mid-query (asyncpg then hands it on in a broken state)."""
        conn = await asyncpg.connect(self.settings.postgres_dsn, timeout=timeout_s,
                                     password=self.settings.postgres_password or None)
        try:
            await conn.fetchval("SELECT 1", timeout=timeout_s)
        finally:
            await conn.close(timeout=timeout_s)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    # --- schema ---------------------------------------------------------------------

    async def migrate(self) -> list[str]:
        """Apply app/migrations/postgres/*.sql not applied yet, each in its own transaction."""
        files = assets.migrations("postgres")      # before connecting: a broken install is no outage

        async def work(conn: asyncpg.Connection) -> list[str]:
            applied_now = []
            await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
            try:
                await conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations ("
                                   "version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
                done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
                for path in files:
                    version = path.name.removesuffix(".sql")
                    if version in done:
                        continue
                    async with conn.transaction():
                        await conn.execute(path.read_text())
                        await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
                    applied_now.append(version)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
            return applied_now

        applied = await self.run(work)
        if applied:
            log.info("PostgreSQL migrations applied: %s", ", ".join(applied))
        return applied

    # --- accounts (enrichment) ------------------------------------------------------

    async def seed_demo_accounts(self, count: int) -> str:
        """Demo customers and accounts acc-000000.. (the ids the sample producer uses);
        every 50th account is blocked. Existing ids are left alone."""
        async def work(conn: asyncpg.Connection) -> str:
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO customers (customer_id, name, document, segment, risk_score)"
                    " SELECT n, 'Cliente ' || n, '***.' || lpad((n % 1000)::text, 3, '0') || '.***-**',"
                    "        (ARRAY['retail', 'private', 'business'])[1 + n % 3], (n * 37) % 1001"
                    "   FROM generate_series(0, $1 - 1) AS n ON CONFLICT DO NOTHING", count)
                return str(await conn.execute(
                    "INSERT INTO accounts (account_id, customer_id, status, opened_at)"
                    " SELECT 'acc-' || lpad(n::text, 6, '0'), n,"
                    "        CASE WHEN n % 50 = 49 THEN 'blocked' ELSE 'active' END,"
                    "        timestamptz '2020-01-01' + n * interval '1 day'"
                    "   FROM generate_series(0, $1 - 1) AS n ON CONFLICT DO NOTHING", count))

        return await self.run(work)

    @metrics.timed(metrics.postgres_seconds, "get_accounts")
    async def get_accounts(self, account_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The business data of these accounts, in one round trip; unknown ids are absent."""
        if not account_ids:
            return {}

        async def work(conn: asyncpg.Connection) -> dict[str, dict[str, Any]]:
            rows = await conn.fetch(
                "SELECT a.account_id, a.status, a.opened_at, c.customer_id, c.name, c.document,"
                "       c.segment, c.risk_score"
                "  FROM accounts a JOIN customers c USING (customer_id)"
                " WHERE a.account_id = ANY($1::text[])", list(account_ids))
            return {r["account_id"]: dict(r) for r in rows}

        return await self.run(work, Stage.ENRICH)

    @metrics.timed(metrics.postgres_seconds, "accounts_of_customers")
    async def accounts_of_customers(self, customer_ids: Sequence[int]) -> dict[int, list[str]]:
        """Every account of these customers (a customer change reaches each cached one)."""
        if not customer_ids:
            return {}

        async def work(conn: asyncpg.Connection) -> dict[int, list[str]]:
            rows = await conn.fetch("SELECT customer_id, account_id FROM accounts"
                                    " WHERE customer_id = ANY($1::bigint[]) ORDER BY account_id",
                                    list(customer_ids))
            found: dict[int, list[str]] = {}
            for r in rows:
                found.setdefault(r["customer_id"], []).append(r["account_id"])
            return found

        return await self.run(work, Stage.ENRICH)

    async def slot_retained_wal_bytes(self, slot: str) -> Optional[int]:
        """WAL PostgreSQL keeps for this replication slot (None: no such slot in this cluster)."""
        async def work(conn: asyncpg.Connection) -> Optional[int]:
            value = await conn.fetchval(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint"
                "  FROM pg_replication_slots WHERE slot_name = $1", slot)
            return int(value) if value is not None else None

        return await self.run(work)

    # --- sales (order totals) -------------------------------------------------------

    # One statement is one round trip and its own transaction: all rows or none. now() is
    # the transaction's start, so a batch's rows share one processed_at. A redelivered
    # order with the same total is left alone (same row, same processed_at); a different
    # total replaces the stored one.
    _SAVE_ORDER_TOTALS = (
        "INSERT INTO sales AS s (order_number, total, processed_at)"
        " SELECT t.order_number, t.total, now() AT TIME ZONE 'UTC'"
        "   FROM unnest($1::int[], $2::numeric[]) AS t (order_number, total)"
        " ON CONFLICT (order_number) DO UPDATE"
        "    SET total = EXCLUDED.total, processed_at = EXCLUDED.processed_at"
        "  WHERE s.total IS DISTINCT FROM EXCLUDED.total")

    @metrics.timed(metrics.postgres_seconds, "save_order_totals")
    async def save_order_totals(self, rows: Sequence[tuple[int, Decimal]]) -> int:
        """Upsert (order_number, total) rows in one round trip; returns the rows written.

        Order numbers must be unique within `rows` (domain.sales.latest_rows does that).
        A data error on a row (SQLSTATE class 22/23) raises PermanentError: retrying cannot
        help. An outage (failover to a read-only standby, a deadlock, a shutdown) raises
        TransientError (see `classify`).
        """
        if not rows:
            return 0

        async def work(conn: asyncpg.Connection) -> int:
            status = await conn.execute(self._SAVE_ORDER_TOTALS, [n for n, _ in rows], [t for _, t in rows])
            return int(status.rsplit(" ", 1)[-1])

        return await self.run(work)
