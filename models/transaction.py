"""A Pix transaction event, reduced to the fields the pipeline maps from the raw event."""
from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Optional

import faust

from models.plain import plain_fields

CATEGORIES = ("payment", "receipt", "refund")


@plain_fields
class Transaction(faust.Record, serializer="json", coerce=False, decimals=True, include_metadata=False):
    """One validated event; `amount` is an exact Decimal, `occurred_at` timezone-aware UTC."""

    event_id: str
    category: str
    account_id: str
    amount: Decimal
    currency: str
    occurred_at: datetime
    end_to_end_id: str
    counterparty_key: str
    channel: str
    description: Optional[str] = None


@plain_fields
class EnrichedTransaction(Transaction, serializer="json", coerce=False, decimals=True,
                          include_metadata=False):
    """A transaction with the business data of its account, as sent to the sink topics."""

    customer_id: Optional[int] = None
    customer_name: Optional[str] = None
    segment: Optional[str] = None
    risk_score: Optional[int] = None
    account_status: Optional[str] = None
