"""Clicks in ScyllaDB/Cassandra (tables of migrations/cql/002_clicks.cql), through the Cql adapter."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from app.adapters.cql import Cql
from app.adapters.rows import CLICKS_BY_USER, ClickRow


class ClickStore:
    def __init__(self, cql: Cql) -> None:
        self.cql = cql

    async def record_history(self, rows: Sequence[ClickRow]) -> None:
        """One row per click; a replay overwrites its row (same user, time and url)."""
        if not rows:
            return
        stmt = await self.cql.prepare(CLICKS_BY_USER.insert(self.cql.keyspace))
        await self.cql.execute_many(stmt, [CLICKS_BY_USER.params(row) for row in rows])

    async def add_counts(self, counts: Mapping[str, int]) -> None:
        """One counter increment per distinct url of a batch."""
        if not counts:
            return
        stmt = await self.cql.prepare(
            f"UPDATE {self.cql.keyspace}.clicks_per_url SET clicks = clicks + ? WHERE url = ?")
        await self.cql.execute_many(stmt, [(n, url) for url, n in counts.items()])

    async def url_counts(self) -> dict[str, int]:
        rows = await self.cql.execute(f"SELECT url, clicks FROM {self.cql.keyspace}.clicks_per_url")
        return {row.url: row.clicks for row in rows}

    async def user_clicks(self, user_id: str, limit: int = 100) -> list[Any]:
        stmt = await self.cql.prepare(f"SELECT * FROM {self.cql.keyspace}.clicks_by_user"
                                      " WHERE user_id = ? LIMIT ?")
        return await self.cql.execute(stmt, (user_id, limit))
