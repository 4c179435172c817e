"""Sample sales orders: good ones with their exact total, bad ones with the reason they must get."""
from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Iterable, Optional

import orjson

from domain.errors import Reason

EPOCH = datetime(2026, 1, 5, 8, 0, tzinfo=timezone.utc)   # fixed: same seed, same bytes


@dataclass(frozen=True)
class OrderSample:
    key: bytes                        # the order number as text: one order, one partition
    value: bytes
    order_number: int
    total: Optional[Decimal]          # the expected total of a good order
    expected_reason: Optional[Reason]  # None: a good order


def random_order(rng: random.Random, order_number: int) -> dict[str, Any]:
    """One order as upstream sends it; prices as JSON numbers (mostly) or decimal strings."""
    items = []
    for _ in range(rng.randint(1, 6)):
        cents = rng.randint(50, 250_000)
        items.append({
            "product_id": f"SKU-{rng.randint(1, 2500):05d}",
            "quantity": rng.choice((1, 1, 1, 2, 2, 3, 5, 10, 24)),
            "unit_price": cents / 100 if rng.random() < 0.7 else f"{cents // 100}.{cents % 100:02d}",
        })
    ordered_at = EPOCH + timedelta(seconds=order_number * 7 + rng.randint(0, 6))
    return {
        "order_number": order_number,
        "customer_id": f"C{rng.randint(1, 20_000):06d}",
        "ordered_at": ordered_at.isoformat().replace("+00:00", "Z"),
        "items": items,
    }


def expected_total(order: dict[str, Any]) -> Decimal:
    """The total computed independently of domain.sales (integer cents)."""
    cents = 0
    for item in order["items"]:
        price = str(item["unit_price"])
        units, _, frac = price.partition(".")
        cents += item["quantity"] * (int(units) * 100 + int((frac + "00")[:2]))
    return Decimal(cents) / 100


def _bad(rng: random.Random, order: dict[str, Any]) -> tuple[bytes, Reason]:
    """Spoil `order` in one of the ways upstream gets it wrong."""
    kind = rng.randrange(10)
    item = order["items"][0]
    if kind == 0:
        return orjson.dumps(order)[:-7], Reason.UNDECODABLE                     # truncated JSON
    if kind == 1:
        return orjson.dumps([order]), Reason.NOT_AN_OBJECT
    if kind == 2:
        del order[rng.choice(("order_number", "items"))]
        return orjson.dumps(order), Reason.MISSING_FIELD
    if kind == 3:
        del item[rng.choice(("quantity", "unit_price", "product_id"))]
        return orjson.dumps(order), Reason.MISSING_FIELD
    if kind == 4:
        item["quantity"] = rng.choice((-1, -3, 0, 2.5, "2"))
        return orjson.dumps(order), Reason.INVALID_QUANTITY
    if kind == 5:
        item["unit_price"] = rng.choice(("abc", "12,50", "R$ 10.00", True, [10]))
        return orjson.dumps(order), Reason.INVALID_PRICE
    if kind == 6:
        item["unit_price"] = rng.choice((-9.9, "-0.01", "1.999", "NaN", "Infinity"))
        return orjson.dumps(order), Reason.INVALID_PRICE
    if kind == 7:
        order["items"] = []
        return orjson.dumps(order), Reason.EMPTY_ORDER
    if kind == 8:
        order["order_number"] = rng.choice((2**31, -5, 0, "A-1001", 12.5))
        return orjson.dumps(order), Reason.INVALID_ORDER_NUMBER
    return b"\xff\xfe not an order", Reason.UNDECODABLE


def order_samples(count: int, *, bad_ratio: float = 0.0, resend_ratio: float = 0.0, seed: int = 0,
                  first_number: int = 1) -> list[OrderSample]:
    """`count` orders numbered from `first_number`. About `bad_ratio` of them are malformed;
    about `resend_ratio` repeat an earlier good order number, half unchanged (a producer
    retry) and half with new items (a correction: the later one must win)."""
    rng = random.Random(seed)
    out: list[OrderSample] = []
    good: list[int] = []
    number = first_number
    for _ in range(count):
        if good and rng.random() < resend_ratio:
            earlier = out[rng.choice(good)]
            if rng.random() < 0.5:
                out.append(earlier)
            else:
                order = random_order(rng, earlier.order_number)
                out.append(OrderSample(earlier.key, orjson.dumps(order), earlier.order_number,
                                       expected_total(order), None))
            good.append(len(out) - 1)
            continue
        order = random_order(rng, number)
        key = str(number).encode()
        if rng.random() < bad_ratio:
            value, reason = _bad(rng, order)
            out.append(OrderSample(key, value, number, None, reason))
        else:
            out.append(OrderSample(key, orjson.dumps(order), number, expected_total(order), None))
            good.append(len(out) - 1)
        number += 1
    return out


def expected_table(samples: Iterable[OrderSample]) -> dict[int, Decimal]:
    """order_number -> total the `sales` table must hold after all samples: the last good
    version of each order wins, bad ones leave no row."""
    table: dict[int, Decimal] = {}
    for sample in samples:
        if sample.total is not None:
            table[sample.order_number] = sample.total
    return table


SAMPLE_FILE_SEED = 3


def sample_file(count: int = 100, seed: int = SAMPLE_FILE_SEED) -> bytes:
    """The bytes of data/sales_sample.json: a JSON array of `count` good orders."""
    rng = random.Random(seed)
    orders = [random_order(rng, 1001 + n) for n in range(count)]
    return orjson.dumps(orders, option=orjson.OPT_INDENT_2) + b"\n"
