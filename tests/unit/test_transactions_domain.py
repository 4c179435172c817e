"""Decoding and validation of raw transaction events: every failure has a named reason."""
from __future__ import annotations

import base64
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import orjson
import pytest

from domain.dead_letters import (REPLAY_HEADER, dead_letter, dead_letter_of, header_names, original_bytes,
                                   prior_failure, replay_headers)
from domain.enrichment import cache_entry, is_fresh
from domain.errors import PermanentError, Reason, Stage
from app.commands.samples.transactions import samples
from domain.transactions import FIELD_MAP, decode, to_transaction


def raw(**overrides: Any) -> dict[str, Any]:
    event = {"eventId": "e-1", "eventType": "PIX_REFUND", "accountId": "acc-000001", "amount": "10.50",
             "currency": "BRL", "occurredAt": "2026-11-22T10:00:00.250-03:00", "endToEndId": "E1",
             "counterpartyKey": "k@x.com", "channel": "MOBILE", "deviceId": "d", "traceId": "t"}
    event.update(overrides)
    return {k: v for k, v in event.items() if v is not ...}


def reason_of(value: bytes) -> Reason:
    with pytest.raises(PermanentError) as info:
        to_transaction(decode(value))
    return info.value.reason


def test_plain_json_keeps_only_mapped_fields() -> None:
    tx = to_transaction(decode(orjson.dumps(raw())))
    assert tx.category == "refund"
    assert tx.amount == Decimal("10.50")
    assert tx.occurred_at == datetime(2026, 11, 22, 13, 0, 0, 250000, tzinfo=timezone.utc)
    assert set(tx.asdict()) == set(FIELD_MAP)


def test_base64_wrapped_json_and_json_string_of_base64() -> None:
    body = orjson.dumps(raw())
    assert to_transaction(decode(base64.b64encode(body))).event_id == "e-1"
    assert to_transaction(decode(orjson.dumps(base64.b64encode(body).decode()))).event_id == "e-1"


def test_epoch_millis_timestamp() -> None:
    tx = to_transaction(decode(orjson.dumps(raw(occurredAt=1_700_000_000_000))))
    assert tx.occurred_at == datetime.fromtimestamp(1_700_000_000, tz=timezone.utc)


@pytest.mark.parametrize("value, reason", [
    (b"", Reason.UNDECODABLE),
    (b"\x00\x00\x00\x00\x01abc", Reason.UNDECODABLE),          # Avro-framed, no decoder yet
    (b"{not json", Reason.UNDECODABLE),
    (b"[1, 2]", Reason.NOT_AN_OBJECT),
    (orjson.dumps(raw(accountId=...)), Reason.MISSING_FIELD),
    (orjson.dumps(raw(accountId="")), Reason.MISSING_FIELD),
    (orjson.dumps(raw(channel=7)), Reason.INVALID_FIELD),
    (orjson.dumps(raw(currency="real")), Reason.INVALID_FIELD),
    (orjson.dumps(raw(eventType="PIX_CHARGEBACK")), Reason.UNKNOWN_CATEGORY),
    (orjson.dumps(raw(amount="-1")), Reason.INVALID_AMOUNT),
    (orjson.dumps(raw(amount="0")), Reason.INVALID_AMOUNT),
    (orjson.dumps(raw(amount="1.005")), Reason.INVALID_AMOUNT),
    (orjson.dumps(raw(amount="NaN")), Reason.INVALID_AMOUNT),
    (orjson.dumps(raw(amount=True)), Reason.INVALID_AMOUNT),
    (orjson.dumps(raw(amount="1e12")), Reason.INVALID_AMOUNT),
    (orjson.dumps(raw(occurredAt="2026-11-22T10:00:00")), Reason.INVALID_TIMESTAMP),
    (orjson.dumps(raw(occurredAt="soon")), Reason.INVALID_TIMESTAMP),
    (orjson.dumps(raw(occurredAt=[1])), Reason.INVALID_TIMESTAMP),
])
def test_each_bad_input_has_its_reason(value: bytes, reason: Reason) -> None:
    assert reason_of(value) == reason


def test_float_amount_is_exact() -> None:
    assert to_transaction(decode(orjson.dumps(raw(amount=19.9)))).amount == Decimal("19.90")


def test_samples_carry_the_reason_the_pipeline_gives() -> None:
    data = samples(2000, bad_ratio=0.3, seed=3)
    kinds = set()
    for s in data:
        if s.expected_reason is None:
            assert to_transaction(decode(s.value)).account_id.encode() == s.key
        else:
            assert reason_of(s.value) == s.expected_reason
            kinds.add(s.expected_reason)
    assert len(kinds) >= 7
    assert all(len(orjson.loads(s.value)) >= 35 for s in data[:50] if s.value.startswith(b"{"))


def test_dead_letter_keeps_the_original_bytes() -> None:
    err = PermanentError(Stage.DECODE, Reason.UNDECODABLE, "boom")
    letter = dead_letter(err, topic="t", partition=3, offset=42, timestamp=1.5, key=b"acc",
                         value=b"\xff\x00raw")
    decoded = type(letter).loads(letter.dumps())
    assert original_bytes(decoded.key_b64, decoded.value_b64) == (b"acc", b"\xff\x00raw")
    assert (decoded.reason, decoded.stage, decoded.source_offset) == ("undecodable", "decode", 42)


def test_cache_freshness_rules() -> None:
    known = cache_entry({"customer_id": "c1", "name": "Ana"}, now=100.0)
    unknown = cache_entry(None, now=100.0)
    assert not is_fresh(None, 100.0, ttl_s=300, negative_ttl_s=30)
    assert is_fresh(known, 399.0, ttl_s=300, negative_ttl_s=30)
    assert not is_fresh(known, 400.0, ttl_s=300, negative_ttl_s=30), "expired after the TTL"
    assert is_fresh(unknown, 129.0, ttl_s=300, negative_ttl_s=30)
    assert not is_fresh(unknown, 130.0, ttl_s=300, negative_ttl_s=30), "unknown kept only for the negative TTL"
    # A replayed event asks PostgreSQL again about an account the cache holds as unknown...
    assert not is_fresh(unknown, 101.0, ttl_s=300, negative_ttl_s=30, replayed=True)
    # ...but trusts a known account's entry like any other event.
    assert is_fresh(known, 101.0, ttl_s=300, negative_ttl_s=30, replayed=True)


class _Message:
    """The fields of faust's Message that a dead letter reads."""

    def __init__(self, headers: Any = None) -> None:
        self.topic, self.partition, self.offset, self.timestamp = "t.transactions.raw", 3, 42, 1_700_000_000.5
        self.key, self.value, self.headers = b"acc-1", b"\x00not json", headers


def test_a_first_failure_is_attempt_one() -> None:
    error = PermanentError(Stage.DECODE, Reason.UNDECODABLE, "bad bytes")
    letter = dead_letter_of(error, _Message())
    assert (letter.attempts, letter.source_offset, letter.source_timestamp_ms) == (1, 42, 1_700_000_000_500)
    assert original_bytes(letter.key_b64, letter.value_b64) == (b"acc-1", b"\x00not json")


def test_a_replay_that_fails_again_counts_on_from_the_dead_letter() -> None:
    first = datetime(2026, 11, 20, 8, 30, tzinfo=timezone.utc)
    headers = replay_headers("t.transactions.raw/3@7", attempts=2, first_failed_at=first)
    error = PermanentError(Stage.ENRICH, Reason.UNKNOWN_ACCOUNT, "unknown")
    for given in (headers, dict(headers)):           # aiokafka gives a list of pairs; be lenient
        letter = dead_letter_of(error, _Message(given))
        assert letter.attempts == 3
        assert datetime.fromisoformat(letter.first_failed_at) == first
    assert REPLAY_HEADER in header_names(headers)


@pytest.mark.parametrize("headers", [[("dead-letter-attempts", b"x")], [("dead-letter-first-failed-at", b"\xff")],
                                     [("other", b"1")], None, []])
def test_unreadable_replay_headers_count_as_a_first_failure(headers: Any) -> None:
    attempts, first = prior_failure(headers)
    assert (attempts, first) == (0, None)
    assert dead_letter_of(PermanentError(Stage.DECODE, Reason.UNDECODABLE, "x"), _Message(headers)).attempts == 1
