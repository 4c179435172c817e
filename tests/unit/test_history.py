"""The history's own encoding (app/adapters/history.py, app/adapters/cql.py `EncodedBatch`)
writes the very BATCH requests the driver writes for its BatchStatement of bound rows, to the
byte, without a server: prepared statements built from column types."""
from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from cassandra import ConsistencyLevel, cqltypes
from cassandra.protocol import BatchMessage, ColumnMetadata, ProtocolHandler
from cassandra.query import PreparedStatement

from app.adapters.cql import _EncodedBatchMessage
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


@pytest.mark.parametrize("protocol", [4, 5])
@pytest.mark.parametrize("serial, timestamp", [(None, 1_700_000_000_123_456), (ConsistencyLevel.LOCAL_SERIAL, None)])
def test_the_requests_are_the_drivers_to_the_byte(protocol: int, serial: Any, timestamp: Any) -> None:
    by_account, by_event = prepared(HISTORY_BY_ACCOUNT), prepared(HISTORY_BY_EVENT)
    encoder = HistoryEncoder.of(by_account, by_event)
    assert encoder is not None
    ours = encoder.batches(rows(), 4)
    assert [b.count for b in ours] == [4, 4, 2, 4, 4, 2]
    expected = [(statement, table, rows()[i:i + 4]) for statement, table in ((by_account, HISTORY_BY_ACCOUNT),
                                                                             (by_event, HISTORY_BY_EVENT))
                for i in (0, 4, 8)]
    for batch, (statement, table, chunk) in zip(ours, expected, strict=True):
        drivers = _unlogged(statement, [table.params(r) for r in chunk])
        assert (batch.routing_key, batch.keyspace, batch.table) == (drivers.routing_key, "ks", table.name)
        theirs = BatchMessage(drivers.batch_type, drivers._statements_and_parameters, ConsistencyLevel.LOCAL_QUORUM,
                              serial, timestamp)
        mine = _EncodedBatchMessage(batch, ConsistencyLevel.LOCAL_QUORUM, serial, timestamp)
        if protocol == 4:        # the whole frame, as the connection sends it
            frames = [ProtocolHandler.encode_message(m, 7, protocol, None, False, None) for m in (theirs, mine)]
        else:                    # v5 frames are written in segments by the connection: the body
            frames = []
            for m in (theirs, mine):
                body = io.BytesIO()
                m.send_body(body, protocol)
                frames.append(body.getvalue())
        assert frames[0] == frames[1]


def test_a_statement_it_does_not_know_leaves_the_drivers_path() -> None:
    other_type = prepared(HISTORY_BY_EVENT, amount=cqltypes.DoubleType)
    assert HistoryEncoder.of(prepared(HISTORY_BY_ACCOUNT), other_type) is None
    lwt = prepared(HISTORY_BY_EVENT)
    lwt._is_lwt = True
    assert HistoryEncoder.of(prepared(HISTORY_BY_ACCOUNT), lwt) is None
