"""A sales order as it travels on the sales topic: order number, items, and who and when."""
from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import List, Optional

import faust


class OrderItem(faust.Record, serializer="json", coerce=False, decimals=True, include_metadata=False):
    """One order line; `unit_price` is an exact Decimal with at most 2 decimal places."""

    product_id: str
    quantity: int
    unit_price: Decimal


class SalesOrder(faust.Record, serializer="json", coerce=False, decimals=True, include_metadata=False):
    """One validated order. The wire format is this record's JSON (`dumps()`), without
    faust's metadata field, so producers outside faust can write it too."""

    order_number: int
    items: List[OrderItem]
    customer_id: Optional[str] = None
    ordered_at: Optional[datetime] = None     # timezone-aware UTC
