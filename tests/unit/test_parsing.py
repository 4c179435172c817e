"""The shared field rules: timestamps without a UTC equivalent or implausible, control
characters, oversize; each a PermanentError with its own reason, never another exception."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.errors import PermanentError, Reason
from domain.parsing import TimeRules, from_epoch_millis, parse_timestamp, text
from domain.sales import parse_order
from domain.transactions import decode, to_transaction

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=timezone.utc)


def reason_of(call: Any, *args: Any, **kwargs: Any) -> Reason:
    with pytest.raises(PermanentError) as caught:
        call(*args, **kwargs)
    return caught.value.reason


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:30:00-01:00"])
def test_a_timestamp_without_a_utc_equivalent_is_out_of_range(value: str) -> None:
    assert reason_of(parse_timestamp, value, "occurredAt", now=NOW) is Reason.TIMESTAMP_OUT_OF_RANGE


@pytest.mark.parametrize("value", ["1999-12-31T23:59:59Z", "2026-12-04T12:00:00Z", 0, 10**12 * 9])
def test_implausible_timestamps_are_named(value: Any) -> None:
    assert reason_of(parse_timestamp, value, "occurredAt", now=NOW) is Reason.IMPLAUSIBLE_TIMESTAMP


def test_the_plausible_window_is_configurable() -> None:
    rules = TimeRules(earliest=datetime(1900, 1, 1, tzinfo=timezone.utc), max_ahead=timedelta(days=3650))
    assert parse_timestamp("1950-01-01T00:00:00Z", "t", rules=rules, now=NOW).year == 1950
    assert parse_timestamp("2030-01-01T00:00:00+02:00", "t", rules=rules, now=NOW) == \
        datetime(2029, 12, 31, 22, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("millis", [2**63, -2**63, 10**20])
def test_epoch_millis_outside_the_calendar(millis: int) -> None:
    assert reason_of(from_epoch_millis, millis, "timestamp", now=NOW) is Reason.TIMESTAMP_OUT_OF_RANGE


@given(st.one_of(st.text(max_size=40), st.integers(), st.floats(), st.booleans(), st.none()))
def test_parse_timestamp_raises_nothing_but_permanent_errors(value: Any) -> None:
    try:
        moment = parse_timestamp(value, "t", now=NOW)
    except PermanentError:
        return
    assert moment.tzinfo is not None and moment.utcoffset() == timedelta(0)


@pytest.mark.parametrize("value, reason", [
    ("acc\x00001", Reason.CONTROL_CHARACTER),
    ("acc\n1", Reason.CONTROL_CHARACTER),
    ("acc\x7f", Reason.CONTROL_CHARACTER),
    ("x" * 257, Reason.FIELD_TOO_LARGE),
    ("\ud800", Reason.INVALID_FIELD),
    (7, Reason.INVALID_FIELD),
])
def test_text_rules(value: Any, reason: Reason) -> None:
    assert reason_of(text, value, "accountId") is reason


def test_free_text_allows_tabs_and_line_breaks_but_not_nul() -> None:
    assert text("a\tb\r\nc", "description", free=True) == "a\tb\r\nc"
    assert reason_of(text, "a\x00b", "description", free=True) is Reason.CONTROL_CHARACTER


def raw_tx(**changes: Any) -> bytes:
    event = {"eventId": "e1", "eventType": "PIX_PAYMENT", "accountId": "acc-000001", "amount": "10.00",
             "currency": "BRL", "occurredAt": "2026-11-22T10:00:00-03:00", "endToEndId": "E1",
             "counterpartyKey": "k", "channel": "app", **changes}
    return orjson.dumps(event)


@pytest.mark.parametrize("changes, reason", [
    ({"occurredAt": "0001-01-01T00:00:00+01:00"}, Reason.TIMESTAMP_OUT_OF_RANGE),
    ({"occurredAt": "9999-12-31T23:30:00-01:00"}, Reason.TIMESTAMP_OUT_OF_RANGE),
    ({"accountId": "acc\u0000001"}, Reason.CONTROL_CHARACTER),
    ({"eventId": "e" * 5000}, Reason.FIELD_TOO_LARGE),
    ({"description": "x\u0000"}, Reason.CONTROL_CHARACTER),
])
def test_transactions_apply_the_shared_rules(changes: dict[str, Any], reason: Reason) -> None:
    assert reason_of(lambda: to_transaction(decode(raw_tx(**changes)), now=NOW)) is reason


@pytest.mark.parametrize("ordered_at, reason", [
    ("9999-12-31T23:30:00-01:00", Reason.TIMESTAMP_OUT_OF_RANGE),
    ("0001-01-01T00:00:00+01:00", Reason.TIMESTAMP_OUT_OF_RANGE),
    ("1900-01-01T00:00:00Z", Reason.IMPLAUSIBLE_TIMESTAMP),
])
def test_sales_apply_the_same_rules(ordered_at: str, reason: Reason) -> None:
    raw = orjson.dumps({"order_number": 1, "ordered_at": ordered_at,
                        "items": [{"product_id": "p", "quantity": 1, "unit_price": "1.00"}]})
    assert reason_of(parse_order, raw, now=NOW) is reason


def test_sales_text_fields_refuse_control_characters() -> None:
    raw = orjson.dumps({"order_number": 1, "customer_id": "c\x00",
                        "items": [{"product_id": "p", "quantity": 1, "unit_price": "1.00"}]})
    assert reason_of(parse_order, raw) is Reason.CONTROL_CHARACTER
