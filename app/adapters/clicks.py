"""Clicks in ScyllaDB/Cassandra (tables of migrations/cql/002_clicks.cql), through the Cql adapter."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from app.adapters.cql import Cql


class ClickStore:
    def __init__(self, cql: Cql) -> None:
        self.cql = cql

    async def record_history(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """One row per click; a replay overwrites its row (same user, time and url)."""
        if not rows:
            return
        stmt = await self.cql.prepare(
            f"INSERT INTO {self.cql.keyspace}.clicks_by_user (user_id, clicked_at, url, schema_id,"
            " source_topic, source_partition, source_offset, processed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
        await self.cql.execute_many(stmt, [
            (r["user_id"], r["clicked_at"], r["url"], r["schema_id"], r["source_topic"],
             r["source_partition"], r["source_offset"], r["processed_at"]) for r in rows])

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
