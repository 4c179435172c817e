"""Typed CQL rows: one column list per table makes the statement and its parameters."""
from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import pytest

from app.adapters.rows import HISTORY_BY_ACCOUNT, HISTORY_BY_EVENT, HistoryRow, Table

NOW = datetime(2026, 12, 2, tzinfo=timezone.utc)


def test_the_statement_and_its_parameters_come_from_one_column_list() -> None:
    row = HistoryRow(event_id="e1", account_id="acc-1", occurred_at=NOW, category="payment", amount=Decimal("1.00"),
                     currency="BRL", end_to_end_id="E", counterparty_key="k", channel="app", customer_name=None,
                     segment=None, risk_score=None, source_topic="t", source_partition=3, source_offset=9,
                     processed_at=NOW)
    assert HISTORY_BY_EVENT.insert("ks") == (
        "INSERT INTO ks.history_by_event (event_id, account_id, occurred_at, category, amount, source_topic,"
        " source_partition, source_offset, processed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
    assert HISTORY_BY_EVENT.params(row) == ("e1", "acc-1", NOW, "payment", Decimal("1.00"), "t", 3, 9, NOW)


def test_a_misspelt_column_fails_when_the_table_is_declared() -> None:
    with pytest.raises(TypeError, match="no field 'acount_id'"):
        Table("history_by_event", HistoryRow, ("event_id", "acount_id"))


def test_a_history_row_is_history_by_accounts_parameters_as_it_is() -> None:
    row = HistoryRow(event_id="e1", account_id="acc-1", occurred_at=NOW, category="payment", amount=Decimal("1.00"),
                     currency="BRL", end_to_end_id="E", counterparty_key="k", channel="app", customer_name="Ana",
                     segment="retail", risk_score=5, source_topic="t", source_partition=3, source_offset=9,
                     processed_at=NOW)
    assert HISTORY_BY_ACCOUNT.params(row) == tuple(getattr(row, c) for c in HISTORY_BY_ACCOUNT.columns)
