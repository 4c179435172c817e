"""The history's own encoding (app/adapters/history.py) makes the very batches the driver's
BatchStatement.add makes, without a server: prepared statements built from column types."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from cassandra import cqltypes
from cassandra.protocol import ColumnMetadata
from cassandra.query import PreparedStatement

from app.adapters.history import HistoryEncoder, _unlogged
from app.adapters.rows import HISTORY_BY_ACCOUNT, HISTORY_BY_EVENT, HistoryRow, Table

TYPES = {"account_id": cqltypes.VarcharType, "occurred_at": cqltypes.DateType, "event_id": cqltypes.VarcharType,
         "category": cqltypes.VarcharType, "amount": cqltypes.DecimalType, "currency": cqltypes.VarcharType,
         "end_to_end_id": cqltypes.VarcharType, "counterparty_key": cqltypes.VarcharType,
         "channel": cqltypes.VarcharType, "customer_name": cqltypes.VarcharType, "segment": cqltypes.VarcharType,
         "risk_score": cqltypes.Int32Type, "source_topic": cqltypes.VarcharType,
         "source_partition": cqltypes.Int32Type, "source_offset": cqltypes.LongType,
         "processed_at": cqltypes.DateType}


def prepared(table: Table[Any], **types: Any) -> PreparedStatement:
    meta = [ColumnMetadata("ks", table.name, c, types.get(c, TYPES[c])) for c in table.columns]
    return PreparedStatement(meta, table.name.encode(), [0], table.insert("ks"), "ks", 4, None, None)


def rows() -> list[HistoryRow]:
    minus3 = timezone(timedelta(hours=-3))
    return [HistoryRow(event_id=f"e{i}", account_id=f"acc-{i}",
                       occurred_at=datetime(2026, 1, 2, 3, 4, 5, 999_999 - i, tzinfo=minus3 if i % 2 else timezone.utc),
                       category="payment", amount=Decimal(f"-{i}.{i:02d}"), currency="BRL", end_to_end_id="E",
                       counterparty_key="k", channel="app", customer_name=None if i % 3 else "Ána", segment=None,
                       risk_score=i if i % 2 else None, source_topic="t", source_partition=3, source_offset=2**40 + i,
                       processed_at=datetime(1969, 12, 31, 23, 59, 59, 500_500, tzinfo=timezone.utc))
            for i in range(10)]


def test_the_batches_are_the_drivers_to_the_byte() -> None:
    by_account, by_event = prepared(HISTORY_BY_ACCOUNT), prepared(HISTORY_BY_EVENT)
    encoder = HistoryEncoder.of(by_account, by_event)
    assert encoder is not None
    encoded = encoder.encode(rows())
    for (statement, values), table in zip(encoded, (HISTORY_BY_ACCOUNT, HISTORY_BY_EVENT), strict=True):
        ours = encoder.batch(statement, values)
        drivers = _unlogged(statement, [table.params(r) for r in rows()])
        assert ours._statements_and_parameters == drivers._statements_and_parameters
        assert (ours.routing_key, ours.keyspace, ours.batch_type) == (drivers.routing_key, drivers.keyspace,
                                                                       drivers.batch_type)


def test_a_statement_it_does_not_know_leaves_the_drivers_path() -> None:
    other_type = prepared(HISTORY_BY_EVENT, amount=cqltypes.DoubleType)
    assert HistoryEncoder.of(prepared(HISTORY_BY_ACCOUNT), other_type) is None
    lwt = prepared(HISTORY_BY_EVENT)
    lwt._is_lwt = True
    assert HistoryEncoder.of(prepared(HISTORY_BY_ACCOUNT), lwt) is None
