"""Decode a raw transaction event, keep the mapped fields, validate them into a Transaction."""
from __future__ import annotations

import base64
import binascii
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, Mapping, Optional

import orjson

from domain.errors import PermanentError, Reason, Stage
from domain.parsing import DEFAULT_TIME_RULES, TimeRules, parse_timestamp, text
from models.transaction import CATEGORIES, Transaction

# The one place that says which raw field feeds which Transaction field.
FIELD_MAP: Mapping[str, str] = {
    "event_id": "eventId",
    "category": "eventType",
    "account_id": "accountId",
    "amount": "amount",
    "currency": "currency",
    "occurred_at": "occurredAt",
    "end_to_end_id": "endToEndId",
    "counterparty_key": "counterpartyKey",
    "channel": "channel",
    "description": "description",
}
OPTIONAL_FIELDS = frozenset({"description"})
FREE_TEXT_FIELDS = frozenset({"description"})      # tabs and line breaks allowed
MAX_TEXT = 256

# Raw eventType values (upstream's vocabulary) to the pipeline's categories.
EVENT_TYPES: Mapping[str, str] = {
    "PIX_PAYMENT": "payment",
    "PIX_RECEIPT": "receipt",
    "PIX_REFUND": "refund",
}
assert set(EVENT_TYPES.values()) == set(CATEGORIES)

MAX_AMOUNT = Decimal("1000000000")   # 1 billion BRL: above this an amount is a bug upstream
AVRO_MAGIC = 0

AvroDecoder = Callable[[bytes], Mapping[str, Any]]


def decode(raw: Optional[bytes], avro: Optional[AvroDecoder] = None) -> Mapping[str, Any]:
    """Bytes to a JSON object: plain JSON, base64-wrapped JSON, or Confluent-framed Avro."""
    if not raw:
        raise PermanentError(Stage.DECODE, Reason.UNDECODABLE, "empty value")
    if raw[0] == AVRO_MAGIC:
        if avro is None:
            raise PermanentError(Stage.DECODE, Reason.UNDECODABLE,
                                 "Avro-framed value (magic byte 0) but no Avro decoder is configured")
        return avro(raw)
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = _decode_base64_json(raw)
    else:
        if isinstance(data, str):       # a JSON string holding base64: unwrap it too
            data = _decode_base64_json(data.encode())
    if not isinstance(data, dict):
        raise PermanentError(Stage.DECODE, Reason.NOT_AN_OBJECT,
                             f"expected a JSON object, got {type(data).__name__}")
    return data


def _decode_base64_json(raw: bytes) -> Any:
    try:
        inner = base64.b64decode(raw.strip(), validate=True)
        return orjson.loads(inner)
    except (binascii.Error, ValueError):
        raise PermanentError(Stage.DECODE, Reason.UNDECODABLE,
                             "value is neither JSON nor base64-wrapped JSON") from None


def to_transaction(event: Mapping[str, Any], *, rules: TimeRules = DEFAULT_TIME_RULES,
                   now: Optional[datetime] = None) -> Transaction:
    """Validate the mapped fields of a decoded event; every failure names its reason.
    `rules` and `now` bound a plausible occurredAt (domain/parsing.py)."""
    fields = {}
    for name, raw_name in FIELD_MAP.items():
        value = event.get(raw_name)
        if value is None or value == "":
            if name in OPTIONAL_FIELDS:
                continue
            raise PermanentError(Stage.VALIDATE, Reason.MISSING_FIELD, f"missing field {raw_name!r}")
        fields[name] = value

    for name in ("event_id", "category", "account_id", "currency", "end_to_end_id", "counterparty_key",
                 "channel", "description"):
        if name in fields:
            text(fields[name], FIELD_MAP[name], max_length=MAX_TEXT, free=name in FREE_TEXT_FIELDS)

    category = EVENT_TYPES.get(fields["category"])
    if category is None:
        raise PermanentError(Stage.VALIDATE, Reason.UNKNOWN_CATEGORY,
                             f"unknown eventType {fields['category']!r}")
    currency = fields["currency"]
    if len(currency) != 3 or not currency.isascii() or not currency.isupper():
        raise PermanentError(Stage.VALIDATE, Reason.INVALID_FIELD,
                             f"currency {currency!r} is not an ISO-4217 code")
    return Transaction(
        event_id=fields["event_id"],
        category=category,
        account_id=fields["account_id"],
        amount=parse_amount(fields["amount"]),
        currency=currency,
        occurred_at=parse_timestamp(fields["occurred_at"], FIELD_MAP["occurred_at"], rules=rules, now=now),
        end_to_end_id=fields["end_to_end_id"],
        counterparty_key=fields["counterparty_key"],
        channel=fields["channel"],
        description=fields.get("description"),
    )


def parse_amount(value: Any) -> Decimal:
    """A positive amount with at most 2 decimal places; floats go through their repr."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise PermanentError(Stage.VALIDATE, Reason.INVALID_AMOUNT,
                             f"amount must be a number or a decimal string, got {type(value).__name__}")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise PermanentError(Stage.VALIDATE, Reason.INVALID_AMOUNT, f"amount {value!r} is not a number") from None
    if not amount.is_finite() or amount <= 0:
        raise PermanentError(Stage.VALIDATE, Reason.INVALID_AMOUNT, f"amount {value!r} must be > 0")
    if amount > MAX_AMOUNT:
        raise PermanentError(Stage.VALIDATE, Reason.INVALID_AMOUNT, f"amount {value!r} exceeds {MAX_AMOUNT}")
    if amount != amount.quantize(Decimal("0.01")):
        raise PermanentError(Stage.VALIDATE, Reason.INVALID_AMOUNT,
                             f"amount {value!r} has more than 2 decimal places")
    return amount.quantize(Decimal("0.01"))


def event_id_of(raw: Optional[bytes]) -> Optional[str]:
    """The eventId of a raw value when it can be read (JSON or base64 JSON), else None; for
    log lines about an event that failed, so never raises."""
    try:
        event_id = decode(raw).get(FIELD_MAP["event_id"])
    except (PermanentError, TypeError, ValueError, IndexError):
        return None
    return event_id if isinstance(event_id, str) else None
