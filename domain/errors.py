"""Error types: a permanent failure is dead-lettered with its reason, a transient one is retried."""
from __future__ import annotations

from enum import Enum


class Stage(str, Enum):
    DECODE = "decode"
    VALIDATE = "validate"
    ENRICH = "enrich"


class Reason(str, Enum):
    UNDECODABLE = "undecodable"            # not JSON, not base64-wrapped JSON, not Avro
    NOT_AN_OBJECT = "not_an_object"        # valid JSON, but not a JSON object
    MISSING_FIELD = "missing_field"
    INVALID_FIELD = "invalid_field"        # wrong type or shape
    UNKNOWN_CATEGORY = "unknown_category"
    INVALID_AMOUNT = "invalid_amount"
    INVALID_TIMESTAMP = "invalid_timestamp"
    UNKNOWN_ACCOUNT = "unknown_account"


class PermanentError(Exception):
    """Retrying cannot help: the event goes to the dead-letter topic."""

    def __init__(self, stage: Stage, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.stage = stage
        self.reason = reason
        self.message = message


class TransientError(Exception):
    """A server is down or slow: retry with backoff, never dead-letter."""
