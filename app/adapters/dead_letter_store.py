"""Dead letters in ScyllaDB/Cassandra (dead_letters, dead_letter_payloads), through the Cql adapter."""
from __future__ import annotations

from datetime import date
from typing import Any, Optional, Sequence

from app import metrics
from app.adapters.cql import Cql
from app.adapters.rows import DEAD_LETTERS, DeadLetterRow


class DeadLetterStore:
    def __init__(self, cql: Cql) -> None:
        self.cql = cql

    @metrics.timed(metrics.cql_seconds, "store_dead_letters")
    async def store_dead_letters(self, letters: Sequence[DeadLetterRow]) -> None:
        """Keyed by the failed event's source position: storing a letter twice keeps one row."""
        if not letters:
            return
        stmt = await self.cql.prepare(DEAD_LETTERS.insert(self.cql.keyspace))
        await self.cql.execute_many(stmt, [DEAD_LETTERS.params(row) for row in letters])

    @metrics.timed(metrics.cql_seconds, "store_dead_letter_payload")
    async def store_dead_letter_payload(self, topic: str, partition: int, offset: int, key: Optional[bytes],
                                        value: Optional[bytes], sha256: str) -> None:
        stmt = await self.cql.prepare(
            f"INSERT INTO {self.cql.keyspace}.dead_letter_payloads (source_topic, source_partition, source_offset,"
            " key, value, value_sha256, stored_at) VALUES (?, ?, ?, ?, ?, ?, toTimestamp(now()))")
        await self.cql.execute(stmt, (topic, partition, offset, key, value, sha256))

    @metrics.timed(metrics.cql_seconds, "dead_letter_payload")
    async def dead_letter_payload(self, topic: str, partition: int, offset: int) -> Optional[Any]:
        """The row of a letter whose original bytes were kept apart, or None."""
        stmt = await self.cql.prepare(
            f"SELECT key, value, value_sha256 FROM {self.cql.keyspace}.dead_letter_payloads"
            " WHERE source_topic = ? AND source_partition = ? AND source_offset = ?")
        rows = await self.cql.execute(stmt, (topic, partition, offset))
        return rows[0] if rows else None

    @metrics.timed(metrics.cql_seconds, "dead_letters")
    async def dead_letters(self, day: date, limit: int = 1000) -> list[Any]:
        stmt = await self.cql.prepare(f"SELECT * FROM {self.cql.keyspace}.dead_letters WHERE day = ? LIMIT ?")
        return await self.cql.execute(stmt, (day, limit))
