"""Plain stand-ins for txpipe's faust Records, so that the Quix contender runs txpipe's own
decode/validate/enrich functions (domain/) without faust in its virtualenv.

domain/transactions.py, domain/enrichment.py and domain/dead_letters.py import their record
types from models/, whose classes are faust.Record subclasses. `install()` puts these
dataclasses in their place before domain/ is imported: the same fields in the same order, and
`dumps()` writes the JSON faust writes for them (Decimal as a string, UTC datetimes ending in Z,
fields in declaration order). bench/pipeline.py compares the Quix contender's sink records
with txpipe's, event by event, so a drift between the two shows as a failed check.
"""
from __future__ import annotations

import dataclasses
import sys
import types
from datetime import datetime
from decimal import Decimal
from typing import Any, Optional

import orjson

CATEGORIES = ("payment", "receipt", "refund")


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


class _Record:
    """asdict() is shallow, as faust's; dumps() is faust's JSON of the same fields."""

    def asdict(self) -> dict[str, Any]:
        # A dataclass's __init__ sets every field, in declaration order, and nothing else sets
        # an attribute: its __dict__ is the record (dataclasses.fields() per call cost ~10% of
        # the contender's CPU in a py-spy profile).
        return dict(self.__dict__)

    def dumps(self) -> bytes:
        return orjson.dumps(self.asdict(), default=_default, option=orjson.OPT_UTC_Z)


@dataclasses.dataclass
class Transaction(_Record):
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


@dataclasses.dataclass
class EnrichedTransaction(Transaction):
    customer_id: Optional[int] = None
    customer_name: Optional[str] = None
    segment: Optional[str] = None
    risk_score: Optional[int] = None
    account_status: Optional[str] = None


@dataclasses.dataclass
class DeadLetter(_Record):
    source_topic: str
    source_partition: int
    source_offset: int
    source_timestamp_ms: int
    key_b64: Optional[str]
    value_b64: Optional[str]
    stage: str
    reason: str
    error: str
    first_failed_at: str
    attempts: int
    worker_id: str
    stored_apart: bool = False
    value_size: Optional[int] = None
    value_sha256: Optional[str] = None


def install() -> None:
    """Make `import models.transaction` / `models.dead_letter` resolve to this module's classes."""
    if "faust" in sys.modules:
        raise RuntimeError("faust is loaded: the stand-ins are for the faust-less Quix virtualenv only")
    package = types.ModuleType("models")
    package.__path__ = []
    transaction = types.ModuleType("models.transaction")
    transaction.CATEGORIES = CATEGORIES  # type: ignore[attr-defined]
    transaction.Transaction = Transaction  # type: ignore[attr-defined]
    transaction.EnrichedTransaction = EnrichedTransaction  # type: ignore[attr-defined]
    dead_letter = types.ModuleType("models.dead_letter")
    dead_letter.DeadLetter = DeadLetter  # type: ignore[attr-defined]
    package.transaction = transaction  # type: ignore[attr-defined]
    package.dead_letter = dead_letter  # type: ignore[attr-defined]
    sys.modules.update({"models": package, "models.transaction": transaction, "models.dead_letter": dead_letter})
