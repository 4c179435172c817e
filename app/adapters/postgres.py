"""PostgreSQL through an asyncpg pool: migrations, accounts for enrichment, sales totals."""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, Awaitable, Callable, Optional, Sequence, TypeVar

import asyncpg

from app.settings import ROOT, Settings
from domain.errors import TransientError

log = logging.getLogger(__name__)
T = TypeVar("T")
MIGRATIONS = ROOT / "migrations" / "postgres"
MIGRATION_LOCK = 7_231_001  # pg_advisory_lock key: one migrator at a time across workers

# What "the server is unreachable or failing over" looks like from asyncpg.
_TRANSIENT = (OSError, asyncio.TimeoutError, asyncpg.CannotConnectNowError,
              asyncpg.ConnectionDoesNotExistError, asyncpg.InterfaceError,
              asyncpg.TooManyConnectionsError, asyncpg.AdminShutdownError,
              asyncpg.CrashShutdownError, asyncpg.ConnectionFailureError)


class Postgres:
    """Connects lazily (the server may be down when the worker starts) and maps outages
    to TransientError, so callers retry instead of dead-lettering."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pool: Optional[asyncpg.Pool] = None
        self._lock = asyncio.Lock()
        self.queries = 0          # round trips issued, for tests and metrics

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

    async def run(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run `work` on a pooled connection; outages raise TransientError."""
        try:
            pool = await self._get_pool()
            async with pool.acquire() as conn:
                self.queries += 1
                return await work(conn)
        except _TRANSIENT as exc:
            raise TransientError(f"PostgreSQL: {type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    # --- schema ---------------------------------------------------------------------

    async def migrate(self) -> list[str]:
        """Apply migrations/postgres/*.sql not applied yet, each in its own transaction."""
        async def work(conn: asyncpg.Connection) -> list[str]:
            applied_now = []
            await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
            try:
                await conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations ("
                                   "version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
                done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
                for path in sorted(MIGRATIONS.glob("*.sql")):
                    if path.stem in done:
                        continue
                    async with conn.transaction():
                        await conn.execute(path.read_text())
                        await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", path.stem)
                    applied_now.append(path.stem)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
            return applied_now

        applied = await self.run(work)
        if applied:
            log.info("PostgreSQL migrations applied: %s", ", ".join(applied))
        return applied

    # --- accounts (enrichment) ------------------------------------------------------

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

        return await self.run(work)
