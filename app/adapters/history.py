"""The transactions' history in ScyllaDB/Cassandra (history_by_account, history_by_event), through
the Cql adapter."""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any, Callable, Optional, Sequence, cast

from cassandra.cqltypes import DateType
from cassandra.marshal import int64_pack
from cassandra.query import BatchStatement, BatchType, PreparedStatement

from app import metrics
from app.adapters.cql import NULL_VALUE, Cql, EncodedBatch, statement_head, value_length
from app.adapters.rows import HISTORY_BY_ACCOUNT, HISTORY_BY_EVENT, HistoryRow


class HistoryStore:
    def __init__(self, cql: Cql) -> None:
        self.cql = cql
        self._encoder: Optional[HistoryEncoder] = None

    @metrics.timed(metrics.cql_seconds, "record_history")
    async def record_history(self, rows: Sequence[HistoryRow]) -> None:
        """One row per event in each history table; a replay overwrites, never adds."""
        if not rows:
            return
        # UNLOGGED batches of a few rows: one request instead of one per row is much cheaper per
        # event (figures: bench/results/cql_writes.txt). Small, so that multi-partition batches
        # stay under Cassandra's 5 KB warning and light on the coordinator.
        size = self.cql.settings.cql_batch_rows
        by_account = await self.cql.prepare(HISTORY_BY_ACCOUNT.insert(self.cql.keyspace))
        by_event = await self.cql.prepare(HISTORY_BY_EVENT.insert(self.cql.keyspace))
        if self.cql.sends_encoded_batches:
            if self._encoder is None or self._encoder.statements != (by_account, by_event):
                self._encoder = HistoryEncoder.of(by_account, by_event)
            if self._encoder is not None:
                await self.cql.execute_all((batch, ()) for batch in self._encoder.batches(rows, size))
                return
        calls: list[tuple[Any, Sequence[Any]]] = []
        for table, statement in ((HISTORY_BY_ACCOUNT, by_account), (HISTORY_BY_EVENT, by_event)):
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


class HistoryEncoder:
    """A history row's values serialized once for both tables (history_by_event's columns are
    a subset of history_by_account's, of the same types) with the driver's own serializers,
    and written once in a BATCH message's form (app/adapters/cql.py `EncodedBatch`): the
    driver's path binds each row twice (serializing the shared columns twice, a BoundStatement
    and a ColDesc per row) and then writes every value again into the message. `of` returns
    None (the driver's own path is used) for any statement this does not know to encode exactly
    as the driver would: a column encryption policy, a lightweight transaction, a partition key
    of several columns, a column list other than the tables'."""

    def __init__(self, statements: tuple[PreparedStatement, PreparedStatement],
                 serializers: list[Callable[[Any, int], bytes]], event_columns: list[int]) -> None:
        self.statements = statements
        self._serializers = serializers
        self._event_columns = event_columns
        self._protocol = statements[0].protocol_version
        by_account, by_event = statements
        self._heads = (statement_head(by_account, len(serializers)), statement_head(by_event, len(event_columns)))
        # each table's partition key, as an index into the row's values
        self._keys = (by_account.routing_key_indexes[0], event_columns[by_event.routing_key_indexes[0]])
        self._names = tuple((s.column_metadata[0].keyspace_name, s.column_metadata[0].table_name) for s in statements)

    @classmethod
    def of(cls, by_account: PreparedStatement, by_event: PreparedStatement) -> Optional["HistoryEncoder"]:
        account = {c.name: c for c in by_account.column_metadata or ()}
        for statement, table in ((by_account, HISTORY_BY_ACCOUNT), (by_event, HISTORY_BY_EVENT)):
            names = tuple(c.name for c in statement.column_metadata or ())
            if (statement.column_encryption_policy is not None or statement.is_lwt()
                    or names != table.columns or len(statement.routing_key_indexes or ()) != 1):
                return None
            if any(c.type is not account[c.name].type for c in statement.column_metadata):
                return None
        if tuple(account) != HistoryRow._fields:
            return None
        serializers = [_timestamp if getattr(c.type, "serialize", None) is DateType.serialize else c.type.serialize
                       for c in by_account.column_metadata]
        return cls((by_account, by_event), serializers,
                   [HistoryRow._fields.index(c) for c in HISTORY_BY_EVENT.columns])

    def batches(self, rows: Sequence[HistoryRow], size: int) -> list[EncodedBatch]:
        """The rows of each table in UNLOGGED batches of `size`, each routed by its first row."""
        protocol, serializers, pick = self._protocol, self._serializers, self._event_columns
        head_account, head_event = self._heads
        key_account, key_event = self._keys
        null, length = NULL_VALUE, value_length
        account: list[bytes] = []
        event: list[bytes] = []
        account_keys: list[Optional[bytes]] = []
        event_keys: list[Optional[bytes]] = []
        for row in rows:
            values = [None if value is None else serialize(value, protocol)
                      for serialize, value in zip(serializers, row, strict=True)]
            written = [null if v is None else length(len(v)) + v for v in values]
            account.append(head_account + b"".join(written))
            event.append(head_event + b"".join([written[i] for i in pick]))
            account_keys.append(values[key_account])
            event_keys.append(values[key_event])
        out: list[EncodedBatch] = []
        for statements, keys, (keyspace, table) in ((account, account_keys, self._names[0]),
                                                    (event, event_keys, self._names[1])):
            for i in range(0, len(statements), size):
                chunk = statements[i:i + size]
                out.append(EncodedBatch(b"".join(chunk), len(chunk), keys[i], keyspace, table))
        return out


def _timestamp(value: Any, protocol: int) -> bytes:
    """cassandra.cqltypes.DateType.serialize, to the bit, without its `utctimetuple()` (most of
    its cost) for an aware datetime: whole seconds since the epoch in UTC, then milliseconds."""
    if type(value) is not datetime or value.tzinfo is None:
        return cast(bytes, DateType.serialize(value, protocol))
    since = value - _EPOCH
    return int64_pack((since.days * 86400 + since.seconds) * 1000 + value.microsecond // 1000)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


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
