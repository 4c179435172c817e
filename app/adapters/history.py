"""The transactions' history in ScyllaDB/Cassandra (history_by_account, history_by_event), through
the Cql adapter."""
from __future__ import annotations

import logging
from typing import Any, Optional, Sequence

from cassandra.query import BatchStatement, BatchType, PreparedStatement

from app import metrics
from app.adapters.cql import Cql
from app.adapters.rows import HISTORY_BY_ACCOUNT, HISTORY_BY_EVENT, HistoryRow


class HistoryStore:
    def __init__(self, cql: Cql) -> None:
        self.cql = cql

    @metrics.timed(metrics.cql_seconds, "record_history")
    async def record_history(self, rows: Sequence[HistoryRow]) -> None:
        """One row per event in each history table; a replay overwrites, never adds."""
        if not rows:
            return
        # UNLOGGED batches of a few rows: one request instead of one per row is much cheaper per
        # event (figures: bench/results/cql_writes.txt). Small, so that multi-partition batches
        # stay under Cassandra's 5 KB warning and light on the coordinator.
        size = self.cql.settings.cql_batch_rows
        calls: list[tuple[Any, Sequence[Any]]] = []
        for table in (HISTORY_BY_ACCOUNT, HISTORY_BY_EVENT):
            statement = await self.cql.prepare(table.insert(self.cql.keyspace))
            params = [table.params(row) for row in rows]
            calls.extend((_unlogged(statement, params[i:i + size]), ()) for i in range(0, len(params), size))
        await self.cql.execute_all(calls)

    @metrics.timed(metrics.cql_seconds, "account_history")
    async def account_history(self, account_id: str, limit: int = 50) -> list[Any]:
        stmt = await self.cql.prepare(f"SELECT * FROM {self.cql.keyspace}.history_by_account"
                                      " WHERE account_id = ? LIMIT ?")
        return await self.cql.execute(stmt, (account_id, limit))

    @metrics.timed(metrics.cql_seconds, "event_history")
    async def event_history(self, event_id: str) -> Optional[Any]:
        stmt = await self.cql.prepare(f"SELECT * FROM {self.cql.keyspace}.history_by_event WHERE event_id = ?")
        rows = await self.cql.execute(stmt, (event_id,))
        return rows[0] if rows else None

    async def count_history(self) -> int:
        """Rows of history_by_event (for the report command): a full-table count, which the
        server answers with a warning that the driver logs (`Server warning: Aggregation query
        used without partition key`). Expected here, so it stays out of the command's output;
        any other server warning still shows."""
        quiet = _WithoutWarning("Aggregation query used without partition key")
        _driver_log.addFilter(quiet)
        try:
            rows = await self.cql.execute(f"SELECT count(*) FROM {self.cql.keyspace}.history_by_event")
        finally:
            _driver_log.removeFilter(quiet)
        return int(rows[0].count)


def _unlogged(statement: PreparedStatement, rows: Sequence[Sequence[Any]]) -> BatchStatement:
    batch = BatchStatement(batch_type=BatchType.UNLOGGED)
    for row in rows:
        batch.add(statement, row)
    return batch


# The driver logs each server warning here, on its I/O thread, as it decodes the response.
_driver_log = logging.getLogger("cassandra.protocol")


class _WithoutWarning(logging.Filter):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()
