"""The rows the CQL tables hold: a frozen dataclass (a NamedTuple for the history, the hot
path) per kind of row, and per table its one column list, from which both the INSERT
statement and its parameters are made.

A table's columns are checked against its row type when this module is imported, so a
misspelt column fails at start (and in mypy, for the fields), never in a retry loop.
"""
from __future__ import annotations

import dataclasses
import operator
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Callable, Generic, NamedTuple, Optional, Sequence, TypeVar, cast

R = TypeVar("R")


class HistoryRow(NamedTuple):
    """One processed transaction (migrations/cql/001_history.cql, both history tables): a
    NamedTuple, two per event are made (about a fifth of the cost of a frozen dataclass's
    __init__), its fields in history_by_account's column order, so that the row is that
    table's parameters as it is."""
    account_id: str
    occurred_at: datetime
    event_id: str
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
        named = tuple(getattr(row, "_fields", ()))       # a NamedTuple's fields, in order
        fields = named or tuple(f.name for f in dataclasses.fields(row))  # type: ignore[arg-type]
        unknown = [c for c in columns if c not in fields]
        if unknown:
            raise TypeError(f"table {name}: {row.__name__} has no field {unknown[0]!r}")
        self.name = name
        self.columns = tuple(columns)
        self._values: Optional[Callable[[R], Any]] = None     # None: the row is the parameters
        if not named:
            self._values = operator.attrgetter(*self.columns)
        elif self.columns != named:
            self._values = cast(Callable[[R], Any], operator.itemgetter(*(named.index(c) for c in self.columns)))

    def insert(self, keyspace: str) -> str:
        return (f"INSERT INTO {keyspace}.{self.name} ({', '.join(self.columns)})"
                f" VALUES ({', '.join('?' * len(self.columns))})")

    def params(self, row: R) -> tuple[Any, ...]:
        if self._values is None:
            return cast(tuple[Any, ...], row)
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
