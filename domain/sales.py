"""Sales orders: decode and validate one order, sum its total exactly, fold a batch into rows."""
from __future__ import annotations

from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Iterable, Mapping, Optional

import orjson

from domain.errors import PermanentError, Reason, Stage
from domain.parsing import DEFAULT_TIME_RULES, TimeRules, parse_timestamp, text
from models.sales_order import OrderItem, SalesOrder

MAX_ORDER_NUMBER = 2**31 - 1          # the `sales.order_number` column is INT
MAX_ITEMS = 1000
MAX_QUANTITY = 1_000_000
MAX_UNIT_PRICE = Decimal(1_000_000_000)
# With these bounds a total has at most 21 significant digits: exact in Decimal's default
# 28-digit context, and far inside what NUMERIC stores, so the database never refuses one.
CENT = Decimal("0.01")


def _invalid(reason: Reason, message: str) -> PermanentError:
    return PermanentError(Stage.VALIDATE, reason, message)


def decode_order(raw: Optional[bytes]) -> Mapping[str, Any]:
    """Bytes to a JSON object."""
    if not raw:
        raise PermanentError(Stage.DECODE, Reason.UNDECODABLE, "empty value")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise PermanentError(Stage.DECODE, Reason.UNDECODABLE, f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise PermanentError(Stage.DECODE, Reason.NOT_AN_OBJECT,
                             f"expected a JSON object, got {type(data).__name__}")
    return data


def parse_order(raw: Optional[bytes], *, rules: TimeRules = DEFAULT_TIME_RULES,
                now: Optional[datetime] = None) -> SalesOrder:
    """Decode and validate one order; every failure raises PermanentError with its reason."""
    return to_order(decode_order(raw), rules=rules, now=now)


def to_order(data: Mapping[str, Any], *, rules: TimeRules = DEFAULT_TIME_RULES,
             now: Optional[datetime] = None) -> SalesOrder:
    order_number, items, customer_id, ordered_at = _validated(data, rules, now)
    return SalesOrder(
        order_number=order_number,
        items=[OrderItem(product_id=p, quantity=q, unit_price=u) for p, q, u in items],
        customer_id=customer_id,
        ordered_at=ordered_at,
    )


def parse_order_row(raw: Optional[bytes], *, rules: TimeRules = DEFAULT_TIME_RULES,
                    now: Optional[datetime] = None) -> tuple[int, Decimal]:
    """(order_number, total) of one order, validated exactly as `parse_order` validates it
    (the same checks, the same reasons) but without building the faust Records, whose field
    descriptors cost about a third of the parsing: the sales agent's hot path."""
    order_number, items, _, _ = _validated(decode_order(raw), rules, now)
    return order_number, _total((u, q) for _, q, u in items)


_Item = tuple[str, int, Decimal]      # product_id, quantity, unit_price


def _validated(data: Mapping[str, Any], rules: TimeRules,
               now: Optional[datetime]) -> tuple[int, list[_Item], Optional[str], Optional[datetime]]:
    order_number = parse_order_number(_required(data, "order_number"))
    items = _required(data, "items")
    if not isinstance(items, list):
        raise _invalid(Reason.INVALID_FIELD, f"'items' must be a list, got {type(items).__name__}")
    if not items:
        raise _invalid(Reason.EMPTY_ORDER, f"order {order_number} has no items")
    if len(items) > MAX_ITEMS:
        raise _invalid(Reason.INVALID_FIELD, f"order {order_number} has {len(items)} items, most {MAX_ITEMS}")
    customer_id = data.get("customer_id")
    if customer_id is not None:
        if customer_id == "":
            raise _invalid(Reason.INVALID_FIELD, "'customer_id' must be a string of 1 to 256 characters")
        text(customer_id, "customer_id")
    ordered_at = data.get("ordered_at")
    fields = [_item_fields(index, item) for index, item in enumerate(items)]
    return (order_number, fields, customer_id,
            None if ordered_at is None else parse_timestamp(ordered_at, "ordered_at", rules=rules, now=now,
                                                            epoch_millis=False))


def _required(data: Mapping[str, Any], name: str, where: str = "") -> Any:
    value = data.get(name)
    if value is None or value == "":
        raise _invalid(Reason.MISSING_FIELD, f"missing field '{where}{name}'")
    return value


def _item_fields(index: int, item: Any) -> _Item:
    where = f"items[{index}]."
    if not isinstance(item, dict):
        raise _invalid(Reason.INVALID_FIELD, f"items[{index}] must be an object, got {type(item).__name__}")
    product_id = _required(item, "product_id", where)
    if isinstance(product_id, bool) or not isinstance(product_id, (str, int)):
        raise _invalid(Reason.INVALID_FIELD, f"'{where}product_id' must be a string or an integer")
    if isinstance(product_id, int) and not -2**63 <= product_id < 2**63:
        raise _invalid(Reason.INVALID_FIELD, f"'{where}product_id' is an integer out of range")
    if isinstance(product_id, str):
        text(product_id, f"{where}product_id")
    return (str(product_id), parse_quantity(_required(item, "quantity", where), where),
            parse_unit_price(_required(item, "unit_price", where), where))


def parse_order_number(value: Any) -> int:
    """A positive integer that fits the INT column; a string of digits is accepted too."""
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(Reason.INVALID_ORDER_NUMBER, f"order_number {value!r} is not an integer")
    if not 1 <= value <= MAX_ORDER_NUMBER:
        raise _invalid(Reason.INVALID_ORDER_NUMBER, f"order_number {value} is outside 1..{MAX_ORDER_NUMBER}")
    return value


def parse_quantity(value: Any, where: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(Reason.INVALID_QUANTITY, f"'{where}quantity' {value!r} is not an integer")
    if not 1 <= value <= MAX_QUANTITY:
        raise _invalid(Reason.INVALID_QUANTITY, f"'{where}quantity' {value} is outside 1..{MAX_QUANTITY}")
    return value


def parse_unit_price(value: Any, where: str = "") -> Decimal:
    """A number or decimal string >= 0 with at most 2 decimal places; floats go through
    their shortest repr (19.9 -> Decimal('19.90')), never through binary arithmetic."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _invalid(Reason.INVALID_PRICE,
                       f"'{where}unit_price' must be a number, got {type(value).__name__}")
    try:
        price = Decimal(str(value).strip())
    except InvalidOperation:
        raise _invalid(Reason.INVALID_PRICE, f"'{where}unit_price' {value!r} is not a number") from None
    if not price.is_finite() or price < 0:
        raise _invalid(Reason.INVALID_PRICE, f"'{where}unit_price' {value!r} must be a number >= 0")
    if price > MAX_UNIT_PRICE:
        raise _invalid(Reason.INVALID_PRICE, f"'{where}unit_price' {value!r} exceeds {MAX_UNIT_PRICE}")
    if price != price.quantize(CENT):
        raise _invalid(Reason.INVALID_PRICE, f"'{where}unit_price' {value!r} has more than 2 decimal places")
    return price.quantize(CENT)


def order_total(order: SalesOrder) -> Decimal:
    """Sum of quantity x unit price, exact (Decimal all the way, 2 decimal places)."""
    return _total((item.unit_price, item.quantity) for item in order.items)


def _total(lines: Iterable[tuple[Decimal, int]]) -> Decimal:
    return sum((price * quantity for price, quantity in lines), Decimal("0.00")).quantize(CENT)


def order_totals(orders: Iterable[SalesOrder]) -> list[tuple[int, Decimal]]:
    """One (order_number, total) row per order number, the last occurrence winning (orders
    are keyed by number, so within a partition the latest offset wins), sorted by order
    number so that concurrent upserts lock rows in the same order and cannot deadlock."""
    return latest_rows((order.order_number, order_total(order)) for order in orders)


def latest_rows(rows: Iterable[tuple[int, Decimal]]) -> list[tuple[int, Decimal]]:
    """`order_totals` for rows already summed (`parse_order_row`): the last total of each
    order number, sorted by order number."""
    return sorted(dict(rows).items())
