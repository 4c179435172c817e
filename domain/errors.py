"""Error types: a permanent failure is dead-lettered with its reason, a transient one is retried."""
from __future__ import annotations

from enum import Enum


class Stage(str, Enum):
    DECODE = "decode"
    VALIDATE = "validate"
    ENRICH = "enrich"
    STORE = "store"                        # the database refused the row itself


class Reason(str, Enum):
    UNDECODABLE = "undecodable"            # not JSON, not base64-wrapped JSON, not Avro
    NOT_AN_OBJECT = "not_an_object"        # valid JSON, but not a JSON object
    MISSING_FIELD = "missing_field"
    INVALID_FIELD = "invalid_field"        # wrong type or shape
    UNKNOWN_CATEGORY = "unknown_category"
    INVALID_AMOUNT = "invalid_amount"
    INVALID_TIMESTAMP = "invalid_timestamp"
    UNKNOWN_ACCOUNT = "unknown_account"
    # Avro in the Confluent wire format (magic byte 0, 4-byte schema id, Avro binary)
    BAD_MAGIC_BYTE = "bad_magic_byte"              # first byte is not 0: not Confluent-framed Avro
    UNKNOWN_SCHEMA_ID = "unknown_schema_id"        # the registry has no schema with that id
    TRUNCATED_AVRO = "truncated_avro"              # shorter than the 5-byte header or than its record
    INVALID_AVRO = "invalid_avro"                  # body does not parse with the writer schema
    INCOMPATIBLE_SCHEMA = "incompatible_schema"    # writer schema cannot be read as the app's schema
    # sales orders
    INVALID_ORDER_NUMBER = "invalid_order_number"  # not an integer in 1..2^31-1 (the INT column)
    EMPTY_ORDER = "empty_order"                    # no items
    INVALID_QUANTITY = "invalid_quantity"          # not a positive integer, or too large
    INVALID_PRICE = "invalid_price"                # not a number, negative, > 2 decimals, too large
    REJECTED_BY_DATABASE = "rejected_by_database"  # a data error on this row alone (SQLSTATE 22/23)


class PermanentError(Exception):
    """Retrying cannot help: the event goes to the dead-letter topic."""

    def __init__(self, stage: Stage, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.stage = stage
        self.reason = reason
        self.message = message


class TransientError(Exception):
    """A server is down or slow: retry with backoff, never dead-letter."""
