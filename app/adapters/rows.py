"""The rows the CQL tables hold: a frozen dataclass per kind of row, and per table its one
column list, from which both the INSERT statement and its parameters are made.

A table's columns are checked against its row type when this module is imported, so a
misspelt column fails at start (and in mypy, for the fields), never in a retry loop.
"""
from __future__ import annotations

import dataclasses
import operator
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Callable, Generic, Optional, Sequence, TypeVar

R = TypeVar("R")


@dataclass(frozen=True)
class HistoryRow:
    """One processed transaction (migrations/cql/001_history.cql, both history tables)."""
    event_id: str
    account_id: str
    occurred_at: datetime
    category: str
    amount: Decimal
    currency: str
    end_to_end_id: str
    counterparty_key: str
    channel: str
    customer_name: Optional[str]
    segment: Optional[str]
    risk_score: Optional[int]
    source_topic: str
    source_partition: int
    source_offset: int
    processed_at: datetime


@dataclass(frozen=True)
class ClickRow:
    """One click (migrations/cql/002_clicks.cql, clicks_by_user)."""
    user_id: str
    clicked_at: datetime
    url: str
    schema_id: Optional[int]
    source_topic: str
    source_partition: int
    source_offset: int
    processed_at: datetime


@dataclass(frozen=True)
class DeadLetterRow:
    """One stored dead letter (migrations/cql/001_history.cql, dead_letters)."""
    day: date
    source_topic: str
    source_partition: int
    source_offset: int
    failed_at: datetime
    stage: str
    reason: str
    error: str
    key_b64: Optional[str]
    value_b64: Optional[str]
    attempts: int
    worker_id: str


class Table(Generic[R]):
    """A CQL table written from rows of type `row`: `columns` say which fields, in order."""

    def __init__(self, name: str, row: type[R], columns: Sequence[str]) -> None:
        fields = {f.name for f in dataclasses.fields(row)}  # type: ignore[arg-type]
        unknown = [c for c in columns if c not in fields]
        if unknown:
            raise TypeError(f"table {name}: {row.__name__} has no field {unknown[0]!r}")
        self.name = name
        self.columns = tuple(columns)
        self._values: Callable[[R], Any] = operator.attrgetter(*self.columns)

    def insert(self, keyspace: str) -> str:
        return (f"INSERT INTO {keyspace}.{self.name} ({', '.join(self.columns)})"
                f" VALUES ({', '.join('?' * len(self.columns))})")

    def params(self, row: R) -> tuple[Any, ...]:
        values = self._values(row)
        return values if isinstance(values, tuple) else (values,)


HISTORY_BY_ACCOUNT = Table("history_by_account", HistoryRow, (
    "account_id", "occurred_at", "event_id", "category", "amount", "currency", "end_to_end_id",
    "counterparty_key", "channel", "customer_name", "segment", "risk_score", "source_topic",
    "source_partition", "source_offset", "processed_at"))
HISTORY_BY_EVENT = Table("history_by_event", HistoryRow, (
    "event_id", "account_id", "occurred_at", "category", "amount", "source_topic", "source_partition",
    "source_offset", "processed_at"))
CLICKS_BY_USER = Table("clicks_by_user", ClickRow, (
    "user_id", "clicked_at", "url", "schema_id", "source_topic", "source_partition", "source_offset",
    "processed_at"))
DEAD_LETTERS = Table("dead_letters", DeadLetterRow, [f.name for f in dataclasses.fields(DeadLetterRow)])
