"""Error types: a permanent failure is dead-lettered with its reason, a transient one is retried."""
from __future__ import annotations

from enum import Enum


class Stage(str, Enum):
    DECODE = "decode"
    VALIDATE = "validate"
    ENRICH = "enrich"
    STORE = "store"                        # the database refused the row itself
    FORWARD = "forward"                    # sending the output to its topic


class Reason(str, Enum):
    UNDECODABLE = "undecodable"            # not JSON, not base64-wrapped JSON, not Avro
    NOT_AN_OBJECT = "not_an_object"        # valid JSON, but not a JSON object
    MISSING_FIELD = "missing_field"
    INVALID_FIELD = "invalid_field"        # wrong type or shape
    UNKNOWN_CATEGORY = "unknown_category"
    INVALID_AMOUNT = "invalid_amount"
    INVALID_TIMESTAMP = "invalid_timestamp"            # not a timestamp, or without a UTC offset
    TIMESTAMP_OUT_OF_RANGE = "timestamp_out_of_range"  # parses, but has no UTC equivalent (year 0 or 10000)
    IMPLAUSIBLE_TIMESTAMP = "implausible_timestamp"    # before APP_TIMESTAMP_EARLIEST or too far ahead
    CONTROL_CHARACTER = "control_character"            # NUL or another control character in a text field
    FIELD_TOO_LARGE = "field_too_large"                # a text field longer than its limit
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
    REJECTED_BY_DATABASE = "rejected_by_database"  # a data error on this row alone (SQLSTATE 22/23, CQL InvalidRequest)
    # change records of the account cache (Debezium envelopes, agent account-changes)
    INVALID_CHANGE = "invalid_change"              # not a Debezium change envelope of accounts/customers
    # any pipeline
    TOO_LARGE = "too_large"                        # the output is larger than the broker accepts
    INTERNAL_ERROR = "internal_error"              # an error nobody foresaw, isolated to this event


class PermanentError(Exception):
    """Retrying cannot help: the event goes to the dead-letter topic."""

    def __init__(self, stage: Stage, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.stage = stage
        self.reason = reason
        self.message = message


def internal_error(stage: Stage, exc: BaseException) -> PermanentError:
    """An unforeseen exception, isolated to one event: dead-lettered with its type and message."""
    return PermanentError(stage, Reason.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}"[:1000])


class TransientError(Exception):
    """A server is down or slow: retry with backoff, never dead-letter."""
