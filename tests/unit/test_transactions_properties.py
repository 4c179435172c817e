"""Property: whatever bytes or JSON arrive, parsing ends in a Transaction or a named reason."""
from __future__ import annotations

import base64
from typing import Any

import json
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.transactions import parse
from domain.avro import AvroDecoder, AvroEncoder, Schema
from domain.errors import PermanentError, Reason
from domain.transactions import FIELD_MAP
from models.avro_schemas import RAW_TRANSACTION, RAW_TRANSACTION_FIELDS
from models.transaction import Transaction

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=12,
)

# Objects shaped like events: the mapped raw names with arbitrary values, plus noise.
event_like = st.fixed_dictionaries(
    {},
    optional={raw: json_values | st.sampled_from(["PIX_PAYMENT", "BRL", "10.00", "2026-11-22T10:00:00Z"])
              for raw in FIELD_MAP.values()},
).flatmap(lambda d: st.dictionaries(st.text(max_size=8), json_values, max_size=3).map(lambda x: {**x, **d}))


def check(value: bytes) -> None:
    outcome = parse(value)
    assert isinstance(outcome, (Transaction, PermanentError))
    if isinstance(outcome, PermanentError):
        assert isinstance(outcome.reason, Reason) and outcome.message
    else:
        assert outcome.amount > 0 and outcome.occurred_at.tzinfo is not None


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_arbitrary_bytes(value: bytes) -> None:
    check(value)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_arbitrary_json(value: Any) -> None:
    body = json.dumps(value).encode()
    check(body)
    check(base64.b64encode(body))


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(event_like)
def test_arbitrary_event_shaped_objects(value: dict[str, Any]) -> None:
    check(json.dumps(value).encode())


def _avro_decoder() -> AvroDecoder:
    decoder = AvroDecoder(Schema.parse(RAW_TRANSACTION))
    decoder.add(1, Schema.parse(RAW_TRANSACTION))
    return decoder


AVRO = _avro_decoder()


def check_avro(value: bytes) -> None:
    for unknown in AVRO.missing([value]):     # what prefetch does for ids the registry lacks
        AVRO.add_unknown(unknown)
    outcome = parse(value, AVRO.decode)
    assert isinstance(outcome, (Transaction, PermanentError))
    if isinstance(outcome, PermanentError):
        assert isinstance(outcome.reason, Reason) and outcome.message


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200), st.sampled_from([b"\x00\x00\x00\x00\x01", b"\x00\x00\x00\x00\x07", b"\x00"]))
def test_arbitrary_bytes_in_an_avro_frame(body: bytes, header: bytes) -> None:
    check_avro(header + body)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.fixed_dictionaries({raw: st.text(max_size=12) for raw in FIELD_MAP.values()}))
def test_avro_encoded_events_of_any_text(event: dict[str, Any]) -> None:
    encoder = AvroEncoder(1, Schema.parse(RAW_TRANSACTION))
    datum = {k: v for k, v in event.items() if k in RAW_TRANSACTION_FIELDS}
    check_avro(encoder.encode(datum))
