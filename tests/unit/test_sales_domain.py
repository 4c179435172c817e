"""Sales orders: exact totals, last-one-wins batches, and a named reason for every malformed kind."""
from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import orjson
import pytest

from app.settings import ROOT
from domain.errors import PermanentError, Reason, Stage
from domain.sales import MAX_ORDER_NUMBER, order_total, order_totals, parse_order
from app.commands.samples.sales import expected_table, order_samples, sample_file
from models.sales_order import OrderItem, SalesOrder


def raw(**overrides: Any) -> dict[str, Any]:
    order = {"order_number": 1001, "customer_id": "C000042", "ordered_at": "2026-01-05T09:00:00-03:00",
             "items": [{"product_id": "SKU-1", "quantity": 3, "unit_price": 0.1},
                       {"product_id": "SKU-2", "quantity": 1, "unit_price": "19.99"}]}
    order.update(overrides)
    return {k: v for k, v in order.items() if v is not ...}


def item(**overrides: Any) -> dict[str, Any]:
    line = {"product_id": "SKU-1", "quantity": 2, "unit_price": "10.00"}
    line.update(overrides)
    return {k: v for k, v in line.items() if v is not ...}


def reason_of(value: bytes) -> Reason:
    with pytest.raises(PermanentError) as info:
        parse_order(value)
    assert info.value.message
    return info.value.reason


def test_total_is_exact_decimal_arithmetic() -> None:
    order = parse_order(orjson.dumps(raw()))
    # 3 x 0.1 is 0.30000000000000004 in binary floating point; here it is 0.30
    assert order_total(order) == Decimal("20.29")
    assert str(order_total(order)) == "20.29"
    assert order.ordered_at == datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)
    assert order.items[0] == OrderItem(product_id="SKU-1", quantity=3, unit_price=Decimal("0.10"))


def test_many_cents_add_up_exactly() -> None:
    items = [item(quantity=1, unit_price=0.01) for _ in range(1000)]
    assert order_total(parse_order(orjson.dumps(raw(items=items)))) == Decimal("10.00")
    big = [item(quantity=1_000_000, unit_price="999999999.99")] * 1000
    assert order_total(parse_order(orjson.dumps(raw(items=big)))) == Decimal("999999999990000000.00")


def test_optional_fields_and_lenient_forms() -> None:
    order = parse_order(orjson.dumps(raw(customer_id=..., ordered_at=..., order_number="42",
                                         items=[item(product_id=7, unit_price=5)])))
    assert (order.order_number, order.customer_id, order.ordered_at) == (42, None, None)
    assert order.items[0].product_id == "7"
    assert order_total(order) == Decimal("10.00")
    assert parse_order(orjson.dumps(raw(items=[item(unit_price=0)]))).items[0].unit_price == Decimal("0.00")
    assert parse_order(orjson.dumps(raw(order_number=MAX_ORDER_NUMBER))).order_number == MAX_ORDER_NUMBER


def test_the_record_is_the_wire_format() -> None:
    order = parse_order(orjson.dumps(raw()))
    assert b"__faust" not in order.dumps()
    assert parse_order(order.dumps()) == order
    assert isinstance(order, SalesOrder)


@pytest.mark.parametrize("value, reason", [
    # bad JSON
    (b"", Reason.UNDECODABLE),
    (b'{"order_number": 1, "items": [', Reason.UNDECODABLE),
    (b"\xff\xfe", Reason.UNDECODABLE),
    (b"[1, 2]", Reason.NOT_AN_OBJECT),
    (b'"1001"', Reason.NOT_AN_OBJECT),
    # missing fields
    (orjson.dumps(raw(order_number=...)), Reason.MISSING_FIELD),
    (orjson.dumps(raw(order_number=None)), Reason.MISSING_FIELD),
    (orjson.dumps(raw(items=...)), Reason.MISSING_FIELD),
    (orjson.dumps(raw(items=[item(quantity=...)])), Reason.MISSING_FIELD),
    (orjson.dumps(raw(items=[item(unit_price=...)])), Reason.MISSING_FIELD),
    (orjson.dumps(raw(items=[item(unit_price="")])), Reason.MISSING_FIELD),
    (orjson.dumps(raw(items=[item(product_id=...)])), Reason.MISSING_FIELD),
    # order number that does not fit INT, or is no number
    (orjson.dumps(raw(order_number=MAX_ORDER_NUMBER + 1)), Reason.INVALID_ORDER_NUMBER),
    (orjson.dumps(raw(order_number=0)), Reason.INVALID_ORDER_NUMBER),
    (orjson.dumps(raw(order_number=-7)), Reason.INVALID_ORDER_NUMBER),
    (orjson.dumps(raw(order_number=12.5)), Reason.INVALID_ORDER_NUMBER),
    (orjson.dumps(raw(order_number=True)), Reason.INVALID_ORDER_NUMBER),
    (orjson.dumps(raw(order_number="A-1001")), Reason.INVALID_ORDER_NUMBER),
    # quantity
    (orjson.dumps(raw(items=[item(quantity=-1)])), Reason.INVALID_QUANTITY),
    (orjson.dumps(raw(items=[item(quantity=0)])), Reason.INVALID_QUANTITY),
    (orjson.dumps(raw(items=[item(quantity=2.5)])), Reason.INVALID_QUANTITY),
    (orjson.dumps(raw(items=[item(quantity="2")])), Reason.INVALID_QUANTITY),
    (orjson.dumps(raw(items=[item(quantity=10**7)])), Reason.INVALID_QUANTITY),
    # price
    (orjson.dumps(raw(items=[item(unit_price="abc")])), Reason.INVALID_PRICE),
    (orjson.dumps(raw(items=[item(unit_price="12,50")])), Reason.INVALID_PRICE),
    (orjson.dumps(raw(items=[item(unit_price=True)])), Reason.INVALID_PRICE),
    (orjson.dumps(raw(items=[item(unit_price=[1])])), Reason.INVALID_PRICE),
    (orjson.dumps(raw(items=[item(unit_price=-0.01)])), Reason.INVALID_PRICE),
    (orjson.dumps(raw(items=[item(unit_price="NaN")])), Reason.INVALID_PRICE),
    (orjson.dumps(raw(items=[item(unit_price="Infinity")])), Reason.INVALID_PRICE),
    (orjson.dumps(raw(items=[item(unit_price="1.999")])), Reason.INVALID_PRICE),
    (orjson.dumps(raw(items=[item(unit_price="1e12")])), Reason.INVALID_PRICE),
    # items
    (orjson.dumps(raw(items=[])), Reason.EMPTY_ORDER),
    (orjson.dumps(raw(items={"a": 1})), Reason.INVALID_FIELD),
    (orjson.dumps(raw(items=["SKU-1"])), Reason.INVALID_FIELD),
    (orjson.dumps(raw(items=[item()] * 1001)), Reason.INVALID_FIELD),
    (orjson.dumps(raw(customer_id=5)), Reason.INVALID_FIELD),
    (orjson.dumps(raw(ordered_at="yesterday")), Reason.INVALID_TIMESTAMP),
    (orjson.dumps(raw(ordered_at="2026-01-05T09:00:00")), Reason.INVALID_TIMESTAMP),
])
def test_malformed_orders_have_a_named_reason(value: bytes, reason: Reason) -> None:
    assert reason_of(value) == reason


def test_stage_says_where_it_failed() -> None:
    with pytest.raises(PermanentError) as info:
        parse_order(b"{")
    assert info.value.stage == Stage.DECODE
    with pytest.raises(PermanentError) as info:
        parse_order(orjson.dumps(raw(items=[item(), item(quantity=-1)])))
    assert info.value.stage == Stage.VALIDATE
    assert "items[1].quantity" in info.value.message


def test_a_batch_folds_to_one_row_per_order_the_last_one_winning_sorted() -> None:
    def order(number: int, price: str) -> SalesOrder:
        return parse_order(orjson.dumps(raw(order_number=number, items=[item(quantity=1, unit_price=price)])))

    rows = order_totals([order(7, "1.00"), order(3, "2.00"), order(7, "5.00"), order(5, "3.00")])
    assert rows == [(3, Decimal("2.00")), (5, Decimal("3.00")), (7, Decimal("5.00"))]
    assert order_totals([]) == []


def test_samples_carry_their_expected_outcome() -> None:
    data = order_samples(3000, bad_ratio=0.1, resend_ratio=0.05, seed=11)
    reasons = set()
    for sample in data:
        if sample.expected_reason is None:
            assert order_total(parse_order(sample.value)) == sample.total
            assert sample.key == str(sample.order_number).encode()
        else:
            reasons.add(reason_of(sample.value))
            assert reason_of(sample.value) == sample.expected_reason
    assert reasons == {Reason.UNDECODABLE, Reason.NOT_AN_OBJECT, Reason.MISSING_FIELD,
                       Reason.INVALID_QUANTITY, Reason.INVALID_PRICE, Reason.EMPTY_ORDER,
                       Reason.INVALID_ORDER_NUMBER}
    table = expected_table(data)
    resent = len(data) - len({s.order_number for s in data})
    assert resent > 50
    assert all(n not in table for s in data if s.expected_reason for n in [s.order_number])
    assert order_samples(50, seed=1) == order_samples(50, seed=1)


def test_committed_sample_file_is_the_generators_output() -> None:
    committed = (ROOT / "data" / "sales_sample.json").read_bytes()
    assert committed == sample_file(), "regenerate: faust -A app.main write-sales-sample"
    orders = orjson.loads(committed)
    assert len(orders) == 100
    assert len({o["order_number"] for o in orders}) == 100
    for o in orders:
        assert order_total(parse_order(orjson.dumps(o))) > 0


def test_the_row_path_refuses_and_sums_exactly_as_the_record_path() -> None:
    """parse_order_row (the agent's hot path) against parse_order + order_total on the samples,
    bad ones included: the same rows, the same reasons."""
    from app.commands.samples.sales import order_samples
    from domain.sales import parse_order_row
    samples = order_samples(2000, bad_ratio=0.3, seed=5)
    assert any(s.expected_reason for s in samples)
    for s in samples:
        try:
            order = parse_order(s.value)
        except PermanentError as err:
            with pytest.raises(PermanentError) as row_err:
                parse_order_row(s.value)
            assert (row_err.value.reason, row_err.value.message) == (err.reason, err.message)
        else:
            assert parse_order_row(s.value) == (order.order_number, order_total(order))
