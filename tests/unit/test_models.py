"""models/: the records built per event keep faust's behaviour without its field descriptors."""
from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import faust
import pytest

from models.plain import plain_fields
from models.transaction import EnrichedTransaction, Transaction


def _faust_twin(cls: type[faust.Record]) -> Any:
    """A Record with the same fields, options and defaults as `cls`, as faust builds it: with
    its field descriptors on the class."""
    options = cls._options
    namespace = {"__annotations__": dict(options.fields), **options.defaults}
    return type(f"Faust{cls.__name__}", (faust.Record,), namespace, serializer="json",
                coerce=options.coerce, decimals=options.decimals, include_metadata=options.include_metadata)


FaustEnriched = _faust_twin(EnrichedTransaction)


def _fields(rng: random.Random) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "event_id": f"ev-{rng.randrange(10**9)}", "category": rng.choice(("payment", "receipt", "refund")),
        "account_id": f"acc-{rng.randrange(1000):06d}", "amount": Decimal(rng.randrange(1, 10**8)) / 100,
        "currency": "BRL", "end_to_end_id": "E" * 32, "counterparty_key": "x@example.com", "channel": "APP",
        "occurred_at": datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=rng.randrange(10**13)),
    }
    for name, value in (("description", "açaí \"x\"\n"), ("customer_id", rng.randrange(10**6)),
                        ("customer_name", "Fulano"), ("segment", "retail"), ("risk_score", 7),
                        ("account_status", "blocked")):
        if rng.random() < 0.7:
            fields[name] = value
    return fields


def test_plain_records_serialize_compare_and_load_as_faust_records() -> None:
    rng = random.Random(3)
    for _ in range(500):
        fields = _fields(rng)
        plain, faust_built = EnrichedTransaction(**fields), FaustEnriched(**fields)
        assert plain.dumps() == faust_built.dumps()
        assert plain.asdict() == faust_built.asdict()
        assert repr(plain).split(":", 1)[1] == repr(faust_built).split(":", 1)[1]
        assert EnrichedTransaction.loads(plain.dumps()).asdict() == FaustEnriched.loads(plain.dumps()).asdict()
        assert plain == EnrichedTransaction(**fields)
        assert plain.account_id == fields["account_id"] and plain.segment == fields.get("segment")


def test_the_fields_are_plain_attributes_and_faust_still_checks_the_arguments() -> None:
    tx = Transaction(**{k: v for k, v in _fields(random.Random(1)).items() if k in Transaction._options.fields})
    assert "account_id" not in vars(Transaction) and "customer_id" not in vars(EnrichedTransaction)
    assert vars(tx)["account_id"] == tx.account_id
    assert EnrichedTransaction(**tx.asdict(), risk_score=3).risk_score == 3
    with pytest.raises(TypeError, match="unexpected argument"):
        Transaction(**tx.asdict(), customer_id=1)
    with pytest.raises(TypeError, match="amount"):
        Transaction(**{k: v for k, v in tx.asdict().items() if k != "amount"})


def test_a_record_whose_descriptors_do_work_is_refused() -> None:
    class Coerced(faust.Record, coerce=True):
        n: int

    class Validated(faust.Record, validation=True):
        n: int

    for record in (Coerced, Validated):
        with pytest.raises(TypeError, match="plain_fields"):
            plain_fields(record)
    assert "n" in vars(Coerced)       # left as faust made it
